package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// member is an identity made with the ockam command: an authority, a
// listener or a device.
type member struct {
	name       string
	vault      string // vault directory (private keys)
	passphrase string // "" for an unencrypted vault
	identity   string // exported identity file (public)
	credential string // credential file, once issued
	id         string // the identifier `ockam identity create` printed
}

// ockamCLI runs the ockam command the way a person would, keeping every
// file under dir.
type ockamCLI struct {
	t   *testing.T
	bin string
	dir string
}

func newOckamCLI(t *testing.T, bin string) *ockamCLI {
	return &ockamCLI{t: t, bin: bin, dir: t.TempDir()}
}

// run runs ockam with args (and the vault passphrase, if any) and returns
// its standard output, trimmed. It fails t if the command fails.
func (o *ockamCLI) run(passphrase string, args ...string) string {
	o.t.Helper()
	cmd := exec.Command(o.bin, args...)
	cmd.Env = os.Environ()
	if passphrase != "" {
		cmd.Env = append(cmd.Env, "OCKAM_VAULT_PASSPHRASE="+passphrase)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		o.t.Fatalf("ockam %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

// identity creates an identity in a new vault and exports its identity
// file. A non-empty passphrase encrypts the vault.
func (o *ockamCLI) identity(name, passphrase string) *member {
	o.t.Helper()
	m := &member{
		name:       name,
		vault:      filepath.Join(o.dir, name),
		passphrase: passphrase,
		identity:   filepath.Join(o.dir, name+".identity"),
	}
	m.id = o.run(passphrase, "identity", "create", "--vault", m.vault)
	if m.id == "" || strings.ContainsAny(m.id, " \n") {
		o.t.Fatalf("ockam identity create printed %q, want one identifier", m.id)
	}
	o.run(passphrase, "identity", "export", "--vault", m.vault, "--out", m.identity)
	return m
}

// issue has authority issue a credential to subject with the attributes
// attrs ("k=v") for ttl, and records its path in subject.credential.
func (o *ockamCLI) issue(authority, subject *member, ttl string, attrs ...string) {
	o.t.Helper()
	subject.credential = filepath.Join(o.dir, subject.name+".cred")
	args := []string{"credential", "issue", "--vault", authority.vault, "--subject", subject.identity,
		"--ttl", ttl, "--out", subject.credential}
	for _, a := range attrs {
		args = append(args, "--attr", a)
	}
	o.run(authority.passphrase, args...)
}

// revoke has authority add subject to the revocation list in file.
func (o *ockamCLI) revoke(authority *member, file string, subject *member) {
	o.t.Helper()
	o.run(authority.passphrase, "revocation", "add", "--vault", authority.vault, "--list", file,
		"--subject", subject.id)
}
