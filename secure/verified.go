package secure

import (
	"crypto/ed25519"
	"crypto/sha256"
	"sync"
	"time"
)

// A device that reconnects presents the same attestation and credential it
// presented before, byte for byte. Their two Ed25519 verifications (and the
// identity key's point decoding) are a third of the listener's handshake
// (docs/BENCHMARKS.md), so a Verifier remembers the payloads that verified,
// by the SHA-256 of
//
//	verifiedContext | issuer's public key (32) | attestation (146) | credential
//
// (the first three parts are of fixed length, so the encoding is
// unambiguous). The cache stands in for the signature checks only: every
// handshake still parses both strictly, compares the attested purpose key
// with the Noise static key, checks both validity periods and the current
// revocation list. An entry is used only while the revocation state is the
// one it was verified under (its generation) and before the earlier expiry
// of the attestation and the credential; only payloads that passed every
// check are added; one entry, not looked up lately, goes when the cache is
// full (docs/PROTOCOL.md section 7, rule 7; docs/SECURITY.md, attack 10).
const (
	// maxVerified bounds the cache: 145 bytes an entry, 9.5 MB at most,
	// room for a fleet of 65,536 devices reconnecting at once.
	maxVerified = 1 << 16

	verifiedContext = "telegraf-ockam verified payload v1\x00"
)

// verifiedKey is the SHA-256 that names one verified payload.
type verifiedKey [sha256.Size]byte

// verifiedDigest returns the key of an attestation and a credential whose
// issuer has the public key issuer.
func verifiedDigest(issuer ed25519.PublicKey, attestation []byte, c *Credential) verifiedKey {
	h := sha256.New()
	h.Write([]byte(verifiedContext))
	h.Write(issuer)
	h.Write(attestation)
	h.Write(c.raw)
	var k verifiedKey
	h.Sum(k[:0])
	return k
}

// verifiedCache is a bounded set of verified payloads, evicted one at a
// time in CLOCK order (second chance: an approximation of least recently
// used that needs one bit per entry instead of a list). It is safe for
// concurrent use. An entry takes 130-145 bytes, the map's and the slice's
// slack included.
type verifiedCache struct {
	mu    sync.Mutex
	max   int
	index map[verifiedKey]int32 // the slot of each key
	slots []verifiedEntry
	hand  int // the next slot the clock looks at when the cache is full
}

type verifiedEntry struct {
	key        verifiedKey
	generation uint64 // of the revocation state checked
	until      int64  // Unix seconds: the earlier expiry of attestation and credential
	used       bool   // looked up since the clock last passed
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, index: make(map[verifiedKey]int32)}
}

// contains reports whether k was verified under the revocation state of
// generation and is still before its expiry at now. A stale entry is
// removed.
func (c *verifiedCache) contains(k verifiedKey, generation uint64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[k]
	if !ok {
		return false
	}
	e := &c.slots[i]
	// until is whole seconds (the encodings' times are), so comparing
	// whole seconds is exact: now < until.
	if e.generation != generation || now.Unix() >= e.until {
		c.remove(int(i))
		return false
	}
	e.used = true
	return true
}

// add records k as verified under generation until until (whole seconds),
// evicting one entry if the cache is full.
func (c *verifiedCache) add(k verifiedKey, generation uint64, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := verifiedEntry{key: k, generation: generation, until: until.Unix()}
	if i, ok := c.index[k]; ok {
		c.slots[i] = e
		return
	}
	if len(c.slots) < c.max {
		c.index[k] = int32(len(c.slots))
		c.slots = append(c.slots, e)
		return
	}
	for c.slots[c.hand].used { // second chance
		c.slots[c.hand].used = false
		c.hand = (c.hand + 1) % len(c.slots)
	}
	delete(c.index, c.slots[c.hand].key)
	c.index[k] = int32(c.hand)
	c.slots[c.hand] = e
	c.hand = (c.hand + 1) % len(c.slots)
}

// remove drops the entry in slot i, moving the last slot into it.
func (c *verifiedCache) remove(i int) {
	last := len(c.slots) - 1
	delete(c.index, c.slots[i].key)
	if i != last {
		c.slots[i] = c.slots[last]
		c.index[c.slots[i].key] = int32(i)
	}
	c.slots = c.slots[:last]
	if c.hand >= len(c.slots) {
		c.hand = 0
	}
}

// len returns the number of entries.
func (c *verifiedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.index)
}
