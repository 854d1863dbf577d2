package authority

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// onlinePrekeys are the one-time prekeys of the bundles the service hands
// out: in memory only, so that fetching a bundle (which anyone may do)
// writes nothing to disk. Each is taken by the first request that uses a
// token with it (one that does not decrypt, or whose token the store
// refuses, cannot burn it: Authority.redeem gives it back), and is then
// kept as used until it expires, so that a replay is refused as such
// (enroll.ErrPrekeyUsed).
// After a restart they are gone: a device holding one is refused with
// enroll.ErrUnknownPrekey and fetches a new bundle. It is safe for
// concurrent use.
type onlinePrekeys struct {
	mu     sync.Mutex
	keys   map[[32]byte]*onlinePrekey
	unused int
}

type onlinePrekey struct {
	dh      vault.DH // nil once taken
	expires time.Time
}

// add makes a new prekey valid until expires, unless max unused ones are
// outstanding already.
func (p *onlinePrekeys) add(expires time.Time, max int) ([32]byte, bool) {
	var scalar [32]byte
	rand.Read(scalar[:])                // never fails (Go 1.24+)
	dh := vault.NewDHFromScalar(scalar) // clears scalar
	pub := dh.PublicKey()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unused >= max {
		return pub, false
	}
	if p.keys == nil {
		p.keys = map[[32]byte]*onlinePrekey{}
	}
	p.keys[pub] = &onlinePrekey{dh: dh, expires: expires}
	p.unused++
	return pub, true
}

// peek returns the unused prekey pub; found is false if it is not one of
// these (it may be in the store).
func (p *onlinePrekeys) peek(pub [32]byte, now time.Time) (dh vault.DH, found bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.keys[pub]
	switch {
	case !ok:
		return nil, false, nil
	case k.dh == nil:
		return nil, true, enroll.ErrPrekeyUsed
	case !now.Before(k.expires):
		return nil, true, fmt.Errorf("one-time prekey expired at %s: %w", k.expires.Format(time.RFC3339), secure.ErrExpired)
	}
	return k.dh, true, nil
}

// take marks the prekey pub used and returns its key, for restore. Of
// requests racing with one prekey, exactly one takes it; the others get
// enroll.ErrPrekeyUsed.
func (p *onlinePrekeys) take(pub [32]byte) (vault.DH, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k, ok := p.keys[pub]
	if !ok || k.dh == nil {
		return nil, enroll.ErrPrekeyUsed
	}
	dh := k.dh
	k.dh = nil
	p.unused--
	return dh, nil
}

// restore gives back a prekey that take took, for a request the store then
// refused. A prekey purged meanwhile stays gone.
func (p *onlinePrekeys) restore(pub [32]byte, dh vault.DH) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if k, ok := p.keys[pub]; ok && k.dh == nil {
		k.dh = dh
		p.unused++
	}
}

// purge forgets the prekeys that expired before now, used or not.
func (p *onlinePrekeys) purge(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pub, k := range p.keys {
		if !now.Before(k.expires) {
			if k.dh != nil {
				p.unused--
			}
			delete(p.keys, pub)
		}
	}
}
