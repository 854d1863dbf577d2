package apply

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/influxdata/telegraf/plugins/inputs/mem" // a plugin for the fragments to name
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

var now = time.Date(2026, time.January, 2, 0, 0, 0, 0, time.UTC)

// identity is a fixed identity and a credential for it from a fixed authority.
func identity(t *testing.T, name string) (vault.Signer, *secure.Identity, *secure.Credential) {
	t.Helper()
	signer := vault.NewSignerFromSeed(vectorfile.Key(name + " identity key"))
	purpose := vault.NewDHFromScalar(vectorfile.Key(name + " purpose key"))
	a, err := secure.Attest(signer, purpose.PublicKey(), now, secure.DefaultAttestationTTL)
	require.NoError(t, err)
	l, err := secure.NewLocalIdentity(signer, purpose, a)
	require.NoError(t, err)
	authority := vault.NewSignerFromSeed(vectorfile.Key("authority identity key"))
	c, err := secure.IssueCredential(authority, l.Identifier(), map[string]string{"role": "operator"}, now, time.Hour, nil)
	require.NoError(t, err)
	return signer, l.Public(), c
}

// instruction signs an instruction of kind with a raw payload.
func instruction(t *testing.T, kind control.Kind, payload []byte) *control.Instruction {
	t.Helper()
	signer, _, cred := identity(t, "operator")
	in, err := control.Sign(signer, cred, control.Template{Kind: kind, Target: control.Target{Device: secure.Identifier{1}},
		Sequence: 1, IssuedAt: now, Lifetime: time.Hour, Payload: payload}, nil)
	require.NoError(t, err)
	return in
}

// named is a config or command payload, failing t on error.
func named(t *testing.T, name, data string) []byte {
	t.Helper()
	p, err := control.MarshalNamed(name, []byte(data))
	require.NoError(t, err)
	return p
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

const goodFragment = "[agent]\n  interval = \"5s\"\n\n[[inputs.mem]]\n"

func TestConfigWritesFragment(t *testing.T) {
	dir := t.TempDir()
	c := &ConfigDir{Dir: dir}
	ctx := context.Background()
	require.NoError(t, c.Apply(ctx, instruction(t, control.KindConfig, named(t, "interval", goodFragment))))
	path := filepath.Join(dir, "ockam-interval.conf")
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, goodFragment, string(got))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, FragmentMode, fi.Mode().Perm())
	require.Equal(t, []string{"ockam-interval.conf"}, entries(t, dir), "a temporary file was left")

	// the same name replaces it
	next := "[agent]\n  interval = \"1s\"\n"
	require.NoError(t, c.Apply(ctx, instruction(t, control.KindConfig, named(t, "interval", next))))
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, next, string(got))

	// an empty fragment removes it
	require.NoError(t, c.Apply(ctx, instruction(t, control.KindConfig, named(t, "interval", ""))))
	require.Empty(t, entries(t, dir))
}

// TestConfigRefusesBadFragment: a fragment Telegraf's loader refuses is
// refused and not written; the fragment in place stays (C14).
func TestConfigRefusesBadFragment(t *testing.T) {
	dir := t.TempDir()
	c := &ConfigDir{Dir: dir}
	ctx := context.Background()
	require.NoError(t, c.Apply(ctx, instruction(t, control.KindConfig, named(t, "interval", goodFragment))))
	for name, fragment := range map[string]string{
		"not TOML":       "[agent\ninterval = 5s\n",
		"unknown plugin": "[[inputs.no_such_plugin]]\n",
		"unknown option": "[[inputs.mem]]\n  no_such_option = 1\n",
		"agent typo":     "[agent]\n  intervall = \"5s\"\n",
		"not UTF-8":      "[[inputs.mem]]\n# \xff\n",
	} {
		t.Run(name, func(t *testing.T) {
			err := c.Apply(ctx, instruction(t, control.KindConfig, named(t, "interval", fragment)))
			require.Equal(t, control.RefusedInvalidPayload, control.CodeOf(err), "%v", err)
			got, err := os.ReadFile(filepath.Join(dir, "ockam-interval.conf"))
			require.NoError(t, err)
			require.Equal(t, goodFragment, string(got))
			require.Equal(t, []string{"ockam-interval.conf"}, entries(t, dir))
		})
	}
}

// TestConfigNamesStayInDir: a name that would reach outside the directory,
// or hide as a dot file, is refused; nothing is written anywhere (C15).
func TestConfigNamesStayInDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "telegraf.d")
	require.NoError(t, os.Mkdir(dir, 0o700))
	c := &ConfigDir{Dir: dir}
	for _, name := range []string{"../evil", "..", ".", "a/b", "/etc/passwd", "-x", ".hidden", "", "x\x00y",
		"a\\b", string(make([]byte, 65))} {
		payload := append([]byte{byte(len(name))}, name...)
		payload = append(payload, goodFragment...)
		err := c.Apply(context.Background(), instruction(t, control.KindConfig, payload))
		require.Equal(t, control.RefusedInvalidPayload, control.CodeOf(err), "%q: %v", name, err)
	}
	require.Empty(t, entries(t, dir))
	require.Equal(t, []string{"telegraf.d"}, entries(t, parent))
	require.NoError(t, control.CheckName("telegraf-1.39.4.tar.gz"))
}

// TestCommands: the argument reaches the handler as data on stdin, never a
// shell; an unknown action is refused and nothing runs (C17).
func TestCommands(t *testing.T) {
	dir := t.TempDir()
	out, envOut := filepath.Join(dir, "stdin"), filepath.Join(dir, "env")
	c := &Commands{Handlers: map[string]Handler{
		"set-interval": {Program: "/bin/sh", Args: []string{"-c", `cat > "$0"; env | sort > "$1"`, out, envOut}},
		"fail":         {Program: "/bin/sh", Args: []string{"-c", "echo no such sensor >&2; exit 3"}},
	}}
	ctx := context.Background()
	in := instruction(t, control.KindCommand, named(t, "set-interval", "10s; touch pwned"))
	require.NoError(t, c.Apply(ctx, in))
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "10s; touch pwned", string(got), "the argument is data on stdin")
	require.NoFileExists(t, "pwned")
	env, err := os.ReadFile(envOut)
	require.NoError(t, err)
	require.Contains(t, string(env), "OCKAM_INSTRUCTION_ID="+in.ID.String()+"\n")
	require.Contains(t, string(env), "OCKAM_COMMAND=set-interval\n")
	require.Contains(t, string(env), "OCKAM_SEQUENCE=1\n")
	require.Contains(t, string(env), "OCKAM_OPERATOR="+in.Operator().String()+"\n")

	// an unknown name is refused; nothing runs
	err = c.Apply(ctx, instruction(t, control.KindCommand, named(t, "reboot", "")))
	require.Equal(t, control.RefusedInvalidPayload, control.CodeOf(err), "%v", err)
	// a handler that fails is a failure, not a refusal, with its output
	err = c.Apply(ctx, instruction(t, control.KindCommand, named(t, "fail", "")))
	require.Error(t, err)
	require.Zero(t, control.CodeOf(err))
	require.ErrorContains(t, err, "no such sensor")
}

// TestApplyUnknownKind: a kind without an applier is refused.
func TestApplyUnknownKind(t *testing.T) {
	appliers := map[control.Kind]Applier{control.KindConfig: &ConfigDir{Dir: t.TempDir()}}
	for _, k := range []control.Kind{control.KindCommand, control.KindArtifact, 9} {
		err := Apply(context.Background(), appliers, instruction(t, k, named(t, "x", "y")))
		require.Equal(t, control.RefusedUnknownKind, control.CodeOf(err), "%v: %v", k, err)
	}
}

// artifact is a release-signed manifest of content as an instruction.
func artifact(t *testing.T, release vault.Signer, name string, content []byte) *control.Instruction {
	t.Helper()
	m, err := control.SignManifest(release, name, uint64(len(content)), sha256.Sum256(content))
	require.NoError(t, err)
	return instruction(t, control.KindArtifact, m.Marshal())
}

func TestArtifactStaged(t *testing.T) {
	dir := t.TempDir()
	applied := filepath.Join(t.TempDir(), "applied")
	release, releaseID, _ := identity(t, "release")
	a := &Artifacts{Dir: dir, Releases: []*secure.Identity{releaseID},
		Apply: &Handler{Program: "/bin/sh", Args: []string{"-c", `cat "$1" > "$0"`, applied}}}
	content := []byte("new firmware, in three chunks")
	s, err := a.Begin(artifact(t, release, "firmware-2.bin", content))
	require.NoError(t, err)
	require.NoError(t, s.Write(0, content[:10]))
	require.NoError(t, s.Write(10, content[10:20]))
	require.NoError(t, s.Write(20, content[20:]))
	require.NoError(t, s.Commit(context.Background()))
	got, err := os.ReadFile(filepath.Join(dir, "firmware-2.bin"))
	require.NoError(t, err)
	require.Equal(t, content, got)
	got, err = os.ReadFile(applied)
	require.NoError(t, err)
	require.Equal(t, content, got, "the apply command got the staged file")
	require.Equal(t, []string{"firmware-2.bin"}, entries(t, dir))
}

// TestArtifactRefusals: a digest mismatch, a manifest of another release
// identity or altered, and chunks out of order or past the size are
// refused, and nothing is staged (C16).
func TestArtifactRefusals(t *testing.T) {
	release, releaseID, _ := identity(t, "release")
	stranger, _, _ := identity(t, "stranger")
	content := []byte("new firmware")
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(a *Artifacts) error
		code control.RefusalCode
	}{
		{"digest mismatch", func(a *Artifacts) error {
			s, err := a.Begin(artifact(t, release, "fw", content))
			require.NoError(t, err)
			require.NoError(t, s.Write(0, []byte("old firmware")))
			return s.Commit(ctx)
		}, control.RefusedDigestMismatch},
		{"one byte changed", func(a *Artifacts) error {
			s, err := a.Begin(artifact(t, release, "fw", content))
			require.NoError(t, err)
			bad := append([]byte(nil), content...)
			bad[0] ^= 1
			require.NoError(t, s.Write(0, bad))
			return s.Commit(ctx)
		}, control.RefusedDigestMismatch},
		{"signed by another identity", func(a *Artifacts) error {
			_, err := a.Begin(artifact(t, stranger, "fw", content))
			return err
		}, control.RefusedUnknownIssuer},
		{"manifest altered", func(a *Artifacts) error {
			m, err := control.SignManifest(release, "fw", uint64(len(content)), sha256.Sum256(content))
			require.NoError(t, err)
			b := m.Marshal()
			b[1+control.MaxNameSize+8] ^= 1 // the digest
			_, err = a.Begin(instruction(t, control.KindArtifact, b))
			return err
		}, control.RefusedBadSignature},
		{"manifest malformed", func(a *Artifacts) error {
			_, err := a.Begin(instruction(t, control.KindArtifact, []byte("fw")))
			return err
		}, control.RefusedInvalidPayload},
		{"chunk out of order", func(a *Artifacts) error {
			s, err := a.Begin(artifact(t, release, "fw", content))
			require.NoError(t, err)
			require.NoError(t, s.Write(0, content[:4]))
			err = s.Write(8, content[8:])
			require.Equal(t, err, s.Commit(ctx), "the first error stays")
			return err
		}, control.RefusedInvalidPayload},
		{"past the size", func(a *Artifacts) error {
			s, err := a.Begin(artifact(t, release, "fw", content))
			require.NoError(t, err)
			return s.Write(0, append(append([]byte(nil), content...), 'x'))
		}, control.RefusedInvalidPayload},
		{"short", func(a *Artifacts) error {
			s, err := a.Begin(artifact(t, release, "fw", content))
			require.NoError(t, err)
			require.NoError(t, s.Write(0, content[:4]))
			return s.Commit(ctx)
		}, control.RefusedInvalidPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			applied := filepath.Join(t.TempDir(), "applied")
			a := &Artifacts{Dir: dir, Releases: []*secure.Identity{releaseID},
				Apply: &Handler{Program: "/bin/sh", Args: []string{"-c", `touch "$0"`, applied}}}
			err := tt.run(a)
			require.Equal(t, tt.code, control.CodeOf(err), "%v", err)
			require.Empty(t, entries(t, dir), "something was staged")
			require.NoFileExists(t, applied)
		})
	}
}
