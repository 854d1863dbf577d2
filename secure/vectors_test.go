package secure

import (
	"bytes"
	"encoding/hex"
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
)

// The test vectors of docs/PROTOCOL.md live in testdata/vectors/ at the
// module root, one scenario per file. TestVectors regenerates every file
// from fixed keys, fixed times and SHA-256 counter streams (hashStream)
// and compares byte for byte; then it reads the committed bytes back,
// independently of the generator, and checks each file's fields and its
// "expect:" outcome. After a deliberate change to an encoding:
//
//	go test ./secure -run 'TestVectors|TestFuzzSeeds' -update
var update = flag.Bool("update", false, "rewrite testdata/vectors/ and the fuzz seed corpora")

const vectorDir = "../testdata/vectors"

// vectorTimes: every vector is made and checked at these times.
var (
	vectorCreated = time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC)
	vectorNow     = time.Date(2026, time.January, 2, 0, 0, 0, 0, time.UTC)
	vectorRevoked = time.Date(2026, time.January, 15, 0, 0, 0, 0, time.UTC)
)

const vectorCredentialTTL = 30 * 24 * time.Hour

// vectorKey returns the 32 bytes of a named fixed key: the first block of
// SHA-256("telegraf-ockam vectors: " + name || u64 0).
func vectorKey(name string) [32]byte {
	var k [32]byte
	_, _ = newHashStream("telegraf-ockam vectors: " + name).Read(k[:])
	return k
}

// fixtures are the deterministic identities, credentials and list that the
// vectors and the fuzz seeds are made of.
type fixtures struct {
	authority, device, listener, stranger     *LocalIdentity
	deviceCred, listenerCred, strangerCred    *Credential
	list                                      *RevocationList
	deviceEphemeral, listenerEphemeral        [32]byte
	deviceAttrs, listenerAttrs, strangerAttrs map[string]string
}

func newFixtures(t testing.TB) *fixtures {
	t.Helper()
	id := func(name string) *LocalIdentity {
		return seededIdentity(t, vectorKey(name+" identity key"), vectorKey(name+" purpose key"), vectorCreated)
	}
	f := &fixtures{
		authority: id("authority"), device: id("device"), listener: id("listener"), stranger: id("stranger"),
		deviceEphemeral: vectorKey("device ephemeral"), listenerEphemeral: vectorKey("listener ephemeral"),
		deviceAttrs:   map[string]string{"role": "sensor", "site": "plant-7"},
		listenerAttrs: map[string]string{"role": "listener", "site": "plant-7"},
		strangerAttrs: map[string]string{"role": "listener"},
	}
	ids := newHashStream("telegraf-ockam vectors: credential ids")
	cred := func(authority, subject *LocalIdentity, attrs map[string]string) *Credential {
		c, err := IssueCredential(authority.Signer(), subject.Identifier(), attrs, vectorCreated, vectorCredentialTTL, ids)
		require.NoError(t, err)
		return c
	}
	f.deviceCred = cred(f.authority, f.device, f.deviceAttrs)
	f.listenerCred = cred(f.authority, f.listener, f.listenerAttrs)
	f.strangerCred = cred(f.stranger, f.listener, f.strangerAttrs)
	var err error
	f.list, err = NewRevocationList(f.authority.Signer(), 7, vectorRevoked, vectorRevoked.Add(DefaultRevocationListValidity),
		[]Identifier{f.stranger.Identifier()}, []CredentialID{f.deviceCred.ID})
	require.NoError(t, err)
	return f
}

// handshakeRun is the outcome of a seeded handshake.
type handshakeRun struct {
	msg1, msg2, msg3 []byte
	dev, lis         *Session
	err              error
}

// handshake runs the seeded handshake between the device and the listener
// presenting listenerCred; it stops at the first error.
func (f *fixtures) handshake(t testing.TB, listenerCred *Credential) handshakeRun {
	t.Helper()
	v := newVerifier(t, f.authority)
	i, r := mustPair(t,
		HandshakeConfig{Identity: f.device, Credential: f.deviceCred, Verifier: v, Now: fixedNow(vectorNow), Random: bytes.NewReader(f.deviceEphemeral[:])},
		HandshakeConfig{Identity: f.listener, Credential: listenerCred, Verifier: v, Now: fixedNow(vectorNow), Random: bytes.NewReader(f.listenerEphemeral[:])})
	var h handshakeRun
	if h.msg1, h.err = i.Start(); h.err != nil {
		return h
	}
	if h.msg2, h.err = r.Respond(h.msg1); h.err != nil {
		return h
	}
	if h.msg3, h.dev, h.err = i.Finish(h.msg2); h.err != nil {
		return h
	}
	h.lis, h.err = r.Finish(h.msg3)
	return h
}

// vectorDataPlaintext is the first message of the channel: batch 1.
var vectorDataPlaintext = appendFragment(nil, 1, false, []byte("cpu,host=device-1 usage_idle=97.5 1767225600000000000\n"))

// A vector file: "#" comment lines, then "key: value" lines; a key may
// repeat (attribute:).
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
		"ok": nil, "ErrUnknownIssuer": ErrUnknownIssuer, "ErrBadSignature": ErrBadSignature,
		"ErrNotYetValid": ErrNotYetValid, "ErrExpired": ErrExpired, "ErrRevoked": ErrRevoked,
		"ErrWrongSubject": ErrWrongSubject,
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
func identityFromVector(t *testing.T, v *vectorFile, prefix string, created time.Time) *LocalIdentity {
	t.Helper()
	l := seededIdentity(t, v.key32(t, prefix+"-identity-seed"), v.key32(t, prefix+"-purpose-scalar"), created)
	require.Equal(t, v.get(t, prefix+"-identifier"), l.Identifier().String())
	return l
}

// verifierFromVector trusts the authority whose attestation (its authority
// file's content) the vector gives.
func verifierFromVector(t *testing.T, v *vectorFile) *Verifier {
	t.Helper()
	a, err := ParseAttestation(v.bytes(t, "authority-attestation"))
	require.NoError(t, err)
	require.Equal(t, v.get(t, "authority-identifier"), a.Identifier().String())
	verifier, err := NewVerifier(&Identity{attestation: a})
	require.NoError(t, err)
	return verifier
}

func (v *vectorFile) identity(prefix string, l *LocalIdentity, seed, scalar string) {
	v.set(prefix+"-identity-seed", vectorKey(seed))
	v.set(prefix+"-purpose-scalar", vectorKey(scalar))
	v.set(prefix+"-identifier", l.Identifier())
}

func (v *vectorFile) authority(f *fixtures) {
	v.set("authority-identifier", f.authority.Identifier())
	v.set("authority-attestation", f.authority.Public().Attestation().Marshal())
}

const generatedBy = "Generated by secure/vectors_test.go (go test ./secure -run TestVectors -update); do not edit."

type vectorScenario struct {
	file     string
	generate func(t *testing.T, f *fixtures) *vectorFile
	check    func(t *testing.T, v *vectorFile)
}

var vectorScenarios = []vectorScenario{
	{"attestation.txt", genAttestation, checkAttestation},
	{"credential.txt", genCredential, checkCredential},
	{"credential-expired.txt", genCredentialExpired, checkCredential},
	{"revocation.txt", genRevocation, checkRevocation},
	{"handshake.txt", genHandshake, checkHandshake},
	{"handshake-unknown-authority.txt", genHandshakeUnknownAuthority, checkHandshakeUnknownAuthority},
}

func TestVectors(t *testing.T) {
	f := newFixtures(t)
	if *update {
		require.NoError(t, os.MkdirAll(vectorDir, 0o755))
	}
	for _, sc := range vectorScenarios {
		t.Run(sc.file, func(t *testing.T) {
			path := filepath.Join(vectorDir, sc.file)
			generated := sc.generate(t, f).String()
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(generated), 0o644))
			}
			committed, err := os.ReadFile(path)
			require.NoError(t, err, "run: go test ./secure -run TestVectors -update")
			require.Equal(t, generated, string(committed), "the code no longer produces %s", path)
			sc.check(t, parseVectorFile(t, string(committed)))
		})
	}
}

func genAttestation(t *testing.T, f *fixtures) *vectorFile {
	a := f.device.Public().Attestation()
	v := &vectorFile{}
	v.comment("Purpose-key attestation (docs/PROTOCOL.md, section 3): the device's Ed25519 identity key")
	v.comment("attests its X25519 purpose key for the default 90 days.")
	v.comment(generatedBy)
	v.identity("device", f.device, "device identity key", "device purpose key")
	v.set("device-identity-key", []byte(a.IdentityKey))
	v.set("device-purpose-key", a.PurposeKey)
	v.set("created", a.Created)
	v.set("expires", a.Expires)
	v.set("attestation", a.Marshal())
	v.set("check-time", vectorNow)
	v.set("expect", "ok")
	return v
}

func checkAttestation(t *testing.T, v *vectorFile) {
	l := identityFromVector(t, v, "device", v.time(t, "created"))
	a, err := ParseAttestation(v.bytes(t, "attestation"))
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "device-identity-key"), []byte(a.IdentityKey))
	require.Equal(t, v.key32(t, "device-purpose-key"), a.PurposeKey)
	require.Equal(t, l.purpose.PublicKey(), a.PurposeKey)
	require.Equal(t, v.time(t, "created"), a.Created)
	require.Equal(t, v.time(t, "expires"), a.Expires)
	require.Equal(t, l.Identifier(), a.Identifier())
	requireOutcome(t, v.expect(t), a.Verify(v.time(t, "check-time")))
}

// credentialVector writes the device credential of the fixtures, checked
// at checkTime with the expected outcome.
func credentialVector(f *fixtures, v *vectorFile, checkTime time.Time, expect string) *vectorFile {
	c := f.deviceCred
	v.comment("The credential is %d bytes (docs/PROTOCOL.md, section 4: 187 for role=sensor, site=plant-7).", len(c.raw))
	v.comment("Its id is the first 16 bytes of SHA-256(\"telegraf-ockam vectors: credential ids\" || u64 0).")
	v.comment(generatedBy)
	v.authority(f)
	v.set("authority-identity-seed", vectorKey("authority identity key"))
	v.set("subject", c.Subject)
	v.set("id", c.ID[:])
	v.set("issued", c.IssuedAt)
	v.set("expires", c.ExpiresAt)
	v.attributes(c.Attributes)
	v.set("credential", c.Marshal())
	v.set("check-time", checkTime)
	v.set("expect", expect)
	return v
}

func genCredential(t *testing.T, f *fixtures) *vectorFile {
	t.Logf("credential with role=sensor, site=plant-7: %d bytes", len(f.deviceCred.raw))
	v := &vectorFile{}
	v.comment("Credential (docs/PROTOCOL.md, section 4) issued by the authority to the device for 30 days.")
	return credentialVector(f, v, vectorNow, "ok")
}

func genCredentialExpired(t *testing.T, f *fixtures) *vectorFile {
	v := &vectorFile{}
	v.comment("The credential of credential.txt checked at its expiry time: expiry is strict.")
	return credentialVector(f, v, f.deviceCred.ExpiresAt, "ErrExpired")
}

func checkCredential(t *testing.T, v *vectorFile) {
	c, err := ParseCredential(v.bytes(t, "credential"))
	require.NoError(t, err)
	require.Len(t, c.raw, 187)
	require.Equal(t, v.get(t, "authority-identifier"), c.Issuer.String())
	require.Equal(t, v.get(t, "subject"), c.Subject.String())
	require.Equal(t, v.bytes(t, "id"), c.ID[:])
	require.Equal(t, v.time(t, "issued"), c.IssuedAt)
	require.Equal(t, v.time(t, "expires"), c.ExpiresAt)
	require.Equal(t, v.attrs(), c.Attributes)
	require.Equal(t, map[string]string{"role": "sensor", "site": "plant-7"}, c.Attributes)
	// The authority's attestation is signed by the key of the seed given.
	authority := seededIdentity(t, v.key32(t, "authority-identity-seed"), [32]byte{}, vectorCreated)
	require.Equal(t, v.get(t, "authority-identifier"), authority.Identifier().String())
	requireOutcome(t, v.expect(t), verifierFromVector(t, v).VerifyCredential(c, c.Subject, v.time(t, "check-time")))
}

func genRevocation(t *testing.T, f *fixtures) *vectorFile {
	v := &vectorFile{}
	v.comment("Revocation list v2 (docs/PROTOCOL.md, section 5), sequence 7, due for an update 7 days after it was issued: it revokes the stranger's identity by subject")
	v.comment("and the device's credential (credential.txt) by id.")
	v.comment(generatedBy)
	v.authority(f)
	v.set("sequence", f.list.Sequence)
	v.set("issued", f.list.IssuedAt)
	v.set("next-update", f.list.NextUpdate)
	v.set("revoked-subject", f.stranger.Identifier())
	v.set("revoked-credential", f.deviceCred.ID[:])
	v.set("revocation-list", f.list.Marshal())
	v.set("credential", f.deviceCred.Marshal())
	v.set("check-time", vectorRevoked)
	v.set("expect", "ErrRevoked (the credential, once the list is current)")
	return v
}

func checkRevocation(t *testing.T, v *vectorFile) {
	l, err := ParseRevocationList(v.bytes(t, "revocation-list"))
	require.NoError(t, err)
	require.Equal(t, v.get(t, "authority-identifier"), l.Issuer.String())
	require.Equal(t, v.get(t, "sequence"), fmt.Sprint(l.Sequence))
	require.Equal(t, v.time(t, "issued"), l.IssuedAt)
	require.Equal(t, v.time(t, "next-update"), l.NextUpdate)
	require.Len(t, l.Subjects(), 1)
	require.Equal(t, v.get(t, "revoked-subject"), l.Subjects()[0].String())
	require.Equal(t, []CredentialID{CredentialID(v.bytes(t, "revoked-credential"))}, l.Credentials())

	verifier := verifierFromVector(t, v)
	c, err := ParseCredential(v.bytes(t, "credential"))
	require.NoError(t, err)
	now := v.time(t, "check-time")
	require.NoError(t, verifier.VerifyCredential(c, c.Subject, now), "before the list")
	require.NoError(t, verifier.UpdateRevocations(l))
	require.Equal(t, l.Sequence, verifier.RevocationSequence(l.Issuer))
	requireOutcome(t, v.expect(t), verifier.VerifyCredential(c, c.Subject, now))
}

func (v *vectorFile) handshakeInputs(f *fixtures, listenerCred *Credential) {
	v.set("prologue", ProtocolName)
	v.authority(f)
	v.identity("device", f.device, "device identity key", "device purpose key")
	v.set("device-ephemeral", f.deviceEphemeral)
	v.set("device-attestation", f.device.Public().Attestation().Marshal())
	v.set("device-credential", f.deviceCred.Marshal())
	v.identity("listener", f.listener, "listener identity key", "listener purpose key")
	v.set("listener-ephemeral", f.listenerEphemeral)
	v.set("listener-attestation", f.listener.Public().Attestation().Marshal())
	v.set("listener-credential", listenerCred.Marshal())
	v.set("now", vectorNow)
}

func genHandshake(t *testing.T, f *fixtures) *vectorFile {
	h := f.handshake(t, f.listenerCred)
	require.NoError(t, h.err)
	ct, err := h.dev.seal(nil, vectorDataPlaintext)
	require.NoError(t, err)
	v := &vectorFile{}
	v.comment("Noise_XX_25519_ChaChaPoly_BLAKE2s handshake (docs/PROTOCOL.md, section 7) between the device")
	v.comment("(initiator) and the listener (responder), each with a credential from the authority; then the")
	v.comment("device's first transport message, a data message of batch 1 (section 9). The *-ephemeral values")
	v.comment("are the X25519 ephemeral private keys.")
	v.comment(generatedBy)
	v.handshakeInputs(f, f.listenerCred)
	v.set("msg1", h.msg1)
	v.set("msg2", h.msg2)
	v.set("msg3", h.msg3)
	v.set("channel-binding", h.dev.ChannelBinding())
	v.set("data-plaintext", vectorDataPlaintext)
	v.set("data-ciphertext", ct)
	v.set("expect", "ok")
	return v
}

// handshakeFromVector prepares both roles from the keys a vector gives.
func handshakeFromVector(t *testing.T, v *vectorFile) (*Initiator, *Responder) {
	t.Helper()
	verifier := verifierFromVector(t, v)
	now := fixedNow(v.time(t, "now"))
	side := func(prefix string) HandshakeConfig {
		l := identityFromVector(t, v, prefix, vectorCreated)
		require.Equal(t, v.bytes(t, prefix+"-attestation"), l.Public().Attestation().Marshal())
		c, err := ParseCredential(v.bytes(t, prefix+"-credential"))
		require.NoError(t, err)
		return HandshakeConfig{Identity: l, Credential: c, Verifier: verifier, Now: now, Random: bytes.NewReader(v.bytes(t, prefix+"-ephemeral"))}
	}
	require.Equal(t, ProtocolName, v.get(t, "prologue"))
	return mustPair(t, side("device"), side("listener"))
}

func checkHandshake(t *testing.T, v *vectorFile) {
	i, r := handshakeFromVector(t, v)
	msg1, err := i.Start()
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "msg1"), msg1)
	msg2, err := r.Respond(v.bytes(t, "msg1"))
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "msg2"), msg2)
	msg3, dev, err := i.Finish(v.bytes(t, "msg2"))
	requireOutcome(t, v.expect(t), err)
	require.Equal(t, v.bytes(t, "msg3"), msg3)
	lis, err := r.Finish(v.bytes(t, "msg3"))
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "channel-binding"), dev.ChannelBinding())
	require.Equal(t, v.bytes(t, "channel-binding"), lis.ChannelBinding())
	require.Equal(t, v.get(t, "listener-identifier"), dev.Peer().Identifier.String())
	require.Equal(t, v.get(t, "device-identifier"), lis.Peer().Identifier.String())

	pt, err := lis.open(nil, v.bytes(t, "data-ciphertext"), time.Now())
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "data-plaintext"), pt)
	m, err := parsePlaintext(pt)
	require.NoError(t, err)
	require.Equal(t, TypeData, m.Type)
	require.Equal(t, uint64(1), m.Batch)
	require.False(t, m.more)
	require.True(t, bytes.HasPrefix(m.Payload, []byte("cpu,host=device-1 ")))
}

func genHandshakeUnknownAuthority(t *testing.T, f *fixtures) *vectorFile {
	h := f.handshake(t, f.strangerCred)
	require.ErrorIs(t, h.err, ErrUnknownIssuer)
	require.Nil(t, h.msg3)
	v := &vectorFile{}
	v.comment("The handshake of handshake.txt, but the listener presents a credential from an authority the")
	v.comment("device does not trust: the device refuses message 2 and never writes message 3, so it does not")
	v.comment("reveal its identity or credential.")
	v.comment(generatedBy)
	v.handshakeInputs(f, f.strangerCred)
	v.set("listener-credential-issuer", f.stranger.Identifier())
	v.set("msg1", h.msg1)
	v.set("msg2", h.msg2)
	v.set("expect", "ErrUnknownIssuer (the device, reading msg2)")
	return v
}

func checkHandshakeUnknownAuthority(t *testing.T, v *vectorFile) {
	i, r := handshakeFromVector(t, v)
	msg1, err := i.Start()
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "msg1"), msg1)
	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "msg2"), msg2)
	c, err := ParseCredential(v.bytes(t, "listener-credential"))
	require.NoError(t, err)
	require.Equal(t, v.get(t, "listener-credential-issuer"), c.Issuer.String())
	msg3, s, err := i.Finish(v.bytes(t, "msg2"))
	requireOutcome(t, v.expect(t), err)
	require.Nil(t, msg3)
	require.Nil(t, s)
}
