package control

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The fixed times of the tests and vectors.
var (
	vectorCreated = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)
	vectorNow     = time.Date(2026, time.January, 2, 0, 0, 0, 0, time.UTC)
)

const vectorCredentialTTL = 30 * 24 * time.Hour

// party is an identity with its credential.
type party struct {
	id   *secure.LocalIdentity
	cred *secure.Credential
}

// fixtures are the parties of the tests and vectors, from fixed keys: an
// authority, an operator, a gateway, a device, and a stranger authority
// with its own operator.
type fixtures struct {
	authority, stranger                 *secure.LocalIdentity
	operator, gateway, device, outsider party
	technician                          party // an operator attribute, but role=technician
}

// seededIdentity is the identity of a fixed identity key and purpose key.
func seededIdentity(t testing.TB, name string) *secure.LocalIdentity {
	t.Helper()
	signer := vault.NewSignerFromSeed(vectorfile.Key(name + " identity key"))
	purpose := vault.NewDHFromScalar(vectorfile.Key(name + " purpose key"))
	a, err := secure.Attest(signer, purpose.PublicKey(), vectorCreated, secure.DefaultAttestationTTL)
	require.NoError(t, err)
	l, err := secure.NewLocalIdentity(signer, purpose, a)
	require.NoError(t, err)
	return l
}

func newFixtures(t testing.TB) *fixtures {
	t.Helper()
	f := &fixtures{authority: seededIdentity(t, "authority"), stranger: seededIdentity(t, "stranger")}
	ids := vectorfile.NewHashStream("telegraf-ockam vectors: control credential ids")
	member := func(authority *secure.LocalIdentity, name string, attrs map[string]string) party {
		l := seededIdentity(t, name)
		c, err := secure.IssueCredential(authority.Signer(), l.Identifier(), attrs, vectorCreated, vectorCredentialTTL, ids)
		require.NoError(t, err)
		return party{id: l, cred: c}
	}
	f.operator = member(f.authority, "operator", map[string]string{"role": "operator"})
	f.gateway = member(f.authority, "gateway", map[string]string{"role": "gateway"})
	f.device = member(f.authority, "device", map[string]string{"role": "sensor", "site": "plant-7"})
	f.technician = member(f.authority, "technician", map[string]string{"role": "technician"})
	f.outsider = member(f.stranger, "outsider", map[string]string{"role": "operator"})
	return f
}

// policy is the device policy of the tests: operators send config and
// command, releases (role=release-manager) send artifacts.
func testPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := NewPolicy(
		Rule{Attributes: map[string]string{"role": "operator"}, Kinds: []Kind{KindConfig, KindCommand}},
		Rule{Attributes: map[string]string{"role": "release-manager"}, Kinds: []Kind{KindArtifact}},
	)
	require.NoError(t, err)
	return p
}

// deviceVerifier is the device's Verifier, its store in a new directory.
func (f *fixtures) deviceVerifier(t testing.TB, limit RateLimit) (*Verifier, *secure.Verifier, string) {
	t.Helper()
	creds, err := secure.NewVerifier(f.authority.Public())
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "control.seq")
	store, err := OpenSequenceStore(path)
	require.NoError(t, err)
	v, err := NewVerifier(VerifierConfig{
		Credentials: creds,
		Policy:      testPolicy(t),
		Device:      Device{Identifier: f.device.id.Identifier(), Attributes: f.device.cred.Attributes},
		Sequences:   store,
		Limit:       limit,
	})
	require.NoError(t, err)
	return v, creds, path
}

// sign signs an instruction by p, failing t on error.
func sign(t testing.TB, p party, tpl Template) *Instruction {
	t.Helper()
	in, err := Sign(p.id.Signer(), p.cred, tpl, vectorfile.NewHashStream("telegraf-ockam vectors: instruction ids"))
	require.NoError(t, err)
	return in
}

// configTemplate is a config instruction for target, sequence seq, issued
// at vectorNow for an hour.
func configTemplate(target Target, seq uint64) Template {
	return Template{Kind: KindConfig, Target: target, Sequence: seq, IssuedAt: vectorNow, Lifetime: time.Hour,
		Payload: []byte("\x08interval[agent]\n  interval = \"5s\"\n")}
}
