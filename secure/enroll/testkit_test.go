package enroll

import (
	"bytes"
	"errors"
	"flag"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"

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

// fixtures are the deterministic identities of the vectors, as in secure.
type fixtures struct {
	authority, device, stranger *secure.LocalIdentity
}

func newFixtures(t testing.TB) *fixtures {
	t.Helper()
	id := func(name string) *secure.LocalIdentity {
		return seededIdentity(t, vectorfile.Key(name+" identity key"), vectorfile.Key(name+" purpose key"), vectorCreated)
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

// flip returns a copy of b with byte i XORed with mask.
func flip(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	c[i] ^= mask
	return c
}

// requireSeeds fails a fuzz target whose seed corpus is missing or empty.
func requireSeeds(f *testing.F) { fuzzseed.Require(f, seedHint) }

// seedHint is the command that writes the seed corpora.
const seedHint = "go test ./secure/enroll -run TestEnrollmentFuzzSeeds -update"

func errorIsAny(err error, targets ...error) bool {
	return slices.ContainsFunc(targets, func(target error) bool { return errors.Is(err, target) })
}

// expect returns the error an "expect:" line names (nil for "ok").
func (v *vectorFile) expect(t *testing.T) error {
	t.Helper()
	s := v.Get(t, "expect")
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

// vectorFile is a vector file (internal/vectorfile) with this package's
// own writers and readers.
type vectorFile struct{ vectorfile.File }

func parseVectorFile(t *testing.T, text string) *vectorFile {
	t.Helper()
	return &vectorFile{vectorfile.Parse(t, text)}
}

// identityFromVector rebuilds a LocalIdentity from the seed and scalar a
// vector file gives under prefix, and checks the file's public values.
func identityFromVector(t *testing.T, v *vectorFile, prefix string, created time.Time) *secure.LocalIdentity {
	t.Helper()
	l := seededIdentity(t, v.Key32(t, prefix+"-identity-seed"), v.Key32(t, prefix+"-purpose-scalar"), created)
	require.Equal(t, v.Get(t, prefix+"-identifier"), l.Identifier().String())
	return l
}

func (v *vectorFile) identity(prefix string, l *secure.LocalIdentity, seed, scalar string) {
	v.Set(prefix+"-identity-seed", vectorfile.Key(seed))
	v.Set(prefix+"-purpose-scalar", vectorfile.Key(scalar))
	v.Set(prefix+"-identifier", l.Identifier())
}

func (v *vectorFile) authority(f *fixtures) {
	v.Set("authority-identifier", f.authority.Identifier())
	v.Set("authority-attestation", f.authority.Public().Attestation().Marshal())
}
