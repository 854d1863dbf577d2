package control

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The payloads of the kinds, docs/PROTOCOL.md, section 17.3:
//
//	config    u8 name length (1..64) | name | fragment (the rest: UTF-8 TOML;
//	          empty: remove the fragment of that name)
//	command   u8 name length (1..64) | name | argument (the rest, any bytes)
//	artifact  a manifest, exactly ManifestSize bytes:
//	          u8 name length (1..64) | name, zero-padded to 64 bytes |
//	          u64 size (1..MaxArtifactSize) | [32] SHA-256 of the artifact |
//	          [32] release identifier | [64] Ed25519 signature by the release
//	          identity key over artifactContext || the bytes before it
//
// A name is 1 to 64 bytes of [A-Za-z0-9_.-] whose first byte is a letter or
// a digit: it is never "." or "..", holds no "/", and so names a file in one
// directory and nothing outside it.
const (
	// MaxNameSize bounds a config, command or artifact name.
	MaxNameSize = 64
	// MaxArtifactSize bounds an artifact: 1 GiB.
	MaxArtifactSize = 1 << 30
	// ManifestSize is the exact size of an artifact manifest.
	ManifestSize = 1 + MaxNameSize + 8 + sha256.Size + secure.IdentifierSize + ed25519.SignatureSize

	artifactContext = "telegraf-ockam artifact v1\x00"
)

// CheckName checks a config, command or artifact name (ErrMalformed).
func CheckName(name string) error {
	if len(name) == 0 || len(name) > MaxNameSize {
		return fmt.Errorf("%w: name %q: want 1 to %d bytes", ErrMalformed, name, MaxNameSize)
	}
	for i, r := range name {
		alnum := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
		if !alnum && (i == 0 || r != '_' && r != '.' && r != '-') {
			return fmt.Errorf("%w: name %q: want letters, digits, '_', '.' and '-', starting with a letter or digit", ErrMalformed, name)
		}
	}
	return nil
}

// Named is the payload of a config or command instruction: a name and the
// bytes that go with it (the fragment, the argument).
type Named struct {
	Name string
	Data []byte
}

// MarshalNamed encodes a config or command payload.
func MarshalNamed(name string, data []byte) ([]byte, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	return append(append([]byte{byte(len(name))}, name...), data...), nil
}

// ParseNamed decodes a config or command payload (ErrMalformed).
func ParseNamed(b []byte) (Named, error) {
	s := cryptobyte.String(b)
	var name cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&name) {
		return Named{}, fmt.Errorf("%w: payload name truncated", ErrMalformed)
	}
	if err := CheckName(string(name)); err != nil {
		return Named{}, err
	}
	return Named{Name: string(name), Data: slices.Clone([]byte(s))}, nil
}

// Manifest describes an artifact, signed by a release identity: the
// operator's instruction carries it; the bytes come in chunks.
type Manifest struct {
	Name    string
	Size    uint64
	Digest  [sha256.Size]byte
	Release secure.Identifier

	raw []byte
}

// SignManifest signs the manifest of an artifact with the release
// identity's key.
func SignManifest(release vault.Signer, name string, size uint64, digest [sha256.Size]byte) (*Manifest, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if size == 0 || size > MaxArtifactSize {
		return nil, fmt.Errorf("%w: artifact of %d bytes, want 1 to %d", ErrMalformed, size, MaxArtifactSize)
	}
	m := &Manifest{Name: name, Size: size, Digest: digest, Release: secure.IdentifierOf(release.Public())}
	body := m.appendBody(nil)
	sig, err := secure.SignBody(release, artifactContext, body, "artifact manifest")
	if err != nil {
		return nil, err
	}
	m.raw = append(body, sig...)
	return m, nil
}

// appendBody appends the signed part of the manifest to b.
func (m *Manifest) appendBody(b []byte) []byte {
	var name [MaxNameSize]byte
	copy(name[:], m.Name)
	b = append(b, byte(len(m.Name)))
	b = append(b, name[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Size)
	b = append(b, m.Digest[:]...)
	return append(b, m.Release[:]...)
}

// ParseManifest decodes a manifest strictly (ErrMalformed): the exact size,
// a valid name with zero padding, a size in bounds. It does not check the
// signature: VerifyManifest does.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) != ManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes, want %d", ErrMalformed, len(b), ManifestSize)
	}
	n := int(b[0])
	if n == 0 || n > MaxNameSize {
		return nil, fmt.Errorf("%w: manifest name of %d bytes", ErrMalformed, n)
	}
	name, pad := b[1:1+n], b[1+n:1+MaxNameSize]
	if err := CheckName(string(name)); err != nil {
		return nil, err
	}
	for _, c := range pad {
		if c != 0 {
			return nil, fmt.Errorf("%w: manifest name padding is not zero", ErrMalformed)
		}
	}
	m := &Manifest{Name: string(name), raw: slices.Clone(b)}
	rest := b[1+MaxNameSize:]
	m.Size = binary.BigEndian.Uint64(rest)
	copy(m.Digest[:], rest[8:])
	copy(m.Release[:], rest[8+sha256.Size:])
	if m.Size == 0 || m.Size > MaxArtifactSize {
		return nil, fmt.Errorf("%w: artifact of %d bytes, want 1 to %d", ErrMalformed, m.Size, MaxArtifactSize)
	}
	return m, nil
}

// Marshal returns the encoding (a copy).
func (m *Manifest) Marshal() []byte { return slices.Clone(m.raw) }

// VerifyManifest checks that m is signed by one of the release identities
// (secure.ErrUnknownIssuer, secure.ErrBadSignature).
func VerifyManifest(m *Manifest, releases ...*secure.Identity) error {
	for _, r := range releases {
		if !r.Identifier().Equal(m.Release) {
			continue
		}
		body := m.raw[:len(m.raw)-ed25519.SignatureSize]
		if !ed25519.Verify(r.Key(), secure.SignedMessage(artifactContext, body), m.raw[len(body):]) {
			return fmt.Errorf("artifact manifest %q: %w", m.Name, secure.ErrBadSignature)
		}
		return nil
	}
	return fmt.Errorf("artifact manifest %q signed by %s, not a release identity of this device: %w",
		m.Name, m.Release.Short(), secure.ErrUnknownIssuer)
}
