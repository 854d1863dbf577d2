package secure

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The handshake (docs/PROTOCOL.md, "Handshake"):
//
//	Noise_XX_25519_ChaChaPoly_BLAKE2s, prologue = ProtocolName
//	-> e, payload "telegraf-ockam/2"             (message 1, cleartext hello)
//	<- e, ee, s, es, payload(responder)           (message 2)
//	-> s, se, payload(initiator)                  (message 3)
//
// payload(x) = u8 version 1 | attestation (146) | u16 length | credential
//
// The device (initiator) verifies the listener's payload before it writes
// message 3, so it reveals its identity and credential only to a listener
// that proved a credential from the device's trusted authority.
const (
	// ProtocolName names this protocol and its version. It is the Noise
	// prologue and the cleartext payload of message 1, so a peer of another
	// version fails with a clear reason and cannot be downgraded silently.
	// Version 2 added the listener's accept or refuse after message 3.
	ProtocolName = "telegraf-ockam/2"

	payloadVersion = 1
)

// Handshake errors, besides the verification errors of Verifier.
var (
	// ErrHandshake: a handshake message failed to decrypt or was out of
	// order. The cause is deliberately not told apart (a tampered,
	// replayed or foreign message all look the same).
	ErrHandshake = errors.New("secure: handshake failed")
	// ErrUnsupportedVersion: the peer speaks another protocol or version.
	ErrUnsupportedVersion = errors.New("secure: unsupported protocol version")
	// ErrPinMismatch: the peer is valid but not the pinned identity.
	ErrPinMismatch = errors.New("secure: peer is not the pinned identity")
	// ErrPeerAttributes: the peer is valid but its credential lacks an
	// attribute the handshake requires (HandshakeConfig.PeerAttributes).
	ErrPeerAttributes = errors.New("secure: peer lacks a required attribute")
)

// cipherSuite returns the suite of one handshake, whose DH is dh.
func cipherSuite(dh *vaultDH) noise.CipherSuite {
	return noise.NewCipherSuite(dh, noise.CipherChaChaPoly, noise.HashBLAKE2s)
}

// HandshakeConfig is what one end brings to a handshake.
type HandshakeConfig struct {
	Identity   *LocalIdentity // our identity and purpose key
	Credential *Credential    // our credential, sent to the peer
	Verifier   *Verifier      // whom we trust
	// PeerIdentifier, when not zero, pins the peer's identity.
	PeerIdentifier Identifier
	// PeerAttributes, when not empty, must all be present with these exact
	// values in the peer's credential (ErrPeerAttributes otherwise). A
	// device sets role=listener so that another device holding a credential
	// from the same authority cannot pose as its listener.
	PeerAttributes map[string]string
	// Admit, on the responder (Accept) only, decides whether a verified
	// initiator may open the channel. An error refuses it: a *RefusalError
	// with its code, any other error with RefusedUnauthorized. nil admits
	// every verified initiator.
	Admit func(*Peer) error
	// MaxMessageSize bounds a data payload this side of the channel
	// reassembles from fragments (0: DefaultMaxMessageSize); a larger one
	// is received as Message.TooLarge. A listener sets its
	// max_received_message_size here.
	MaxMessageSize int
	// Now returns the time for validity checks (nil: time.Now).
	Now func() time.Time
	// Random supplies the ephemeral key (nil: crypto/rand). Test vectors
	// set it; nothing else should.
	Random io.Reader
}

func (c *HandshakeConfig) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// handshake is the state shared by both roles.
type handshake struct {
	cfg  HandshakeConfig
	hs   *noise.HandshakeState
	dh   *vaultDH
	step int // messages processed so far; any error makes it -1 (dead)
}

func newHandshake(cfg HandshakeConfig, initiator bool) (*handshake, error) {
	if cfg.Identity == nil || cfg.Credential == nil || cfg.Verifier == nil {
		return nil, errors.New("secure: handshake needs an identity, a credential and a verifier")
	}
	if cfg.MaxMessageSize < 0 {
		return nil, fmt.Errorf("secure: MaxMessageSize %d is negative", cfg.MaxMessageSize)
	}
	random := cfg.Random
	if random == nil {
		random = rand.Reader
	}
	pub := cfg.Identity.purpose.PublicKey()
	dh := &vaultDH{static: cfg.Identity.purpose}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cipherSuite(dh),
		Random:      random,
		Pattern:     noise.HandshakeXX,
		Initiator:   initiator,
		Prologue:    []byte(ProtocolName), // both ends must agree on it
		// Private stays empty: vaultDH uses the vault's key for it.
		StaticKeypair: noise.DHKey{Public: pub[:]},
	})
	if err != nil {
		return nil, fmt.Errorf("secure: %v", err)
	}
	return &handshake{cfg: cfg, hs: hs, dh: dh}, nil
}

// expect checks the step and marks the handshake dead until the step ends
// well; any failure leaves it dead (flynn/noise cannot roll back).
func (h *handshake) expect(step int) error {
	if h.step != step {
		return fmt.Errorf("%w: message %d out of order", ErrHandshake, step+1)
	}
	h.step = -1
	return nil
}

// Initiator runs the device's side of the handshake, without I/O.
type Initiator struct{ h *handshake }

// NewInitiator prepares the device's side.
func NewInitiator(cfg HandshakeConfig) (*Initiator, error) {
	h, err := newHandshake(cfg, true)
	return &Initiator{h}, err
}

// Start returns message 1.
func (i *Initiator) Start() ([]byte, error) {
	if err := i.h.expect(0); err != nil {
		return nil, err
	}
	msg, _, _, err := i.h.hs.WriteMessage(nil, []byte(ProtocolName))
	if err != nil {
		return nil, fmt.Errorf("secure: write message 1: %v", err)
	}
	i.h.step = 1
	return msg, nil
}

// Finish reads message 2, verifies the responder, and returns message 3
// and the established session. On any error the handshake is dead.
func (i *Initiator) Finish(msg2 []byte) ([]byte, *Session, error) {
	h := i.h
	defer h.dh.forget()
	if err := h.expect(1); err != nil {
		return nil, nil, err
	}
	payload, _, _, err := h.hs.ReadMessage(nil, msg2)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: message 2", ErrHandshake)
	}
	peer, err := h.verifyPayload(payload)
	if err != nil {
		return nil, nil, err
	}
	msg3, cs1, cs2, err := h.hs.WriteMessage(nil, appendPayload(nil, h.cfg.Identity, h.cfg.Credential))
	if err != nil || cs1 == nil {
		return nil, nil, fmt.Errorf("secure: write message 3: %v", err)
	}
	h.step = 2
	return msg3, newSession(cs1, cs2, peer, h.hs.ChannelBinding()), nil
}

// Responder runs the listener's side of the handshake, without I/O.
type Responder struct {
	h *handshake
	// refusal is the responder's sending key after a message 3 that Noise
	// read but verification refused: the initiator proved its static key
	// and holds this key too, so it can be told why (Refuse).
	refusal *Session
}

// NewResponder prepares the listener's side.
func NewResponder(cfg HandshakeConfig) (*Responder, error) {
	h, err := newHandshake(cfg, false)
	return &Responder{h: h}, err
}

// Respond reads message 1 and returns message 2.
func (r *Responder) Respond(msg1 []byte) ([]byte, error) {
	h := r.h
	if err := h.expect(0); err != nil {
		return nil, err
	}
	hello, _, _, err := h.hs.ReadMessage(nil, msg1)
	if err != nil {
		return nil, fmt.Errorf("%w: message 1", ErrHandshake)
	}
	if string(hello) != ProtocolName {
		return nil, fmt.Errorf("%w: peer speaks %q, want %q", ErrUnsupportedVersion, hello, ProtocolName)
	}
	msg2, _, _, err := h.hs.WriteMessage(nil, appendPayload(nil, h.cfg.Identity, h.cfg.Credential))
	if err != nil {
		// ee fails here on a low-order ephemeral key in message 1.
		return nil, fmt.Errorf("%w: message 1: %v", ErrHandshake, err)
	}
	h.step = 1
	return msg2, nil
}

// Finish reads message 3, verifies the initiator and returns the session.
func (r *Responder) Finish(msg3 []byte) (*Session, error) {
	h := r.h
	defer h.dh.forget()
	if err := h.expect(1); err != nil {
		return nil, err
	}
	payload, cs1, cs2, err := h.hs.ReadMessage(nil, msg3)
	if err != nil || cs1 == nil {
		return nil, fmt.Errorf("%w: message 3", ErrHandshake)
	}
	peer, err := h.verifyPayload(payload)
	if err != nil {
		r.refusal = newSession(cs2, nil, nil, nil)
		if id, ok := h.provenIdentity(payload); ok {
			err = &PeerError{Identifier: id, Err: err}
		}
		return nil, err
	}
	h.step = 2
	// cs1 carries initiator→responder traffic on both sides.
	return newSession(cs2, cs1, peer, h.hs.ChannelBinding()), nil
}

// Refuse returns the refuse message (docs/PROTOCOL.md, section 9) that
// tells the initiator why Finish refused it, sealed as the responder's
// first transport message. It fails unless Finish failed after Noise read
// message 3: before that the responder holds no key the initiator has.
func (r *Responder) Refuse(code RefusalCode, reason string) ([]byte, error) {
	if r.refusal == nil {
		return nil, errors.New("secure: no refusal to send: message 3 was not read")
	}
	p, err := appendControl(nil, Message{Type: TypeRefuse, Code: code, Reason: reason})
	if err != nil {
		return nil, err
	}
	s := r.refusal
	r.refusal = nil // one message only
	return s.seal(nil, p)
}

// PeerError is a verification error of message 3 from a peer that proved
// its identity (its attestation is valid and names the static key of the
// handshake) but not the rest, for instance a revoked credential. The
// listener logs refusals per identity with it.
type PeerError struct {
	Identifier Identifier
	Err        error
}

func (e *PeerError) Error() string { return fmt.Sprintf("%s: %v", e.Identifier.Short(), e.Err) }

// Unwrap returns the verification error.
func (e *PeerError) Unwrap() error { return e.Err }

// provenIdentity returns the identity of a payload whose attestation is
// valid and attests the peer's static key of this handshake.
func (h *handshake) provenIdentity(payload []byte) (Identifier, bool) {
	a, _, err := parsePayload(payload)
	if err != nil || subtle.ConstantTimeCompare(a.PurposeKey[:], h.hs.PeerStatic()) != 1 || a.Verify(h.cfg.now()) != nil {
		return Identifier{}, false
	}
	return a.Identifier(), true
}

// appendPayload appends our handshake payload.
func appendPayload(b []byte, id *LocalIdentity, c *Credential) []byte {
	b = append(b, payloadVersion)
	b = append(b, id.public.attestation.raw[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.raw)))
	return append(b, c.raw...)
}

// parsePayload decodes a handshake payload strictly and checks the
// attestation's signature.
func parsePayload(p []byte) (*Attestation, *Credential, error) {
	a, c, _, err := parsePayloadWith(p, nil)
	return a, c, err
}

// parsePayloadWith decodes a handshake payload strictly. If verifiedBefore
// (not nil) reports that the exact attestation bytes and credential were
// verified before, it returns true and skips the attestation's signature
// check; otherwise it checks it, as parsePayload does. Neither checks the
// credential's signature. The errors and their order are parsePayload's.
func parsePayloadWith(p []byte, verifiedBefore func(att []byte, c *Credential) bool) (*Attestation, *Credential, bool, error) {
	s := cryptobyte.String(p)
	var version uint8
	var att []byte
	var cred cryptobyte.String
	if !s.ReadUint8(&version) || version != payloadVersion {
		return nil, nil, false, fmt.Errorf("%w: handshake payload version %d, want %d", ErrMalformed, version, payloadVersion)
	}
	if !s.ReadBytes(&att, AttestationSize) || !s.ReadUint16LengthPrefixed(&cred) || !s.Empty() {
		return nil, nil, false, fmt.Errorf("%w: handshake payload of %d bytes", ErrMalformed, len(p))
	}
	// The credential is parsed first, to look the pair up, but its errors
	// come after the attestation's.
	c, credErr := ParseCredential(cred)
	cached := credErr == nil && verifiedBefore != nil && verifiedBefore(att, c)
	a, err := parseAttestation(att, cached)
	if err != nil {
		return nil, nil, false, err
	}
	if credErr != nil {
		return nil, nil, false, credErr
	}
	return a, c, cached, nil
}

// verifyPayload parses the peer's payload and verifies it against the
// static key the peer proved in this handshake. A payload the Verifier
// verified before costs no signature check (verified.go).
func (h *handshake) verifyPayload(payload []byte) (*Peer, error) {
	now := h.cfg.now()
	a, c, cached, err := parsePayloadWith(payload, func(att []byte, c *Credential) bool {
		return h.cfg.Verifier.verifiedBefore(att, c, now)
	})
	if err != nil {
		return nil, err
	}
	peer, err := h.cfg.Verifier.verifyPeer(a, c, h.hs.PeerStatic(), now, cached)
	if err != nil {
		return nil, err
	}
	if !h.cfg.PeerIdentifier.IsZero() && !peer.Identifier.Equal(h.cfg.PeerIdentifier) {
		return nil, fmt.Errorf("%w: peer is %s, pinned %s", ErrPinMismatch, peer.Identifier, h.cfg.PeerIdentifier)
	}
	for _, k := range slices.Sorted(maps.Keys(h.cfg.PeerAttributes)) {
		if got, ok := c.Attributes[k]; !ok || got != h.cfg.PeerAttributes[k] {
			return nil, fmt.Errorf("%w: peer %s has %s=%q, want %q", ErrPeerAttributes, peer.Identifier.Short(), k, got, h.cfg.PeerAttributes[k])
		}
	}
	return peer, nil
}

// vaultDH is Noise's "25519" with the static private key kept in a vault.
// flynn/noise passes the private key bytes to DH; the static key's Private
// is left empty, and an empty private key selects the vault's key. The
// ephemeral key is an ordinary crypto/ecdh key, which vaultDH keeps: making
// an ecdh.PrivateKey from bytes computes its public key, one more X25519
// scalar multiplication, and a handshake would pay it at each of its two
// DHs with the ephemeral key (docs/BENCHMARKS.md).
type vaultDH struct {
	static    vault.DH
	ephemeral *ecdh.PrivateKey // made by GenerateKeypair; one per handshake
}

func (d *vaultDH) GenerateKeypair(random io.Reader) (noise.DHKey, error) {
	var seed [32]byte
	if _, err := io.ReadFull(random, seed[:]); err != nil {
		return noise.DHKey{}, err
	}
	defer clear(seed[:])
	k, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		return noise.DHKey{}, err
	}
	d.ephemeral = k
	return noise.DHKey{Private: k.Bytes(), Public: k.PublicKey().Bytes()}, nil
}

// forget drops the ephemeral key when the handshake is over: the cipher
// states keep the suite, and so this DH, for the life of the channel.
func (d *vaultDH) forget() { d.ephemeral = nil }

func (d *vaultDH) DH(private, public []byte) ([]byte, error) {
	if len(public) != 32 {
		return nil, fmt.Errorf("secure: X25519 public key of %d bytes", len(public))
	}
	if len(private) == 0 {
		shared, err := d.static.DH([32]byte(public))
		return shared[:], err
	}
	k := d.ephemeral
	if k == nil || subtle.ConstantTimeCompare(private, k.Bytes()) != 1 {
		var err error
		if k, err = ecdh.X25519().NewPrivateKey(private); err != nil {
			return nil, err
		}
	}
	pub, err := ecdh.X25519().NewPublicKey(public)
	if err != nil {
		return nil, err
	}
	return k.ECDH(pub) // fails on a low-order point
}

func (*vaultDH) DHLen() int     { return 32 }
func (*vaultDH) DHName() string { return "25519" }
