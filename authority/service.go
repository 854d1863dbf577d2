package authority

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
)

// Defaults of Service.
const (
	DefaultMaxConnections = 4096
	DefaultIdleTimeout    = 30 * time.Second

	writeTimeout        = 10 * time.Second
	maintenanceInterval = 10 * time.Second // signed prekeys: reload, rotate
	purgeInterval       = time.Minute      // expired one-time prekeys
)

// Service serves an Authority to devices and listeners over TCP with the
// service protocol of package authority/wire: bundles, enrollments and the
// revocation list. Set the fields before Serve.
type Service struct {
	Authority      *Authority
	Logger         *slog.Logger  // nil: discard
	MaxConnections int           // 0: DefaultMaxConnections; more are closed at once
	IdleTimeout    time.Duration // 0: DefaultIdleTimeout; a client silent this long is closed
	// MaxConnectionsPerIP bounds the connections of one IPv4 address or
	// IPv6 /64 (0: DefaultMaxConnectionsPerIP); more are closed at once.
	MaxConnectionsPerIP int
	// FirstRequestTimeout closes a connection whose first request has not
	// arrived by then (0: DefaultFirstRequestTimeout).
	FirstRequestTimeout time.Duration
	// BundleBurst and BundleInterval rate-limit the one-time prekeys one
	// address gets with its bundles (0: DefaultBundleBurst,
	// DefaultBundleInterval): over the rate, a bundle goes out without one,
	// so that no one address drains the pool, while a plant of devices
	// behind one NAT address still enrolls (without DH3 for the excess).
	BundleBurst    int
	BundleInterval time.Duration
}

// EnsureRevocationList signs the authority's first revocation list, empty
// (sequence 1), and logs it, if it has none. Parties take only a signed
// answer as "nobody is revoked" (an empty reply is not signed:
// docs/PROTOCOL.md §14.7), so the service always has a list to serve. Serve
// calls it; call it before anything else can revoke (a control socket) for
// the first list to be the empty one.
func (s *Service) EnsureRevocationList() error {
	l, signed, err := s.Authority.ensureRevocationList()
	if err != nil {
		return fmt.Errorf("sign the first revocation list: %w", err)
	}
	if signed && s.Logger != nil {
		s.Logger.Info("signed the first revocation list (empty)", "sequence", l.Sequence)
	}
	return nil
}

// Serve signs the first revocation list if there is none (see
// EnsureRevocationList), then accepts connections on ln until ctx ends, then closes ln and every
// connection and returns once each has finished the request it was
// handling (an enrollment in its store transaction finishes; its answer is
// sent if the client is still there). It also keeps the signed prekeys
// fresh and purges expired one-time prekeys.
func (s *Service) Serve(ctx context.Context, ln net.Listener) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	maxConns := s.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections
	}
	if err := s.EnsureRevocationList(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { s.maintain(ctx, log) })
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	conns := &connSet{m: map[net.Conn]struct{}{}}
	slots := make(chan struct{}, maxConns)
	perIP := &perSource{max: orDefault(s.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)}
	bundles := &rateLimit{burst: float64(orDefault(s.BundleBurst, DefaultBundleBurst)),
		interval: orDefault(s.BundleInterval, DefaultBundleInterval)}
	warn := &warnings{}
	var err error
	for {
		var nc net.Conn
		if nc, err = ln.Accept(); err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				err = nil
				break
			}
			log.Warn("accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		src := sourceOf(nc.RemoteAddr())
		if !perIP.acquire(src) {
			if ok, held := warn.allow("per-ip", time.Now()); ok {
				log.Warn("too many connections from one address; closing its new ones",
					"remote", nc.RemoteAddr().String(), "max_per_ip", perIP.max, "closed_since_last_warning", held)
			}
			nc.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			if ok, held := warn.allow("total", time.Now()); ok {
				log.Warn("too many connections; closing new ones", "remote", nc.RemoteAddr().String(), "max", maxConns,
					"closed_since_last_warning", held)
			}
			perIP.release(src)
			nc.Close()
			continue
		}
		conns.add(nc)
		wg.Go(func() {
			defer func() { <-slots }()
			defer perIP.release(src)
			defer conns.remove(nc)
			timeouts := connTimeouts{first: orDefault(s.FirstRequestTimeout, DefaultFirstRequestTimeout), idle: s.idle()}
			serveConn(ctx, nc, timeouts, wire.ServiceBodyLimit, s.handle(log, nc.RemoteAddr().String(), func() bool {
				return bundles.allow(src, s.Authority.cfg.Now())
			}, warn))
		})
	}
	cancel()
	conns.closeAll()
	wg.Wait()
	return err
}

func (s *Service) idle() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultIdleTimeout
}

// orDefault returns v, or def if v is not positive.
func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// handle returns the request handler of one connection; allowOneTime
// applies its address's rate of one-time prekeys.
func (s *Service) handle(log *slog.Logger, remote string, allowOneTime func() bool, warn *warnings) handler {
	a := s.Authority
	return func(typ byte, body []byte) (byte, []byte, error) {
		switch typ {
		case wire.ServiceBundle:
			oneTime := allowOneTime()
			if !oneTime {
				a.rateLimited.Add(1)
				if ok, held := warn.allow("bundle-rate", time.Now()); ok {
					log.Warn("bundle requests over the rate of one address; their bundles go out without a one-time prekey",
						"remote", remote, "since_last_warning", held)
				}
			}
			b, err := a.onlineBundle(oneTime)
			if err != nil {
				log.Error("bundle", "remote", remote, "err", err)
				return 0, nil, err
			}
			return typ | wire.ServiceReply, b.Marshal(), nil
		case wire.ServiceEnroll:
			answer, err := a.Enroll(body)
			if err != nil {
				log.Info("enrollment refused", "remote", remote, "err", err)
				return 0, nil, err
			}
			return typ | wire.ServiceReply, answer, nil
		case wire.ServiceRevocationList:
			var b []byte
			if l := a.RevocationList(); l != nil {
				b = l.Marshal()
			}
			return typ | wire.ServiceReply, b, nil
		}
		return 0, nil, secure.ErrMalformed
	}
}

// maintain runs the periodic work of the service until ctx ends.
func (s *Service) maintain(ctx context.Context, log *slog.Logger) {
	prekeys := time.NewTicker(maintenanceInterval)
	defer prekeys.Stop()
	purge := time.NewTicker(purgeInterval)
	defer purge.Stop()
	var exhausted uint64 // BundlesWithoutOneTimePrekey at the last alarm
	for {
		select {
		case <-ctx.Done():
			return
		case <-prekeys.C:
			if err := s.Authority.maintainPrekeys(); err != nil {
				log.Error("signed prekeys", "err", err)
			}
			// The pool-exhaustion alarm, at most once per interval.
			if n := s.Authority.BundlesWithoutOneTimePrekey(); n > exhausted {
				log.Warn("one-time prekey pool exhausted: bundles went out without one (devices enroll without DH3; "+
					"ockam enroll --require-one-time-prekey refuses them)", "bundles", n-exhausted, "total", n,
					"max_one_time_prekeys", s.Authority.cfg.MaxOneTimePrekeys)
				exhausted = n
			}
		case <-purge.C:
			if err := s.Authority.purge(); err != nil {
				log.Error("purge one-time prekeys", "err", err)
			}
		}
	}
}

// handler answers one request: the reply's type and body, or an error to
// send as a refusal.
type handler func(typ byte, body []byte) (byte, []byte, error)

// connTimeouts are the read deadlines of a connection: for its first
// request, and between requests.
type connTimeouts struct{ first, idle time.Duration }

// serveConn reads requests whose bodies limit accepts and answers each,
// until the client closes, has not sent its first request within
// timeouts.first or a later one within timeouts.idle, sends something
// malformed, or ctx ends. Only errors that wrap a sentinel of package secure are told to
// the client; any other is an internal error, told as
// ErrAuthorityUnavailable.
func serveConn(ctx context.Context, nc net.Conn, timeouts connTimeouts, limit func(byte) int, h handler) {
	defer nc.Close()
	// Buffered: a frame's header and body in one read. The client waits for
	// each reply, so nothing of a later request is read ahead.
	r := bufio.NewReaderSize(nc, 1024)
	requestsOnly := func(typ byte) int {
		if typ&wire.ServiceReply != 0 {
			return -1
		}
		return limit(typ)
	}
	for wait := timeouts.first; ctx.Err() == nil; wait = timeouts.idle {
		nc.SetReadDeadline(time.Now().Add(wait))
		typ, body, err := wire.ReadServiceFrame(r, requestsOnly)
		if err != nil {
			if errors.Is(err, secure.ErrMalformed) {
				reply(nc, wire.ServiceRefusal, wire.AppendRefusal(nil, err, err.Error()))
			}
			return
		}
		rtyp, rbody, err := h(typ, body)
		if err != nil {
			rtyp, rbody = wire.ServiceRefusal, refusal(err)
		}
		if reply(nc, rtyp, rbody) != nil {
			return
		}
	}
}

// reply writes one frame within writeTimeout.
func reply(nc net.Conn, typ byte, body []byte) error {
	nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	return wire.WriteServiceFrame(nc, typ, body)
}

// refusal is the refusal body for err.
func refusal(err error) []byte {
	for _, known := range []error{
		enroll.ErrTokenUsed, enroll.ErrUnknownToken, secure.ErrExpired, enroll.ErrWrongAuthority,
		enroll.ErrUnknownPrekey, enroll.ErrPrekeyUsed, secure.ErrMalformed, secure.ErrDecrypt,
		secure.ErrRevoked, secure.ErrNotYetValid, secure.ErrBadSignature, secure.ErrWrongSubject,
		wire.ErrAuthorityUnavailable, ErrNoSignedPrekey,
	} {
		if errors.Is(err, known) {
			return wire.AppendRefusal(nil, err, err.Error())
		}
	}
	return wire.AppendRefusal(nil, wire.ErrAuthorityUnavailable, "internal error")
}

// connSet tracks open connections, to close them on shutdown.
type connSet struct {
	mu     sync.Mutex
	m      map[net.Conn]struct{}
	closed bool
}

func (c *connSet) add(nc net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		nc.Close()
		return
	}
	c.m[nc] = struct{}{}
}

func (c *connSet) remove(nc net.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, nc)
}

// closeAll closes the reading side of every connection: a request being
// handled finishes and its reply may still be written.
func (c *connSet) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for nc := range c.m {
		if cr, ok := nc.(interface{ CloseRead() error }); ok {
			cr.CloseRead()
		} else {
			nc.SetReadDeadline(time.Now())
		}
	}
}
