package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
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

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"
	"golang.org/x/crypto/chacha20poly1305"
)

// The test vectors of docs/PROTOCOL.md live in testdata/vectors/ at the
// module root, one scenario per file. TestVectors regenerates every file
// from fixed keys, fixed times and SHA-256 counter streams (vectorfile.HashStream)
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
		return seededIdentity(t, vectorfile.Key(name+" identity key"), vectorfile.Key(name+" purpose key"), vectorCreated)
	}
	f := &fixtures{
		authority: id("authority"), device: id("device"), listener: id("listener"), stranger: id("stranger"),
		deviceEphemeral: vectorfile.Key("device ephemeral"), listenerEphemeral: vectorfile.Key("listener ephemeral"),
		deviceAttrs:   map[string]string{"role": "sensor", "site": "plant-7"},
		listenerAttrs: map[string]string{"role": "listener", "site": "plant-7"},
		strangerAttrs: map[string]string{"role": "listener"},
	}
	ids := vectorfile.NewHashStream("telegraf-ockam vectors: credential ids")
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

// expect returns the error an "expect:" line names (nil for "ok").
func (v *vectorFile) expect(t *testing.T) error {
	t.Helper()
	s := v.Get(t, "expect")
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

// vectorFile is a vector file (internal/vectorfile) with this package's
// own writers and readers.
type vectorFile struct{ vectorfile.File }

func parseVectorFile(t *testing.T, text string) *vectorFile {
	t.Helper()
	return &vectorFile{vectorfile.Parse(t, text)}
}

// identityFromVector rebuilds a LocalIdentity from the seed and scalar a
// vector file gives under prefix, and checks the file's public values.
func identityFromVector(t *testing.T, v *vectorFile, prefix string, created time.Time) *LocalIdentity {
	t.Helper()
	l := seededIdentity(t, v.Key32(t, prefix+"-identity-seed"), v.Key32(t, prefix+"-purpose-scalar"), created)
	require.Equal(t, v.Get(t, prefix+"-identifier"), l.Identifier().String())
	return l
}

// verifierFromVector trusts the authority whose attestation (its authority
// file's content) the vector gives.
func verifierFromVector(t *testing.T, v *vectorFile) *Verifier {
	t.Helper()
	a, err := ParseAttestation(v.Bytes(t, "authority-attestation"))
	require.NoError(t, err)
	require.Equal(t, v.Get(t, "authority-identifier"), a.Identifier().String())
	verifier, err := NewVerifier(&Identity{attestation: a})
	require.NoError(t, err)
	return verifier
}

func (v *vectorFile) identity(prefix string, l *LocalIdentity, seed, scalar string) {
	v.Set(prefix+"-identity-seed", vectorfile.Key(seed))
	v.Set(prefix+"-purpose-scalar", vectorfile.Key(scalar))
	v.Set(prefix+"-identifier", l.Identifier())
}

func (v *vectorFile) authority(f *fixtures) {
	v.Set("authority-identifier", f.authority.Identifier())
	v.Set("authority-attestation", f.authority.Public().Attestation().Marshal())
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
	{"channel-control.txt", genChannelControl, checkChannelControl},
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
			committed := vectorfile.Compare(t, path, generated, *update, "go test ./secure -run TestVectors -update")
			sc.check(t, parseVectorFile(t, committed))
		})
	}
}

func genAttestation(t *testing.T, f *fixtures) *vectorFile {
	a := f.device.Public().Attestation()
	v := &vectorFile{}
	v.Comment("Purpose-key attestation (docs/PROTOCOL.md, section 3): the device's Ed25519 identity key")
	v.Comment("attests its X25519 purpose key for the default 90 days.")
	v.Comment(generatedBy)
	v.identity("device", f.device, "device identity key", "device purpose key")
	v.Set("device-identity-key", []byte(a.IdentityKey))
	v.Set("device-purpose-key", a.PurposeKey)
	v.Set("created", a.Created)
	v.Set("expires", a.Expires)
	v.Set("attestation", a.Marshal())
	v.Set("check-time", vectorNow)
	v.Set("expect", "ok")
	return v
}

func checkAttestation(t *testing.T, v *vectorFile) {
	l := identityFromVector(t, v, "device", v.Time(t, "created"))
	a, err := ParseAttestation(v.Bytes(t, "attestation"))
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "device-identity-key"), []byte(a.IdentityKey))
	require.Equal(t, v.Key32(t, "device-purpose-key"), a.PurposeKey)
	require.Equal(t, l.purpose.PublicKey(), a.PurposeKey)
	require.Equal(t, v.Time(t, "created"), a.Created)
	require.Equal(t, v.Time(t, "expires"), a.Expires)
	require.Equal(t, l.Identifier(), a.Identifier())
	vectorfile.RequireOutcome(t, v.expect(t), a.Verify(v.Time(t, "check-time")))
}

// credentialVector writes the device credential of the fixtures, checked
// at checkTime with the expected outcome.
func credentialVector(f *fixtures, v *vectorFile, checkTime time.Time, expect string) *vectorFile {
	c := f.deviceCred
	v.Comment("The credential is %d bytes (docs/PROTOCOL.md, section 4: 187 for role=sensor, site=plant-7).", len(c.raw))
	v.Comment("Its id is the first 16 bytes of SHA-256(\"telegraf-ockam vectors: credential ids\" || u64 0).")
	v.Comment(generatedBy)
	v.authority(f)
	v.Set("authority-identity-seed", vectorfile.Key("authority identity key"))
	v.Set("subject", c.Subject)
	v.Set("id", c.ID[:])
	v.Set("issued", c.IssuedAt)
	v.Set("expires", c.ExpiresAt)
	v.Attributes(c.Attributes)
	v.Set("credential", c.Marshal())
	v.Set("check-time", checkTime)
	v.Set("expect", expect)
	return v
}

func genCredential(t *testing.T, f *fixtures) *vectorFile {
	t.Logf("credential with role=sensor, site=plant-7: %d bytes", len(f.deviceCred.raw))
	v := &vectorFile{}
	v.Comment("Credential (docs/PROTOCOL.md, section 4) issued by the authority to the device for 30 days.")
	return credentialVector(f, v, vectorNow, "ok")
}

func genCredentialExpired(t *testing.T, f *fixtures) *vectorFile {
	v := &vectorFile{}
	v.Comment("The credential of credential.txt checked at its expiry time: expiry is strict.")
	return credentialVector(f, v, f.deviceCred.ExpiresAt, "ErrExpired")
}

func checkCredential(t *testing.T, v *vectorFile) {
	c, err := ParseCredential(v.Bytes(t, "credential"))
	require.NoError(t, err)
	require.Len(t, c.raw, 187)
	require.Equal(t, v.Get(t, "authority-identifier"), c.Issuer.String())
	require.Equal(t, v.Get(t, "subject"), c.Subject.String())
	require.Equal(t, v.Bytes(t, "id"), c.ID[:])
	require.Equal(t, v.Time(t, "issued"), c.IssuedAt)
	require.Equal(t, v.Time(t, "expires"), c.ExpiresAt)
	require.Equal(t, v.Attrs(), c.Attributes)
	require.Equal(t, map[string]string{"role": "sensor", "site": "plant-7"}, c.Attributes)
	// The authority's attestation is signed by the key of the seed given.
	authority := seededIdentity(t, v.Key32(t, "authority-identity-seed"), [32]byte{}, vectorCreated)
	require.Equal(t, v.Get(t, "authority-identifier"), authority.Identifier().String())
	vectorfile.RequireOutcome(t, v.expect(t), verifierFromVector(t, v).VerifyCredential(c, c.Subject, v.Time(t, "check-time")))
}

func genRevocation(t *testing.T, f *fixtures) *vectorFile {
	v := &vectorFile{}
	v.Comment("Revocation list v2 (docs/PROTOCOL.md, section 5), sequence 7, due for an update 7 days after it was issued: it revokes the stranger's identity by subject")
	v.Comment("and the device's credential (credential.txt) by id.")
	v.Comment(generatedBy)
	v.authority(f)
	v.Set("sequence", f.list.Sequence)
	v.Set("issued", f.list.IssuedAt)
	v.Set("next-update", f.list.NextUpdate)
	v.Set("revoked-subject", f.stranger.Identifier())
	v.Set("revoked-credential", f.deviceCred.ID[:])
	v.Set("revocation-list", f.list.Marshal())
	v.Set("credential", f.deviceCred.Marshal())
	v.Set("check-time", vectorRevoked)
	v.Set("expect", "ErrRevoked (the credential, once the list is current)")
	return v
}

func checkRevocation(t *testing.T, v *vectorFile) {
	l, err := ParseRevocationList(v.Bytes(t, "revocation-list"))
	require.NoError(t, err)
	require.Equal(t, v.Get(t, "authority-identifier"), l.Issuer.String())
	require.Equal(t, v.Get(t, "sequence"), fmt.Sprint(l.Sequence))
	require.Equal(t, v.Time(t, "issued"), l.IssuedAt)
	require.Equal(t, v.Time(t, "next-update"), l.NextUpdate)
	require.Len(t, l.Subjects(), 1)
	require.Equal(t, v.Get(t, "revoked-subject"), l.Subjects()[0].String())
	require.Equal(t, []CredentialID{CredentialID(v.Bytes(t, "revoked-credential"))}, l.Credentials())

	verifier := verifierFromVector(t, v)
	c, err := ParseCredential(v.Bytes(t, "credential"))
	require.NoError(t, err)
	now := v.Time(t, "check-time")
	require.NoError(t, verifier.VerifyCredential(c, c.Subject, now), "before the list")
	require.NoError(t, verifier.UpdateRevocations(l))
	require.Equal(t, l.Sequence, verifier.RevocationSequence(l.Issuer))
	vectorfile.RequireOutcome(t, v.expect(t), verifier.VerifyCredential(c, c.Subject, now))
}

func (v *vectorFile) handshakeInputs(f *fixtures, listenerCred *Credential) {
	v.Set("prologue", ProtocolName)
	v.authority(f)
	v.identity("device", f.device, "device identity key", "device purpose key")
	v.Set("device-ephemeral", f.deviceEphemeral)
	v.Set("device-attestation", f.device.Public().Attestation().Marshal())
	v.Set("device-credential", f.deviceCred.Marshal())
	v.identity("listener", f.listener, "listener identity key", "listener purpose key")
	v.Set("listener-ephemeral", f.listenerEphemeral)
	v.Set("listener-attestation", f.listener.Public().Attestation().Marshal())
	v.Set("listener-credential", listenerCred.Marshal())
	v.Set("now", vectorNow)
}

func genHandshake(t *testing.T, f *fixtures) *vectorFile {
	h := f.handshake(t, f.listenerCred)
	require.NoError(t, h.err)
	accept, err := h.lis.seal(nil, vectorAcceptPlaintext)
	require.NoError(t, err)
	ct, err := h.dev.seal(nil, vectorDataPlaintext)
	require.NoError(t, err)
	v := &vectorFile{}
	v.Comment("Noise_XX_25519_ChaChaPoly_BLAKE2s handshake (docs/PROTOCOL.md, section 7) between the device")
	v.Comment("(initiator) and the listener (responder), each with a credential from the authority; then the")
	v.Comment("listener's first transport message, accept, and the device's first, a data message of batch 1")
	v.Comment("(section 9). The *-ephemeral values")
	v.Comment("are the X25519 ephemeral private keys.")
	v.Comment(generatedBy)
	v.handshakeInputs(f, f.listenerCred)
	v.Set("msg1", h.msg1)
	v.Set("msg2", h.msg2)
	v.Set("msg3", h.msg3)
	v.Set("channel-binding", h.dev.ChannelBinding())
	v.Set("accept-plaintext", vectorAcceptPlaintext)
	v.Set("accept-ciphertext", accept)
	v.Set("data-plaintext", vectorDataPlaintext)
	v.Set("data-ciphertext", ct)
	v.Set("expect", "ok")
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
	v.Comment("The handshake of handshake.txt, but the listener refuses the device: its first transport")
	v.Comment("message (c2, nonce 0) is a refuse (docs/PROTOCOL.md, section 9) with code 1 (revoked) and a reason.")
	v.Comment("The device reads it instead of an accept and does not send data.")
	v.Comment(generatedBy)
	v.handshakeInputs(f, f.listenerCred)
	v.Set("msg1", h.msg1)
	v.Set("msg2", h.msg2)
	v.Set("msg3", h.msg3)
	v.Set("refuse-plaintext", vectorRefusePlaintext)
	v.Set("refuse-ciphertext", ct)
	v.Set("expect", "ErrRefused (the device, reading the listener's first message: revoked)")
	return v
}

func checkHandshakeRefused(t *testing.T, v *vectorFile) {
	i, r := handshakeFromVector(t, v)
	_, err := i.Start()
	require.NoError(t, err)
	msg2, err := r.Respond(v.Bytes(t, "msg1"))
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "msg2"), msg2)
	msg3, dev, err := i.Finish(msg2)
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "msg3"), msg3)
	lis, err := r.Finish(msg3)
	require.NoError(t, err)
	ct, err := lis.seal(nil, v.Bytes(t, "refuse-plaintext"))
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "refuse-ciphertext"), ct)

	// The device's side, through the code Dial runs.
	tr := &replayTransport{msgs: [][]byte{v.Bytes(t, "refuse-ciphertext")}}
	err = awaitAccept(tr, dev)
	vectorfile.RequireOutcome(t, v.expect(t), err)
	re, ok := errors.AsType[*RefusedError](err)
	require.True(t, ok)
	require.Equal(t, RefusedRevoked, re.Code)
	require.True(t, re.Code.Permanent())
	require.Equal(t, "credential revoked by the authority", re.Reason)
	require.Equal(t, v.Get(t, "listener-identifier"), re.Listener.String())
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
	now := fixedNow(v.Time(t, "now"))
	side := func(prefix string) HandshakeConfig {
		l := identityFromVector(t, v, prefix, vectorCreated)
		require.Equal(t, v.Bytes(t, prefix+"-attestation"), l.Public().Attestation().Marshal())
		c, err := ParseCredential(v.Bytes(t, prefix+"-credential"))
		require.NoError(t, err)
		return HandshakeConfig{Identity: l, Credential: c, Verifier: verifier, Now: now, Random: bytes.NewReader(v.Bytes(t, prefix+"-ephemeral"))}
	}
	require.Equal(t, ProtocolName, v.Get(t, "prologue"))
	return mustPair(t, side("device"), side("listener"))
}

func checkHandshake(t *testing.T, v *vectorFile) {
	i, r := handshakeFromVector(t, v)
	msg1, err := i.Start()
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "msg1"), msg1)
	msg2, err := r.Respond(v.Bytes(t, "msg1"))
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "msg2"), msg2)
	msg3, dev, err := i.Finish(v.Bytes(t, "msg2"))
	vectorfile.RequireOutcome(t, v.expect(t), err)
	require.Equal(t, v.Bytes(t, "msg3"), msg3)
	lis, err := r.Finish(v.Bytes(t, "msg3"))
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "channel-binding"), dev.ChannelBinding())
	require.Equal(t, v.Bytes(t, "channel-binding"), lis.ChannelBinding())
	require.Equal(t, v.Get(t, "listener-identifier"), dev.Peer().Identifier.String())
	require.Equal(t, v.Get(t, "device-identifier"), lis.Peer().Identifier.String())

	acc, err := lis.seal(nil, v.Bytes(t, "accept-plaintext"))
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "accept-ciphertext"), acc)
	require.NoError(t, awaitAccept(&replayTransport{msgs: [][]byte{acc}}, dev))

	pt, err := lis.open(nil, v.Bytes(t, "data-ciphertext"), time.Now())
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "data-plaintext"), pt)
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
	v.Comment("The handshake of handshake.txt, but the listener presents a credential from an authority the")
	v.Comment("device does not trust: the device refuses message 2 and never writes message 3, so it does not")
	v.Comment("reveal its identity or credential.")
	v.Comment(generatedBy)
	v.handshakeInputs(f, f.strangerCred)
	v.Set("listener-credential-issuer", f.stranger.Identifier())
	v.Set("msg1", h.msg1)
	v.Set("msg2", h.msg2)
	v.Set("expect", "ErrUnknownIssuer (the device, reading msg2)")
	return v
}

func checkHandshakeUnknownAuthority(t *testing.T, v *vectorFile) {
	i, r := handshakeFromVector(t, v)
	msg1, err := i.Start()
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "msg1"), msg1)
	msg2, err := r.Respond(msg1)
	require.NoError(t, err)
	require.Equal(t, v.Bytes(t, "msg2"), msg2)
	c, err := ParseCredential(v.Bytes(t, "listener-credential"))
	require.NoError(t, err)
	require.Equal(t, v.Get(t, "listener-credential-issuer"), c.Issuer.String())
	msg3, s, err := i.Finish(v.Bytes(t, "msg2"))
	vectorfile.RequireOutcome(t, v.expect(t), err)
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
	v.Comment("An attestation (docs/PROTOCOL.md, section 3) by the identity key 01 00…00, the neutral point of")
	v.Comment("edwards25519, of small order (section 1). Its signature, R = 01 00…00 and S = 0, verifies with")
	v.Comment("RFC 8032's cofactorless check (crypto/ed25519, and most libraries) over every message: [S]B = R + [k]A")
	v.Comment("holds for every k. A parser must refuse the key itself, before it checks any signature.")
	v.Comment(generatedBy)
	v.Set("identity-key", key)
	v.Set("forged-signature", sig)
	v.Set("attestation", forgedAttestation(f, key, sig))
	v.Set("expect", "ErrMalformed (identity key of small order)")
	return v
}

func checkIdentityKeySmallOrder(t *testing.T, v *vectorFile) {
	key, sig, att := v.Bytes(t, "identity-key"), v.Bytes(t, "forged-signature"), v.Bytes(t, "attestation")
	require.Equal(t, key, att[1:33])
	require.Equal(t, sig, att[attestationSignedLength:])
	// The signature library alone accepts the forgery, for any message.
	require.True(t, ed25519.Verify(key, signedMessage(attestationContext, att[:attestationSignedLength]), sig))
	require.True(t, ed25519.Verify(key, []byte("any other message"), sig))
	_, err := ParseAttestation(att)
	vectorfile.RequireOutcome(t, v.expect(t), err)
	require.ErrorContains(t, err, "small order")
	require.ErrorIs(t, checkIdentityKey(key), ErrMalformed)
}

func genIdentityKeyNonCanonical(t *testing.T, f *fixtures) *vectorFile {
	key := bytes.Repeat([]byte{0xff}, 32)
	key[0], key[31] = 0xf0, 0x7f // y = p + 3, sign bit 0
	p, err := new(edwards25519.Point).SetBytes(key)
	require.NoError(t, err)
	v := &vectorFile{}
	v.Comment("An attestation (docs/PROTOCOL.md, section 3) whose identity key is a non-canonical encoding (section 1):")
	v.Comment("y = p + 3 = 2^255 - 16, which lenient decoders (crypto/ed25519, edwards25519.SetBytes) read as the")
	v.Comment("point of y = 3, of large order, whose canonical encoding is canonical-key. Its signature is zeros: the")
	v.Comment("key must be refused as malformed before any signature is checked.")
	v.Comment(generatedBy)
	v.Set("identity-key", key)
	v.Set("canonical-key", p.Bytes())
	v.Set("attestation", forgedAttestation(f, key, make([]byte, ed25519.SignatureSize)))
	v.Set("expect", "ErrMalformed (identity key not canonically encoded)")
	return v
}

func checkIdentityKeyNonCanonical(t *testing.T, v *vectorFile) {
	key, att := v.Bytes(t, "identity-key"), v.Bytes(t, "attestation")
	require.Equal(t, key, att[1:33])
	// y as a 255-bit little-endian integer is p + 3.
	be := bytes.Clone(key)
	slices.Reverse(be)
	y := new(big.Int).SetBytes(be)
	y.SetBit(y, 255, 0)
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	require.Equal(t, big.NewInt(3), new(big.Int).Sub(y, p))
	canonical := v.Bytes(t, "canonical-key")
	require.Equal(t, append([]byte{3}, make([]byte, 31)...), canonical)
	pt, err := new(edwards25519.Point).SetBytes(key)
	require.NoError(t, err, "a lenient decoder accepts it")
	require.Equal(t, canonical, pt.Bytes())
	require.Equal(t, 0, new(edwards25519.Point).MultByCofactor(pt).Equal(edwards25519.NewIdentityPoint()), "large order")
	_, err = ParseAttestation(att)
	vectorfile.RequireOutcome(t, v.expect(t), err)
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
	v.Comment("Rekey (docs/PROTOCOL.md, section 9) on the channel of handshake.txt. key is the device's sending key")
	v.Comment("after Split() (c1's k). The device sends the data message of handshake.txt (nonce 0), then a rekey")
	v.Comment("message (nonce 1, under key), then a data message of batch 2 (nonce 2, under rekeyed-key). rekeyed-key is")
	v.Comment("the first 32 bytes of ChaCha20-Poly1305(key, nonce = 00000000 || u64le(2^64-1), ad = empty,")
	v.Comment("plaintext = 32 zero bytes); the nonce counter goes on from 2. Noise nonces are 4 zero bytes and the")
	v.Comment("counter as u64 little-endian.")
	v.Comment(generatedBy)
	v.Set("key", k)
	v.Set("data-ciphertext", first)
	v.Set("rekey-plaintext", []byte{byte(TypeRekey)})
	v.Set("rekey-ciphertext", rekey)
	v.Set("rekeyed-key", h.dev.send.UnsafeKey())
	v.Set("data2-plaintext", vectorSecondPlaintext)
	v.Set("data2-ciphertext", second)
	v.Set("expect", "ok")
	return v
}

func checkChannelRekey(t *testing.T, v *vectorFile) {
	k, k2 := v.Key32(t, "key"), v.Key32(t, "rekeyed-key")
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
	require.Equal(t, v.Bytes(t, "rekey-plaintext"), open(k, 1, v.Bytes(t, "rekey-ciphertext")))
	require.Equal(t, v.Bytes(t, "data2-plaintext"), open(k2, 2, v.Bytes(t, "data2-ciphertext")))
	require.Equal(t, vectorDataPlaintext, open(k, 0, v.Bytes(t, "data-ciphertext")))

	// The same messages through a receiving channel.
	suite := noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	s := &Session{recv: noise.UnsafeNewCipherState(suite, k, 0), recvSince: vectorNow, rekeyAfterMessages: RekeyAfterMessages}
	c := &Channel{session: s, reasm: reassembler{max: DefaultMaxMessageSize}}
	var got []uint64
	for _, ct := range []string{"data-ciphertext", "rekey-ciphertext", "data2-ciphertext"} {
		m, ok, err := c.take(v.Bytes(t, ct), vectorNow)
		require.NoError(t, err, ct)
		if ok {
			got = append(got, m.Batch)
		}
	}
	require.Equal(t, []uint64{1, 2}, got)
	require.Equal(t, k2, s.recv.UnsafeKey())
	require.Equal(t, uint64(3), s.recv.Nonce(), "the nonce counter is not reset")
	vectorfile.RequireOutcome(t, v.expect(t), nil)
}

// The control messages of channel-control.txt, section 17.5.
var vectorControl = []struct {
	name string
	m    Message
}{
	{"ready", Message{Type: TypeReady, Kinds: 0b101, MaxChunk: 16384}},
	{"instruction", Message{Type: TypeInstruction, Payload: []byte{1, 3, 0xaa, 0xbb}}},
	{"chunk", Message{Type: TypeChunk, Payload: append(append(bytes.Repeat([]byte{0x11}, 16), 0, 0, 0, 0, 0, 0, 0x40, 0, 1), "tail"...)}},
	{"outcome", Message{Type: TypeOutcome, Batch: 3, Payload: append(append(append(bytes.Repeat([]byte{0x11}, 16),
		bytes.Repeat([]byte{0x22}, 32)...), 0, 0, 0, 0, 0, 0, 0, 7, 2, 12), "replayed"...)}},
}

func genChannelControl(t *testing.T, f *fixtures) *vectorFile {
	h := f.handshake(t, f.listenerCred)
	require.NoError(t, h.err)
	v := &vectorFile{}
	v.Comment("Control messages (docs/PROTOCOL.md, section 17.5) on the channel of handshake.txt, as plaintexts and")
	v.Comment("sealed in turn by the device (nonces 0 to 3 under key, the device's sending key): ready (kinds config and")
	v.Comment("command, chunks of at most 16384 bytes), an instruction (its bytes are opaque to the channel; they are")
	v.Comment("not a valid instruction), a last chunk at offset 16384, and an outcome of batch 3: refused, code 12.")
	v.Comment("In a real channel only ready and outcome go from the device; the direction does not change the framing.")
	v.Comment(generatedBy)
	v.Set("key", h.dev.send.UnsafeKey())
	for _, c := range vectorControl {
		p, err := appendControl(nil, c.m)
		require.NoError(t, err)
		ct, err := h.dev.seal(nil, p)
		require.NoError(t, err)
		v.Set(c.name+"-plaintext", p)
		v.Set(c.name+"-ciphertext", ct)
	}
	v.Set("expect", "ok")
	return v
}

func checkChannelControl(t *testing.T, v *vectorFile) {
	k := v.Key32(t, "key")
	suite := noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	s := &Session{recv: noise.UnsafeNewCipherState(suite, k, 0), recvSince: vectorNow, rekeyAfterMessages: RekeyAfterMessages}
	c := &Channel{session: s, reasm: reassembler{max: DefaultMaxMessageSize}}
	for _, want := range vectorControl {
		f, err := parsePlaintext(v.Bytes(t, want.name+"-plaintext"))
		require.NoError(t, err, want.name)
		require.Equal(t, want.m, f.Message, want.name)
		m, ok, err := c.take(v.Bytes(t, want.name+"-ciphertext"), vectorNow)
		require.NoError(t, err, want.name)
		require.True(t, ok, want.name)
		require.Equal(t, want.m, m, want.name)
	}
}
