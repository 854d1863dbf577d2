package secure

import (
	"container/list"
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
// check are added; the least recently used entry goes when the cache is
// full (docs/PROTOCOL.md section 7, rule 7; docs/SECURITY.md, attack 10).
const (
	// maxVerified bounds the cache: about 150 bytes an entry, 10 MiB at
	// most, room for a fleet of 65,536 devices reconnecting at once.
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

// verifiedCache is a bounded LRU set of verified payloads. It is safe for
// concurrent use.
type verifiedCache struct {
	mu      sync.Mutex
	max     int
	entries map[verifiedKey]*list.Element // of *verifiedEntry
	order   list.List                     // most recently used first
}

type verifiedEntry struct {
	key        verifiedKey
	generation uint64    // of the revocation state checked
	until      time.Time // the earlier expiry of attestation and credential
}

func newVerifiedCache(max int) *verifiedCache {
	return &verifiedCache{max: max, entries: make(map[verifiedKey]*list.Element)}
}

// contains reports whether k was verified under the revocation state of
// generation and is still before its expiry at now. A stale entry is
// removed.
func (c *verifiedCache) contains(k verifiedKey, generation uint64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return false
	}
	e := el.Value.(*verifiedEntry)
	if e.generation != generation || !now.Before(e.until) {
		c.order.Remove(el)
		delete(c.entries, k)
		return false
	}
	c.order.MoveToFront(el)
	return true
}

// add records k as verified under generation until until, evicting the
// least recently used entry if the cache is full.
func (c *verifiedCache) add(k verifiedKey, generation uint64, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*verifiedEntry)
		e.generation, e.until = generation, until
		c.order.MoveToFront(el)
		return
	}
	c.entries[k] = c.order.PushFront(&verifiedEntry{key: k, generation: generation, until: until})
	for len(c.entries) > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.entries, oldest.Value.(*verifiedEntry).key)
	}
}

// len returns the number of entries.
func (c *verifiedCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
