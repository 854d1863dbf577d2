package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/edwards25519"
	"github.com/flynn/noise"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/chacha20poly1305"
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
		"ErrWrongSubject": ErrWrongSubject, "ErrMalformed": ErrMalformed, "ErrRefused": ErrRefused,
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
	{"handshake-refused.txt", genHandshakeRefused, checkHandshakeRefused},
	{"channel-rekey.txt", genChannelRekey, checkChannelRekey},
	{"identity-key-small-order.txt", genIdentityKeySmallOrder, checkIdentityKeySmallOrder},
	{"identity-key-non-canonical.txt", genIdentityKeyNonCanonical, checkIdentityKeyNonCanonical},
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
	accept, err := h.lis.seal(nil, vectorAcceptPlaintext)
	require.NoError(t, err)
	ct, err := h.dev.seal(nil, vectorDataPlaintext)
	require.NoError(t, err)
	v := &vectorFile{}
	v.comment("Noise_XX_25519_ChaChaPoly_BLAKE2s handshake (docs/PROTOCOL.md, section 7) between the device")
	v.comment("(initiator) and the listener (responder), each with a credential from the authority; then the")
	v.comment("listener's first transport message, accept, and the device's first, a data message of batch 1")
	v.comment("(section 9). The *-ephemeral values")
	v.comment("are the X25519 ephemeral private keys.")
	v.comment(generatedBy)
	v.handshakeInputs(f, f.listenerCred)
	v.set("msg1", h.msg1)
	v.set("msg2", h.msg2)
	v.set("msg3", h.msg3)
	v.set("channel-binding", h.dev.ChannelBinding())
	v.set("accept-plaintext", vectorAcceptPlaintext)
	v.set("accept-ciphertext", accept)
	v.set("data-plaintext", vectorDataPlaintext)
	v.set("data-ciphertext", ct)
	v.set("expect", "ok")
	return v
}

// vectorAcceptPlaintext is the listener's first message: accept.
var vectorAcceptPlaintext = []byte{byte(TypeAccept)}

// vectorRefusePlaintext refuses a revoked device, with a reason.
var vectorRefusePlaintext = append([]byte{byte(TypeRefuse), byte(RefusedRevoked)}, "credential revoked by the authority"...)

func genHandshakeRefused(t *testing.T, f *fixtures) *vectorFile {
	h := f.handshake(t, f.listenerCred)
	require.NoError(t, h.err)
	ct, err := h.lis.seal(nil, vectorRefusePlaintext)
	require.NoError(t, err)
	v := &vectorFile{}
	v.comment("The handshake of handshake.txt, but the listener refuses the device: its first transport")
	v.comment("message (c2, nonce 0) is a refuse (docs/PROTOCOL.md, section 9) with code 1 (revoked) and a reason.")
	v.comment("The device reads it instead of an accept and does not send data.")
	v.comment(generatedBy)
	v.handshakeInputs(f, f.listenerCred)
	v.set("msg1", h.msg1)
	v.set("msg2", h.msg2)
	v.set("msg3", h.msg3)
	v.set("refuse-plaintext", vectorRefusePlaintext)
	v.set("refuse-ciphertext", ct)
	v.set("expect", "ErrRefused (the device, reading the listener's first message: revoked)")
	return v
}

func checkHandshakeRefused(t *testing.T, v *vectorFile) {
	i, r := handshakeFromVector(t, v)
	_, err := i.Start()
	require.NoError(t, err)
	msg2, err := r.Respond(v.bytes(t, "msg1"))
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "msg2"), msg2)
	msg3, dev, err := i.Finish(msg2)
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "msg3"), msg3)
	lis, err := r.Finish(msg3)
	require.NoError(t, err)
	ct, err := lis.seal(nil, v.bytes(t, "refuse-plaintext"))
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "refuse-ciphertext"), ct)

	// The device's side, through the code Dial runs.
	tr := &replayTransport{msgs: [][]byte{v.bytes(t, "refuse-ciphertext")}}
	err = awaitAccept(tr, dev)
	requireOutcome(t, v.expect(t), err)
	re, ok := errors.AsType[*RefusedError](err)
	require.True(t, ok)
	require.Equal(t, RefusedRevoked, re.Code)
	require.True(t, re.Code.Permanent())
	require.Equal(t, "credential revoked by the authority", re.Reason)
	require.Equal(t, v.get(t, "listener-identifier"), re.Listener.String())
	require.NotErrorIs(t, err, ErrRevoked, "the refusal is about the device, not the listener's credential")
}

// replayTransport reads back msgs, then fails.
type replayTransport struct{ msgs [][]byte }

func (r *replayTransport) ReadMessage() ([]byte, error) {
	if len(r.msgs) == 0 {
		return nil, io.EOF
	}
	m := r.msgs[0]
	r.msgs = r.msgs[1:]
	return m, nil
}
func (*replayTransport) WriteMessage([]byte) error { return errors.New("read only") }
func (*replayTransport) Close() error              { return nil }

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

	acc, err := lis.seal(nil, v.bytes(t, "accept-plaintext"))
	require.NoError(t, err)
	require.Equal(t, v.bytes(t, "accept-ciphertext"), acc)
	require.NoError(t, awaitAccept(&replayTransport{msgs: [][]byte{acc}}, dev))

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

// forgedAttestation is an attestation by identityKey, of the device's
// purpose key, with sig as its signature.
func forgedAttestation(f *fixtures, identityKey, sig []byte) []byte {
	pk := f.device.Public().Attestation().PurposeKey
	body := attestationBody(attestationVersion, identityKey, purposeSecureChannel, pk,
		unixSeconds(vectorCreated), unixSeconds(vectorCreated.Add(DefaultAttestationTTL)))
	return append(body, sig...)
}

func genIdentityKeySmallOrder(t *testing.T, f *fixtures) *vectorFile {
	key := append([]byte{1}, make([]byte, 31)...)
	sig := append(bytes.Clone(key), make([]byte, 32)...)
	v := &vectorFile{}
	v.comment("An attestation (docs/PROTOCOL.md, section 3) by the identity key 01 00…00, the neutral point of")
	v.comment("edwards25519, of small order (section 1). Its signature, R = 01 00…00 and S = 0, verifies with")
	v.comment("RFC 8032's cofactorless check (crypto/ed25519, and most libraries) over every message: [S]B = R + [k]A")
	v.comment("holds for every k. A parser must refuse the key itself, before it checks any signature.")
	v.comment(generatedBy)
	v.set("identity-key", key)
	v.set("forged-signature", sig)
	v.set("attestation", forgedAttestation(f, key, sig))
	v.set("expect", "ErrMalformed (identity key of small order)")
	return v
}

func checkIdentityKeySmallOrder(t *testing.T, v *vectorFile) {
	key, sig, att := v.bytes(t, "identity-key"), v.bytes(t, "forged-signature"), v.bytes(t, "attestation")
	require.Equal(t, key, att[1:33])
	require.Equal(t, sig, att[attestationSignedLength:])
	// The signature library alone accepts the forgery, for any message.
	require.True(t, ed25519.Verify(key, signedMessage(attestationContext, att[:attestationSignedLength]), sig))
	require.True(t, ed25519.Verify(key, []byte("any other message"), sig))
	_, err := ParseAttestation(att)
	requireOutcome(t, v.expect(t), err)
	require.ErrorContains(t, err, "small order")
	require.ErrorIs(t, checkIdentityKey(key), ErrMalformed)
}

func genIdentityKeyNonCanonical(t *testing.T, f *fixtures) *vectorFile {
	key := bytes.Repeat([]byte{0xff}, 32)
	key[0], key[31] = 0xf0, 0x7f // y = p + 3, sign bit 0
	p, err := new(edwards25519.Point).SetBytes(key)
	require.NoError(t, err)
	v := &vectorFile{}
	v.comment("An attestation (docs/PROTOCOL.md, section 3) whose identity key is a non-canonical encoding (section 1):")
	v.comment("y = p + 3 = 2^255 - 16, which lenient decoders (crypto/ed25519, edwards25519.SetBytes) read as the")
	v.comment("point of y = 3, of large order, whose canonical encoding is canonical-key. Its signature is zeros: the")
	v.comment("key must be refused as malformed before any signature is checked.")
	v.comment(generatedBy)
	v.set("identity-key", key)
	v.set("canonical-key", p.Bytes())
	v.set("attestation", forgedAttestation(f, key, make([]byte, ed25519.SignatureSize)))
	v.set("expect", "ErrMalformed (identity key not canonically encoded)")
	return v
}

func checkIdentityKeyNonCanonical(t *testing.T, v *vectorFile) {
	key, att := v.bytes(t, "identity-key"), v.bytes(t, "attestation")
	require.Equal(t, key, att[1:33])
	// y as a 255-bit little-endian integer is p + 3.
	be := bytes.Clone(key)
	slices.Reverse(be)
	y := new(big.Int).SetBytes(be)
	y.SetBit(y, 255, 0)
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	require.Equal(t, big.NewInt(3), new(big.Int).Sub(y, p))
	canonical := v.bytes(t, "canonical-key")
	require.Equal(t, append([]byte{3}, make([]byte, 31)...), canonical)
	pt, err := new(edwards25519.Point).SetBytes(key)
	require.NoError(t, err, "a lenient decoder accepts it")
	require.Equal(t, canonical, pt.Bytes())
	require.Equal(t, 0, new(edwards25519.Point).MultByCofactor(pt).Equal(edwards25519.NewIdentityPoint()), "large order")
	_, err = ParseAttestation(att)
	requireOutcome(t, v.expect(t), err)
	require.ErrorContains(t, err, "not canonically encoded")
}

// vectorSecondPlaintext is the device's third message in channel-rekey.txt.
var vectorSecondPlaintext = appendFragment(nil, 2, false, []byte("cpu,host=device-1 usage_idle=97.25 1767225610000000000\n"))

func genChannelRekey(t *testing.T, f *fixtures) *vectorFile {
	h := f.handshake(t, f.listenerCred)
	require.NoError(t, h.err)
	k := h.dev.send.UnsafeKey()
	first, err := h.dev.seal(nil, vectorDataPlaintext)
	require.NoError(t, err)
	rekey, err := h.dev.seal(nil, []byte{byte(TypeRekey)})
	require.NoError(t, err)
	h.dev.rekeySend(vectorNow)
	second, err := h.dev.seal(nil, vectorSecondPlaintext)
	require.NoError(t, err)
	v := &vectorFile{}
	v.comment("Rekey (docs/PROTOCOL.md, section 9) on the channel of handshake.txt. key is the device's sending key")
	v.comment("after Split() (c1's k). The device sends the data message of handshake.txt (nonce 0), then a rekey")
	v.comment("message (nonce 1, under key), then a data message of batch 2 (nonce 2, under rekeyed-key). rekeyed-key is")
	v.comment("the first 32 bytes of ChaCha20-Poly1305(key, nonce = 00000000 || u64le(2^64-1), ad = empty,")
	v.comment("plaintext = 32 zero bytes); the nonce counter goes on from 2. Noise nonces are 4 zero bytes and the")
	v.comment("counter as u64 little-endian.")
	v.comment(generatedBy)
	v.set("key", k)
	v.set("data-ciphertext", first)
	v.set("rekey-plaintext", []byte{byte(TypeRekey)})
	v.set("rekey-ciphertext", rekey)
	v.set("rekeyed-key", h.dev.send.UnsafeKey())
	v.set("data2-plaintext", vectorSecondPlaintext)
	v.set("data2-ciphertext", second)
	v.set("expect", "ok")
	return v
}

func checkChannelRekey(t *testing.T, v *vectorFile) {
	k, k2 := v.key32(t, "key"), v.key32(t, "rekeyed-key")
	nonce := func(n uint64) []byte { return binary.LittleEndian.AppendUint64(make([]byte, 4), n) }
	open := func(key [32]byte, n uint64, ct []byte) []byte {
		aead, err := chacha20poly1305.New(key[:])
		require.NoError(t, err)
		pt, err := aead.Open(nil, nonce(n), ct, nil)
		require.NoError(t, err)
		return pt
	}
	// The rekey function, with x/crypto alone.
	aead, err := chacha20poly1305.New(k[:])
	require.NoError(t, err)
	require.Equal(t, k2[:], aead.Seal(nil, nonce(1<<64-1), make([]byte, 32), nil)[:32])
	require.Equal(t, v.bytes(t, "rekey-plaintext"), open(k, 1, v.bytes(t, "rekey-ciphertext")))
	require.Equal(t, v.bytes(t, "data2-plaintext"), open(k2, 2, v.bytes(t, "data2-ciphertext")))
	require.Equal(t, vectorDataPlaintext, open(k, 0, v.bytes(t, "data-ciphertext")))

	// The same messages through a receiving channel.
	suite := noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	s := &Session{recv: noise.UnsafeNewCipherState(suite, k, 0), recvSince: vectorNow, rekeyAfterMessages: RekeyAfterMessages}
	c := &Channel{session: s, reasm: reassembler{max: DefaultMaxMessageSize}}
	var got []uint64
	for _, ct := range []string{"data-ciphertext", "rekey-ciphertext", "data2-ciphertext"} {
		m, ok, err := c.take(v.bytes(t, ct), vectorNow)
		require.NoError(t, err, ct)
		if ok {
			got = append(got, m.Batch)
		}
	}
	require.Equal(t, []uint64{1, 2}, got)
	require.Equal(t, k2, s.recv.UnsafeKey())
	require.Equal(t, uint64(3), s.recv.Nonce(), "the nonce counter is not reset")
	requireOutcome(t, v.expect(t), nil)
}
