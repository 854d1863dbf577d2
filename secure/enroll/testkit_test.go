package enroll

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The test kit of the enrollment tests: the fixed times, keys and vector
// file form of secure/vectors_test.go and secure/testkit_test.go, which
// this package shares with the other vectors (testdata/vectors/) but cannot
// import. After a deliberate change to an encoding:
//
//	go test ./secure/enroll -run 'TestEnrollmentVectors|TestEnrollmentFuzzSeeds' -update
var update = flag.Bool("update", false, "rewrite the enrollment vectors and fuzz seed corpora")

const vectorDir = "../../testdata/vectors"

// t0 is the fixed "now" of the tests; every other time is relative to it.
var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// The times every vector is made and checked at (as in secure).
var (
	vectorCreated = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)
	vectorNow     = time.Date(2026, time.January, 2, 0, 0, 0, 0, time.UTC)
)

const vectorCredentialTTL = 30 * 24 * time.Hour

// vectorKey returns the 32 bytes of a named fixed key: the first block of
// SHA-256("telegraf-ockam vectors: " + name || u64 0).
func vectorKey(name string) [32]byte {
	var k [32]byte
	_, _ = newHashStream("telegraf-ockam vectors: " + name).Read(k[:])
	return k
}

// fixtures are the deterministic identities of the vectors, as in secure.
type fixtures struct {
	authority, device, stranger *secure.LocalIdentity
}

func newFixtures(t testing.TB) *fixtures {
	t.Helper()
	id := func(name string) *secure.LocalIdentity {
		return seededIdentity(t, vectorKey(name+" identity key"), vectorKey(name+" purpose key"), vectorCreated)
	}
	return &fixtures{authority: id("authority"), device: id("device"), stranger: id("stranger")}
}

// newIdentity creates an identity with random keys in a memory vault at t0.
func newIdentity(t testing.TB) *secure.LocalIdentity {
	t.Helper()
	l, err := secure.CreateIdentity(vault.NewMemory(), t0)
	require.NoError(t, err)
	return l
}

// seededIdentity builds an identity from fixed keys, for vectors, with its
// purpose key attested at created for DefaultAttestationTTL.
func seededIdentity(t testing.TB, signerSeed, purposeScalar [32]byte, created time.Time) *secure.LocalIdentity {
	t.Helper()
	signer := vault.NewSignerFromSeed(signerSeed)
	purpose := vault.NewDHFromScalar(purposeScalar)
	a, err := secure.Attest(signer, purpose.PublicKey(), created, secure.DefaultAttestationTTL)
	require.NoError(t, err)
	l, err := secure.NewLocalIdentity(signer, purpose, a)
	require.NoError(t, err)
	return l
}

// issue signs a credential for subject, issued at t0 for a day.
func issue(t testing.TB, authority *secure.LocalIdentity, subject secure.Identifier, attrs map[string]string) *secure.Credential {
	t.Helper()
	c, err := secure.IssueCredential(authority.Signer(), subject, attrs, t0, 24*time.Hour, nil)
	require.NoError(t, err)
	return c
}

func newVerifier(t testing.TB, authorities ...*secure.LocalIdentity) *secure.Verifier {
	t.Helper()
	var pub []*secure.Identity
	for _, a := range authorities {
		pub = append(pub, a.Public())
	}
	v, err := secure.NewVerifier(pub...)
	require.NoError(t, err)
	return v
}

// hashStream is a deterministic io.Reader: SHA-256(label || u64 0),
// SHA-256(label || u64 1), ...
type hashStream struct {
	label string
	n     uint64
	buf   []byte
}

func newHashStream(label string) *hashStream { return &hashStream{label: label} }

func (h *hashStream) Read(p []byte) (int, error) {
	for i := range p {
		if len(h.buf) == 0 {
			block := sha256.Sum256(binary.BigEndian.AppendUint64([]byte(h.label), h.n))
			h.n++
			h.buf = block[:]
		}
		p[i], h.buf = h.buf[0], h.buf[1:]
	}
	return len(p), nil
}

// flip returns a copy of b with byte i XORed with mask.
func flip(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	c[i] ^= mask
	return c
}

// requireSeeds fails a fuzz target whose seed corpus is missing or empty,
// so that it cannot silently fuzz from nothing.
func requireSeeds(f *testing.F) {
	entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", f.Name()))
	if err != nil || len(entries) == 0 {
		f.Fatalf("no seed corpus in testdata/fuzz/%s (go test ./secure/enroll -run TestEnrollmentFuzzSeeds -update): %v", f.Name(), err)
	}
}

func errorIsAny(err error, targets ...error) bool {
	return slices.ContainsFunc(targets, func(target error) bool { return errors.Is(err, target) })
}

// A vector file: "#" comment lines, then "key: value" lines; a key may
// repeat (attribute:). The form of secure/vectors_test.go.
type vectorFile struct {
	lines []string
	vals  map[string][]string
}

func (v *vectorFile) comment(format string, args ...any) {
	v.lines = append(v.lines, "# "+fmt.Sprintf(format, args...))
}

func (v *vectorFile) set(key string, value any) {
	var s string
	switch x := value.(type) {
	case []byte:
		s = hex.EncodeToString(x)
	case [32]byte:
		s = hex.EncodeToString(x[:])
	case time.Time:
		s = x.UTC().Format(time.RFC3339)
	default:
		s = fmt.Sprint(x)
	}
	v.lines = append(v.lines, key+": "+s)
}

func (v *vectorFile) attributes(attrs map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		v.set("attribute", k+"="+attrs[k])
	}
}

func (v *vectorFile) String() string { return strings.Join(v.lines, "\n") + "\n" }

func parseVectorFile(t *testing.T, text string) *vectorFile {
	t.Helper()
	v := &vectorFile{vals: map[string][]string{}}
	for n, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, ": ")
		require.True(t, ok, "line %d: %q", n+1, line)
		v.vals[key] = append(v.vals[key], value)
	}
	return v
}

func (v *vectorFile) get(t *testing.T, key string) string {
	t.Helper()
	require.Len(t, v.vals[key], 1, "key %q", key)
	return v.vals[key][0]
}

func (v *vectorFile) bytes(t *testing.T, key string) []byte {
	t.Helper()
	b, err := hex.DecodeString(v.get(t, key))
	require.NoError(t, err, "key %q", key)
	return b
}

func (v *vectorFile) key32(t *testing.T, key string) [32]byte {
	t.Helper()
	b := v.bytes(t, key)
	require.Len(t, b, 32, "key %q", key)
	return [32]byte(b)
}

func (v *vectorFile) time(t *testing.T, key string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, v.get(t, key))
	require.NoError(t, err, "key %q", key)
	return tm
}

func (v *vectorFile) attrs() map[string]string {
	m := map[string]string{}
	for _, a := range v.vals["attribute"] {
		k, val, _ := strings.Cut(a, "=")
		m[k] = val
	}
	return m
}

// expect returns the error an "expect:" line names (nil for "ok").
func (v *vectorFile) expect(t *testing.T) error {
	t.Helper()
	s := v.get(t, "expect")
	name, _, _ := strings.Cut(s, " ")
	errs := map[string]error{
		"ok": nil, "ErrUnknownIssuer": secure.ErrUnknownIssuer, "ErrBadSignature": secure.ErrBadSignature,
		"ErrNotYetValid": secure.ErrNotYetValid, "ErrExpired": secure.ErrExpired, "ErrRevoked": secure.ErrRevoked,
		"ErrWrongSubject": secure.ErrWrongSubject, "ErrDecrypt": secure.ErrDecrypt,
	}
	err, ok := errs[name]
	require.True(t, ok, "unknown expect: %q", s)
	return err
}

func requireOutcome(t *testing.T, want, err error) {
	t.Helper()
	if want == nil {
		require.NoError(t, err)
		return
	}
	require.ErrorIs(t, err, want)
}

// identityFromVector rebuilds a LocalIdentity from the seed and scalar a
// vector file gives under prefix, and checks the file's public values.
func identityFromVector(t *testing.T, v *vectorFile, prefix string, created time.Time) *secure.LocalIdentity {
	t.Helper()
	l := seededIdentity(t, v.key32(t, prefix+"-identity-seed"), v.key32(t, prefix+"-purpose-scalar"), created)
	require.Equal(t, v.get(t, prefix+"-identifier"), l.Identifier().String())
	return l
}

func (v *vectorFile) identity(prefix string, l *secure.LocalIdentity, seed, scalar string) {
	v.set(prefix+"-identity-seed", vectorKey(seed))
	v.set(prefix+"-purpose-scalar", vectorKey(scalar))
	v.set(prefix+"-identifier", l.Identifier())
}

func (v *vectorFile) authority(f *fixtures) {
	v.set("authority-identifier", f.authority.Identifier())
	v.set("authority-attestation", f.authority.Public().Attestation().Marshal())
}
