package authority

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults of the service's per-address limits (docs/SECURITY.md W23,
// consistent with the listener's W1 and the relay's W8).
const (
	// DefaultMaxConnectionsPerIP bounds the connections open from one
	// address: one host cannot take the DefaultMaxConnections slots that
	// every device and listener share. A device's enrollment and a
	// listener's revocation fetch each hold one connection for a moment.
	DefaultMaxConnectionsPerIP = 256
	// DefaultFirstRequestTimeout closes a connection whose first request
	// has not arrived in full by then (the service's handshake timeout):
	// a client that connects has its request ready.
	DefaultFirstRequestTimeout = 10 * time.Second
	// DefaultBundleBurst and DefaultBundleInterval rate-limit the one-time
	// prekeys one address gets with its bundles: DefaultBundleBurst at once,
	// then one per DefaultBundleInterval; its other bundles carry none. The
	// pool holds DefaultMaxOneTimePrekeys, each kept DefaultOneTimePrekeyTTL:
	// one address takes at most 3,660 an hour, under 4% of it.
	DefaultBundleBurst    = 60
	DefaultBundleInterval = time.Second

	// maxLimitedAddresses bounds the addresses the bundle limiter
	// remembers; past it, the full buckets are forgotten, then all.
	maxLimitedAddresses = 1 << 16
	// warnInterval spaces the warnings of one kind.
	warnInterval = time.Minute
)

// sourceOf returns what a connection from a counts against: its IPv4
// address, or the /64 of its IPv6 address (one host commonly holds a whole
// /64), as the listener does. A non-IP address is not limited: the zero
// Prefix.
func sourceOf(a net.Addr) netip.Prefix {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Prefix{}
	}
	ip := ap.Addr().Unmap().WithZone("")
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

// perSource counts the connections open from each source against max. It
// is safe for concurrent use.
type perSource struct {
	mu    sync.Mutex
	max   int
	count map[netip.Prefix]int
}

// acquire takes a slot of src; false if src holds max already.
func (p *perSource) acquire(src netip.Prefix) bool {
	if !src.IsValid() {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count[src] >= p.max {
		return false
	}
	if p.count == nil {
		p.count = map[netip.Prefix]int{}
	}
	p.count[src]++
	return true
}

// release gives back a slot acquire took.
func (p *perSource) release(src netip.Prefix) {
	if !src.IsValid() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count[src] <= 1 {
		delete(p.count, src)
		return
	}
	p.count[src]--
}

// rateLimit is a token bucket per source: burst at once, then one per
// interval. It is safe for concurrent use.
type rateLimit struct {
	mu       sync.Mutex
	burst    float64
	interval time.Duration
	buckets  map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// allow takes a token of src at now, if it has one.
func (r *rateLimit) allow(src netip.Prefix, now time.Time) bool {
	if !src.IsValid() {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[src]
	if b == nil {
		if len(r.buckets) >= maxLimitedAddresses {
			r.forget(now)
		}
		if r.buckets == nil {
			r.buckets = map[netip.Prefix]*bucket{}
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[src] = b
	}
	r.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *rateLimit) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(r.burst, b.tokens+float64(elapsed)/float64(r.interval))
		b.at = now
	}
}

// forget drops the full buckets (they hold nothing a new bucket would not),
// and if that frees nothing, every bucket: memory stays bounded whatever
// the number of addresses, at the price of a fresh burst for each.
func (r *rateLimit) forget(now time.Time) {
	for src, b := range r.buckets {
		if r.refill(b, now); b.tokens >= r.burst {
			delete(r.buckets, src)
		}
	}
	if len(r.buckets) >= maxLimitedAddresses {
		clear(r.buckets)
	}
}

// warnings spaces the warnings of each kind to one per warnInterval and
// counts the ones it held back, so that a flood cannot flood the log.
type warnings struct {
	mu   sync.Mutex
	last map[string]time.Time
	held map[string]int
}

// allow reports whether a warning of kind may be logged at now, and how
// many of that kind were held back since the last one.
func (w *warnings) allow(kind string, now time.Time) (ok bool, held int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last, w.held = map[string]time.Time{}, map[string]int{}
	}
	if last, seen := w.last[kind]; seen && now.Sub(last) < warnInterval {
		w.held[kind]++
		return false, 0
	}
	w.last[kind] = now
	held = w.held[kind]
	w.held[kind] = 0
	return true, held
}
