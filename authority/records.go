package authority

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// The values of the store's buckets (docs/PROTOCOL.md, "Authority store").
// All integers big-endian, times in Unix seconds.
//
// tokens/<token hash (32)>:
//
//	u8    state: 1 unused, 2 used
//	u64   expires
//	u64   credential lifetime in seconds (>= 1)
//	u8    n attributes, n × { u8 key length | key | u8 value length | value }, keys strictly ascending
//	[16]  credential id (state 2 only)
//
// prekeys/<one-time prekey (32)>:
//
//	u8    state: 1 unused, 2 used
//	u64   expires
//	[32]  X25519 private scalar (state 1 only)
//
// credentials/<credential id (16)>: [32] token hash | credential
const (
	stateUnused = 1
	stateUsed   = 2

	// maxTokenRecord bounds a token record: every attribute at its bounds.
	maxTokenRecord = 1 + 8 + 8 + 1 +
		secure.MaxAttributes*(1+secure.MaxAttributeKey+1+secure.MaxAttributeValue) + secure.CredentialIDSize
	prekeyRecordUnused = 1 + 8 + 32
	prekeyRecordUsed   = 1 + 8
)

// maxUnix is the largest time the records hold (year 9999), as in secure.
const maxUnix = 253402300799

// maxLifetime is the longest credential lifetime in seconds: the largest
// time.Duration (about 292 years).
const maxLifetime = uint64(math.MaxInt64 / int64(time.Second))

// TokenSpec is what a token grants: the attributes of the credential, how
// long the credential is valid, and until when the token can be used.
type TokenSpec struct {
	Attributes    map[string]string
	Expires       time.Time     // the token's expiry
	CredentialTTL time.Duration // the credential's lifetime, from enrollment
}

// check validates a spec before anything is stored.
func (s TokenSpec) check() error {
	if s.CredentialTTL < time.Second {
		return fmt.Errorf("authority: credential lifetime %v is shorter than a second", s.CredentialTTL)
	}
	if s.Expires.Unix() <= 0 || s.Expires.Unix() > maxUnix {
		return fmt.Errorf("authority: token expiry %s out of range", s.Expires.Format(time.RFC3339))
	}
	return secure.CheckAttributes(s.Attributes)
}

// tokenRecord is a decoded token record.
type tokenRecord struct {
	spec   TokenSpec
	used   bool
	credID secure.CredentialID // when used
}

// appendTokenRecord encodes r.
func appendTokenRecord(b []byte, r tokenRecord) []byte {
	state := byte(stateUnused)
	if r.used {
		state = stateUsed
	}
	b = append(b, state)
	b = binary.BigEndian.AppendUint64(b, uint64(r.spec.Expires.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.spec.CredentialTTL/time.Second))
	b = appendAttributes(b, r.spec.Attributes)
	if r.used {
		b = append(b, r.credID[:]...)
	}
	return b
}

// appendAttributes encodes attributes as a credential does.
func appendAttributes(b []byte, attrs map[string]string) []byte {
	keys := slices.Sorted(maps.Keys(attrs))
	b = append(b, byte(len(keys)))
	for _, k := range keys {
		b = append(b, byte(len(k)))
		b = append(b, k...)
		b = append(b, byte(len(attrs[k])))
		b = append(b, attrs[k]...)
	}
	return b
}

// parseTokenRecord decodes a token record strictly.
func parseTokenRecord(b []byte) (tokenRecord, error) {
	var r tokenRecord
	if len(b) > maxTokenRecord {
		return r, fmt.Errorf("%w: token record of %d bytes", secure.ErrMalformed, len(b))
	}
	s := cryptobyte.String(b)
	var state uint8
	var expires, ttl uint64
	if !s.ReadUint8(&state) || !s.ReadUint64(&expires) || !s.ReadUint64(&ttl) {
		return r, fmt.Errorf("%w: token record truncated", secure.ErrMalformed)
	}
	if (state != stateUnused && state != stateUsed) || expires == 0 || expires > maxUnix ||
		ttl == 0 || ttl > maxLifetime {
		return r, fmt.Errorf("%w: token record state %d, expires %d, lifetime %d", secure.ErrMalformed, state, expires, ttl)
	}
	attrs, err := readAttributes(&s)
	if err != nil {
		return r, err
	}
	r.spec = TokenSpec{Attributes: attrs, Expires: time.Unix(int64(expires), 0).UTC(), CredentialTTL: time.Duration(ttl) * time.Second}
	if r.used = state == stateUsed; r.used && !s.CopyBytes(r.credID[:]) {
		return r, fmt.Errorf("%w: used token record without a credential id", secure.ErrMalformed)
	}
	if !s.Empty() {
		return r, fmt.Errorf("%w: token record with %d trailing bytes", secure.ErrMalformed, len(s))
	}
	return r, nil
}

// readAttributes reads a count and the attributes, strictly ascending.
func readAttributes(s *cryptobyte.String) (map[string]string, error) {
	var n uint8
	if !s.ReadUint8(&n) || n > secure.MaxAttributes {
		return nil, fmt.Errorf("%w: attribute count", secure.ErrMalformed)
	}
	attrs := make(map[string]string, n)
	prev := ""
	for i := range int(n) {
		var k, v cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&k) || !s.ReadUint8LengthPrefixed(&v) {
			return nil, fmt.Errorf("%w: attribute %d truncated", secure.ErrMalformed, i)
		}
		if i > 0 && string(k) <= prev {
			return nil, fmt.Errorf("%w: attribute keys not strictly ascending", secure.ErrMalformed)
		}
		prev = string(k)
		attrs[prev] = string(v)
	}
	if err := secure.CheckAttributes(attrs); err != nil {
		return nil, err
	}
	return attrs, nil
}

// prekeyRecord is a decoded one-time prekey record.
type prekeyRecord struct {
	expires time.Time
	used    bool
	scalar  [32]byte // unused only; the caller clears it after use
}

// appendPrekeyRecord encodes r; a used record keeps no scalar.
func appendPrekeyRecord(b []byte, r prekeyRecord) []byte {
	if r.used {
		b = append(b, stateUsed)
		return binary.BigEndian.AppendUint64(b, uint64(r.expires.Unix()))
	}
	b = append(b, stateUnused)
	b = binary.BigEndian.AppendUint64(b, uint64(r.expires.Unix()))
	return append(b, r.scalar[:]...)
}

// parsePrekeyRecord decodes a prekey record strictly.
func parsePrekeyRecord(b []byte) (prekeyRecord, error) {
	var r prekeyRecord
	if len(b) != prekeyRecordUnused && len(b) != prekeyRecordUsed {
		return r, fmt.Errorf("%w: prekey record of %d bytes", secure.ErrMalformed, len(b))
	}
	expires := binary.BigEndian.Uint64(b[1:9])
	switch {
	case expires == 0 || expires > maxUnix:
		return r, fmt.Errorf("%w: prekey record expires %d", secure.ErrMalformed, expires)
	case b[0] == stateUnused && len(b) == prekeyRecordUnused:
		copy(r.scalar[:], b[9:])
	case b[0] == stateUsed && len(b) == prekeyRecordUsed:
		r.used = true
	default:
		return r, fmt.Errorf("%w: prekey record state %d in %d bytes", secure.ErrMalformed, b[0], len(b))
	}
	r.expires = time.Unix(int64(expires), 0).UTC()
	return r, nil
}
