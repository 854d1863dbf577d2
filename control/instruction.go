package control

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// An instruction, docs/PROTOCOL.md, section 17.1 (integers big-endian):
//
//	u8     version = 1
//	u8     kind, 1..255 (1 config, 2 artifact, 3 command; others parse and
//	       are refused by Verify as an unknown kind)
//	[16]   instruction id (random)
//	[32]   operator identity key (Ed25519, section 1's rule)
//	u16    credential length c, 1..MaxCredentialSize
//	[c]    the operator's credential (section 4)
//	u64    sequence number, >= 1, per operator
//	u64    issued at (Unix seconds)
//	u64    expires at, > issued at, <= issued at + MaxLifetime
//	u8     target type: 1 device, 2 selector
//	       1: [32] device identifier
//	       2: u8 n (1..MaxSelectorAttributes),
//	          n × { u8 key length (1..64), key, u8 value length (0..255), value }
//	          keys strictly ascending bytewise
//	u32    payload length p, 0..MaxPayloadSize
//	[p]    payload (its form depends on the kind, section 17.3)
//	[64]   Ed25519 signature by the operator identity key over
//	       instructionContext followed by every byte above
//
// Fields come in this fixed order, each once: there is no unknown or
// repeated field to accept. The encoding is canonical.
const (
	// IDSize is the size of an instruction id.
	IDSize = 16
	// MaxPayloadSize bounds the payload: an instruction fits one transport
	// message (65519 bytes, section 9) with room to spare.
	MaxPayloadSize = 32 << 10
	// MaxSelectorAttributes bounds the attributes of a selector.
	MaxSelectorAttributes = 8
	// MaxLifetime bounds expires at − issued at: how long a gateway keeps an
	// instruction pending, and how long a replay could matter to a device
	// that lost its sequence store.
	MaxLifetime = 30 * 24 * time.Hour
	// MaxInstructionSize is the largest encoding: every field at its bound.
	// Parse refuses anything larger (ErrTooLarge) before it decodes.
	MaxInstructionSize = 1 + 1 + IDSize + ed25519.PublicKeySize + 2 + secure.MaxCredentialSize + 8 + 8 + 8 +
		1 + 1 + MaxSelectorAttributes*(1+secure.MaxAttributeKey+1+secure.MaxAttributeValue) +
		4 + MaxPayloadSize + ed25519.SignatureSize

	instructionVersion = 1
	instructionContext = "telegraf-ockam instruction v1\x00"

	targetDevice   = 1
	targetSelector = 2
)

// Errors of Parse and Sign; test with errors.Is.
var (
	// ErrMalformed: the encoding is not well formed or not canonical.
	ErrMalformed = errors.New("control: malformed instruction")
	// ErrTooLarge: the instruction or its payload is over its bound.
	ErrTooLarge = errors.New("control: instruction too large")
)

// Kind says what an instruction asks the device to do.
type Kind uint8

// The kinds of version 1. Any other value parses, and a Verifier refuses it
// (RefusedUnknownKind): a device of today refuses the kinds of tomorrow.
const (
	// KindConfig: write a Telegraf configuration fragment (section 17.3).
	KindConfig Kind = 1
	// KindArtifact: stage a software artifact signed by a release identity.
	KindArtifact Kind = 2
	// KindCommand: run a named action with the payload.
	KindCommand Kind = 3
)

var kindNames = map[Kind]string{KindConfig: "config", KindArtifact: "artifact", KindCommand: "command"}

// String returns "config", "artifact", "command", or "kind(N)".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Known reports whether k is a kind of version 1.
func (k Kind) Known() bool { _, ok := kindNames[k]; return ok }

// ParseKind reads "config", "artifact" or "command".
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if name == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("control: unknown kind %q: want config, artifact or command", s)
}

// ID identifies one instruction, in outcomes and logs.
type ID [IDSize]byte

// String returns the id in hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Target is whom an instruction is for: one device (Device set), or every
// device whose credential has all the attributes of Selector.
type Target struct {
	Device   secure.Identifier
	Selector map[string]string // callers must not modify it
}

// ParseTarget reads a device identifier ("I" and 64 hex digits) or a
// selector "key=value[,key=value...]".
func ParseTarget(s string) (Target, error) {
	if strings.HasPrefix(s, "I") && !strings.Contains(s, "=") {
		id, err := secure.ParseIdentifier(s)
		if err != nil {
			return Target{}, fmt.Errorf("control: target %q: %w", s, err)
		}
		return Target{Device: id}, nil
	}
	sel := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return Target{}, fmt.Errorf("control: selector %q: want key=value[,key=value...]", s)
		}
		if _, dup := sel[k]; dup {
			return Target{}, fmt.Errorf("control: selector %q: key %q twice", s, k)
		}
		sel[k] = v
	}
	t := Target{Selector: sel}
	if err := t.check(); err != nil {
		return Target{}, err
	}
	return t, nil
}

// check checks the bounds of a target.
func (t Target) check() error {
	if t.Selector == nil {
		if t.Device.IsZero() {
			return fmt.Errorf("%w: no target", ErrMalformed)
		}
		return nil
	}
	if !t.Device.IsZero() {
		return fmt.Errorf("%w: a target is a device or a selector, not both", ErrMalformed)
	}
	if len(t.Selector) == 0 || len(t.Selector) > MaxSelectorAttributes {
		return fmt.Errorf("%w: selector of %d attributes, want 1 to %d", ErrMalformed, len(t.Selector), MaxSelectorAttributes)
	}
	if err := secure.CheckAttributes(t.Selector); err != nil {
		return fmt.Errorf("%w: selector: %v", ErrMalformed, err)
	}
	return nil
}

// Matches reports whether a device with this identifier and these
// (verified) credential attributes is targeted.
func (t Target) Matches(device secure.Identifier, attrs map[string]string) bool {
	if t.Selector == nil {
		return t.Device.Equal(device)
	}
	return hasAll(attrs, t.Selector)
}

// String returns the form ParseTarget reads.
func (t Target) String() string {
	if t.Selector == nil {
		return t.Device.String()
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(t.Selector)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + t.Selector[k])
	}
	return b.String()
}

// Template is what an operator decides; Sign adds the id, the key, the
// credential and the signature.
type Template struct {
	Kind     Kind
	Target   Target
	Sequence uint64        // >= 1, above every sequence this operator used
	IssuedAt time.Time     // truncated to the second
	Lifetime time.Duration // 1 s .. MaxLifetime
	Payload  []byte        // at most MaxPayloadSize bytes
}

// Instruction is a parsed or signed instruction. Parsing checks its form
// only; a Verifier checks the signature, the credential and the rest.
type Instruction struct {
	ID          ID
	Kind        Kind
	OperatorKey ed25519.PublicKey
	Credential  *secure.Credential
	Sequence    uint64
	IssuedAt    time.Time
	ExpiresAt   time.Time
	Target      Target
	Payload     []byte // callers must not modify it

	raw []byte // the whole encoding, signature last
}

// Operator returns the identifier of the signing identity key.
func (in *Instruction) Operator() secure.Identifier { return secure.IdentifierOf(in.OperatorKey) }

// Sign makes an instruction from t, signed by the operator's identity key
// (signer), carrying the operator's credential, whose subject must be that
// identity. random supplies the instruction id (nil: crypto/rand).
func Sign(signer vault.Signer, credential *secure.Credential, t Template, random io.Reader) (*Instruction, error) {
	key := signer.Public()
	if !credential.Subject.Equal(secure.IdentifierOf(key)) {
		return nil, fmt.Errorf("control: the credential is of %s, not of the signing identity %s",
			credential.Subject.Short(), secure.IdentifierOf(key).Short())
	}
	if t.Kind == 0 {
		return nil, fmt.Errorf("%w: kind 0", ErrMalformed)
	}
	if t.Sequence == 0 {
		return nil, fmt.Errorf("%w: sequence 0: sequences start at 1", ErrMalformed)
	}
	if len(t.Payload) > MaxPayloadSize {
		return nil, fmt.Errorf("%w: payload of %d bytes, at most %d", ErrTooLarge, len(t.Payload), MaxPayloadSize)
	}
	if err := t.Target.check(); err != nil {
		return nil, err
	}
	issued := t.IssuedAt.Truncate(time.Second).UTC()
	expires := issued.Add(t.Lifetime).Truncate(time.Second)
	if !expires.After(issued) || expires.Sub(issued) > MaxLifetime {
		return nil, fmt.Errorf("%w: lifetime %v: want 1s to %v", ErrMalformed, t.Lifetime, MaxLifetime)
	}
	if random == nil {
		random = rand.Reader
	}
	in := &Instruction{
		Kind:        t.Kind,
		OperatorKey: append(ed25519.PublicKey(nil), key...),
		Credential:  credential,
		Sequence:    t.Sequence,
		IssuedAt:    issued,
		ExpiresAt:   expires,
		Target:      Target{Device: t.Target.Device, Selector: maps.Clone(t.Target.Selector)},
		Payload:     slices.Clone(t.Payload),
	}
	if _, err := io.ReadFull(random, in.ID[:]); err != nil {
		return nil, fmt.Errorf("control: instruction id: %w", err)
	}
	body := in.appendBody(nil)
	sig, err := secure.SignBody(signer, instructionContext, body, "instruction")
	if err != nil {
		return nil, err
	}
	in.raw = append(body, sig...)
	return in, nil
}

// appendBody appends the signed part of the encoding to b.
func (in *Instruction) appendBody(b []byte) []byte {
	cred := in.Credential.Marshal()
	b = append(b, instructionVersion, byte(in.Kind))
	b = append(b, in.ID[:]...)
	b = append(b, in.OperatorKey...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(cred)))
	b = append(b, cred...)
	b = binary.BigEndian.AppendUint64(b, in.Sequence)
	b = binary.BigEndian.AppendUint64(b, secure.UnixSeconds(in.IssuedAt))
	b = binary.BigEndian.AppendUint64(b, secure.UnixSeconds(in.ExpiresAt))
	if in.Target.Selector == nil {
		b = append(b, targetDevice)
		b = append(b, in.Target.Device[:]...)
	} else {
		keys := slices.Sorted(maps.Keys(in.Target.Selector))
		b = append(b, targetSelector, byte(len(keys)))
		for _, k := range keys {
			b = append(b, byte(len(k)))
			b = append(b, k...)
			b = append(b, byte(len(in.Target.Selector[k])))
			b = append(b, in.Target.Selector[k]...)
		}
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(in.Payload)))
	return append(b, in.Payload...)
}

// Parse decodes an instruction strictly: its size first (ErrTooLarge), then
// exact lengths, the identity key rule, a well-formed credential, sorted
// unique selector keys and no trailing bytes (ErrMalformed). It does not
// check the signature: Verifier.Verify does, before it trusts any field.
func Parse(b []byte) (*Instruction, error) {
	if len(b) > MaxInstructionSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(b), MaxInstructionSize)
	}
	s := cryptobyte.String(b)
	in := &Instruction{}
	var version, kind, targetType uint8
	var key, cred, payload cryptobyte.String
	var issued, expires uint64
	if !s.ReadUint8(&version) || version != instructionVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformed, version, instructionVersion)
	}
	if !s.ReadUint8(&kind) || kind == 0 {
		return nil, fmt.Errorf("%w: kind 0", ErrMalformed)
	}
	in.Kind = Kind(kind)
	if !s.CopyBytes(in.ID[:]) || !s.ReadBytes((*[]byte)(&key), ed25519.PublicKeySize) ||
		!s.ReadUint16LengthPrefixed(&cred) {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	in.OperatorKey = ed25519.PublicKey(slices.Clone(key))
	if err := secure.CheckIdentityKey(in.OperatorKey); err != nil {
		return nil, fmt.Errorf("%w: operator key: %v", ErrMalformed, err)
	}
	c, err := secure.ParseCredential(cred)
	if err != nil {
		return nil, fmt.Errorf("%w: operator credential: %v", ErrMalformed, err)
	}
	in.Credential = c
	if !s.ReadUint64(&in.Sequence) || !s.ReadUint64(&issued) || !s.ReadUint64(&expires) || !s.ReadUint8(&targetType) {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	if in.Sequence == 0 {
		return nil, fmt.Errorf("%w: sequence 0", ErrMalformed)
	}
	if issued > secure.MaxUnixSeconds || expires > secure.MaxUnixSeconds || expires <= issued ||
		expires-issued > uint64(MaxLifetime/time.Second) {
		return nil, fmt.Errorf("%w: validity [%d, %d]", ErrMalformed, issued, expires)
	}
	in.IssuedAt = time.Unix(int64(issued), 0).UTC()
	in.ExpiresAt = time.Unix(int64(expires), 0).UTC()
	if in.Target, err = readTarget(&s, targetType); err != nil {
		return nil, err
	}
	var n uint32
	if !s.ReadUint32(&n) {
		return nil, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	if n > MaxPayloadSize {
		return nil, fmt.Errorf("%w: payload of %d bytes, at most %d", ErrTooLarge, n, MaxPayloadSize)
	}
	if !s.ReadBytes((*[]byte)(&payload), int(n)) {
		return nil, fmt.Errorf("%w: payload truncated", ErrMalformed)
	}
	in.Payload = slices.Clone(payload)
	if len(s) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes, want %d", ErrMalformed, len(s), ed25519.SignatureSize)
	}
	in.raw = slices.Clone(b)
	return in, nil
}

// readTarget reads the target of type typ.
func readTarget(s *cryptobyte.String, typ uint8) (Target, error) {
	var t Target
	switch typ {
	case targetDevice:
		if !s.CopyBytes(t.Device[:]) {
			return t, fmt.Errorf("%w: truncated", ErrMalformed)
		}
		if t.Device.IsZero() {
			return t, fmt.Errorf("%w: zero device identifier", ErrMalformed)
		}
		return t, nil
	case targetSelector:
		var n uint8
		if !s.ReadUint8(&n) || n == 0 || n > MaxSelectorAttributes {
			return t, fmt.Errorf("%w: selector of %d attributes, want 1 to %d", ErrMalformed, n, MaxSelectorAttributes)
		}
		t.Selector = make(map[string]string, n)
		prev := ""
		for i := range int(n) {
			var k, v cryptobyte.String
			if !s.ReadUint8LengthPrefixed(&k) || !s.ReadUint8LengthPrefixed(&v) {
				return t, fmt.Errorf("%w: selector truncated", ErrMalformed)
			}
			key := string(k)
			if i > 0 && key <= prev {
				return t, fmt.Errorf("%w: selector keys not strictly ascending at %q", ErrMalformed, key)
			}
			t.Selector[key] = string(v)
			prev = key
		}
		if err := secure.CheckAttributes(t.Selector); err != nil {
			return t, fmt.Errorf("%w: selector: %v", ErrMalformed, err)
		}
		return t, nil
	}
	return t, fmt.Errorf("%w: target type %d", ErrMalformed, typ)
}

// Marshal returns the binary encoding (a copy).
func (in *Instruction) Marshal() []byte { return slices.Clone(in.raw) }

// CheckSignature checks the signature with the operator key the
// instruction carries (secure.ErrBadSignature). It says nothing of who the
// operator is: Verifier.Verify checks the credential too.
func (in *Instruction) CheckSignature() error {
	msg, sig := in.signed()
	if !ed25519.Verify(in.OperatorKey, msg, sig) {
		return fmt.Errorf("instruction of operator %s: %w", in.Operator().Short(), secure.ErrBadSignature)
	}
	return nil
}

// signed returns the signed message and the signature.
func (in *Instruction) signed() (message, sig []byte) {
	body := in.raw[:len(in.raw)-ed25519.SignatureSize]
	return secure.SignedMessage(instructionContext, body), in.raw[len(body):]
}
