package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Timeouts of a relay.
const (
	// idleTimeout closes a registered connection that sent nothing (its
	// listener pings every 10 s), and a new one that sends no first frame.
	idleTimeout = 60 * time.Second
	// dialTimeout bounds the dial of a next hop.
	dialTimeout = 10 * time.Second
	// deviceIdleTimeout closes an unregistered incoming connection (a
	// device's) that carried no frame for that long: its channel is idle,
	// and a listener closes idle channels sooner (read_timeout, 5 min).
	deviceIdleTimeout = 10 * time.Minute
	// DefaultMaxConnectionsPerIP is ServerConfig.MaxConnectionsPerIP when
	// zero: room for a plant of devices behind one NAT address, not for one
	// host to take every slot.
	DefaultMaxConnectionsPerIP = 1024
	// DefaultMaxConnections is ServerConfig.MaxConnections when zero.
	DefaultMaxConnections = 10000
)

// ServerConfig configures a relay.
type ServerConfig struct {
	// Authorities are trusted to issue the credentials listeners register
	// with (the attribute relay must equal the name). At least one.
	Authorities []*secure.Identity
	// Revocations, optional, is applied to registrations.
	Revocations *secure.RevocationList
	// NextHops are the relays ("tcp://host:port", compared byte for byte)
	// this relay forwards to; any other tcp:// hop is refused, or the relay
	// would be an open proxy into its network.
	NextHops []string
	// MaxConnections bounds the connections, incoming and outgoing
	// (default DefaultMaxConnections).
	MaxConnections int
	// MaxConnectionsPerIP bounds the incoming connections from one IP
	// address (default DefaultMaxConnectionsPerIP), so that one host cannot
	// hold every connection slot and keep gateways from registering.
	MaxConnectionsPerIP int
	// Logger receives the log (nil: none).
	Logger logger.Logger
	// Now returns the time for credential checks (nil: time.Now).
	Now func() time.Time
}

// Server is a relay: it forwards ROUTE and ERROR frames between its
// connections by their onward routes and registers forwarding names. It is
// safe for concurrent use.
type Server struct {
	verifier *secure.Verifier
	nextHops map[string]bool
	maxConns int
	maxPerIP int
	// deviceIdle is deviceIdleTimeout (shorter in tests).
	deviceIdle time.Duration
	log        logger.Logger
	now        func() time.Time

	mu        sync.Mutex
	addr      string // of the first listener, for the reasons of ERROR frames
	conns     map[connID]*relayConn
	perIP     map[netip.Addr]int // incoming connections by source address
	names     map[string]*relayConn
	outgoing  map[string]*relayConn // by next hop
	listeners map[net.Listener]bool
	closed    bool
	wg        sync.WaitGroup // connection goroutines
}

// relayConn is one connection of a relay, incoming or outgoing.
type relayConn struct {
	id       connID
	link     *link
	remote   string     // the peer's address, or the next hop of an outgoing connection
	ip       netip.Addr // the peer's IP address (incoming connections)
	outgoing bool

	challenge []byte // the last CHALLENGE sent; reader goroutine only

	dropped    atomic.Int64 // frames dropped for this connection's full queue
	dropLogged atomic.Int64 // Unix nanoseconds of the last report of them

	// Guarded by Server.mu.
	name       string             // registered forwarding name, if any
	holder     secure.Identifier  // whose registration it is
	credential *secure.Credential // the credential it registered with
	expiry     *time.Timer        // drops the registration when the credential expires
}

// NewServer checks cfg and returns a relay that serves nothing yet.
func NewServer(cfg ServerConfig) (*Server, error) {
	v, err := secure.NewVerifier(cfg.Authorities...)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	if cfg.Revocations != nil {
		if err := v.UpdateRevocations(cfg.Revocations); err != nil {
			return nil, fmt.Errorf("relay: revocation list: %w", err)
		}
	}
	s := &Server{verifier: v, nextHops: map[string]bool{}, maxConns: cfg.MaxConnections, log: cfg.Logger, now: cfg.Now,
		conns: map[connID]*relayConn{}, perIP: map[netip.Addr]int{}, maxPerIP: cfg.MaxConnectionsPerIP,
		names: map[string]*relayConn{}, outgoing: map[string]*relayConn{},
		listeners: map[net.Listener]bool{}}
	for _, h := range cfg.NextHops {
		if k, err := parseHop(h); err != nil || k != hopRelay {
			return nil, fmt.Errorf("relay: next hop %q: want tcp://HOST:PORT", h)
		}
		s.nextHops[h] = true
	}
	if s.maxConns < 0 {
		return nil, fmt.Errorf("relay: MaxConnections %d is negative", s.maxConns)
	}
	if s.maxConns == 0 {
		s.maxConns = DefaultMaxConnections
	}
	s.deviceIdle = deviceIdleTimeout
	switch {
	case s.maxPerIP < 0:
		return nil, fmt.Errorf("relay: MaxConnectionsPerIP %d is negative", s.maxPerIP)
	case s.maxPerIP == 0:
		s.maxPerIP = DefaultMaxConnectionsPerIP
	}
	if s.log == nil {
		s.log = logger.Nop{}
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Serve accepts connections on ln until Close, which closes ln; it then
// returns nil. Other errors of Accept (too many open files, …) are logged
// and retried with backoff; a listener closed by someone else ends it.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.listeners[ln] = true
	if s.addr == "" {
		s.addr = ln.Addr().String()
	}
	s.mu.Unlock()
	var delay time.Duration
	var lastLog, lastRefusal time.Time
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			if closed || errors.Is(err, net.ErrClosed) {
				delete(s.listeners, ln)
			}
			s.mu.Unlock()
			if closed {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: whoever opened them
			// must not stop the relay. Back off and go on, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if time.Since(lastLog) >= time.Minute {
				s.log.Warnf("Accepting a connection failed (retrying; logged at most once a minute): %v", err)
				lastLog = time.Now()
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := &relayConn{id: newConnID(), remote: nc.RemoteAddr().String(), link: newLink(nc)}
		if ap, err := netip.ParseAddrPort(c.remote); err == nil {
			c.ip = ap.Addr().Unmap()
		}
		if why := s.add(c); why != "" {
			if time.Since(lastRefusal) >= time.Minute {
				s.log.Warnf("Refusing connection from %s: %s (further refusals logged at most once a minute)", c.remote, why)
				lastRefusal = time.Now()
			}
			c.link.close(nil)
			continue
		}
		s.log.Debugf("Connection %s from %s", c.id.hop(), c.remote)
		go s.readLoop(c)
	}
}

// add records c, unless the relay is closed or full, or c's address holds
// its share: then it says why. On success the caller must run readLoop (or
// drop) for it.
func (s *Server) add(c *relayConn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "relay closing"
	case len(s.conns) >= s.maxConns:
		return fmt.Sprintf("%d connections open (--max-connections)", s.maxConns)
	case c.ip.IsValid() && s.perIP[c.ip] >= s.maxPerIP:
		return fmt.Sprintf("%d connections open from %s (--max-connections-per-ip)", s.maxPerIP, c.ip)
	}
	if c.ip.IsValid() {
		s.perIP[c.ip]++
	}
	for s.conns[c.id] != nil { // 2^-64, but an id must name one connection
		c.id = newConnID()
	}
	s.conns[c.id] = c
	s.wg.Add(1)
	return ""
}

// Close stops the relay: its listeners and every connection close, and it
// waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	var links []*link
	for _, c := range s.conns {
		links = append(links, c.link)
		if c.expiry != nil {
			c.expiry.Stop()
		}
	}
	s.mu.Unlock()
	for _, l := range links {
		l.close(nil)
	}
	s.wg.Wait()
	return nil
}

// readLoop reads the frames of c until it closes, then forgets c.
func (s *Server) readLoop(c *relayConn) {
	defer s.wg.Done()
	defer s.drop(c)
	r := bufio.NewReaderSize(c.link.nc, 64<<10)
	first := true
	for {
		deadline := time.Time{}
		switch {
		case c.outgoing:
		case first || s.isRegistered(c):
			deadline = time.Now().Add(idleTimeout)
		default:
			deadline = time.Now().Add(s.deviceIdle)
		}
		_ = c.link.nc.SetReadDeadline(deadline)
		f, err := readFrame(r)
		if err == nil {
			err = s.handle(c, f)
		}
		if err != nil {
			if cerr := c.link.closeErr(); cerr != nil {
				err = cerr // closed here; the read error only follows from it
			}
			s.log.Debugf("Connection %s from %s closed: %v", c.id.hop(), c.remote, err)
			c.link.close(err)
			return
		}
		first = false
	}
}

// drop forgets a closed connection and its registration.
func (s *Server) drop(c *relayConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[c.id] == c && c.ip.IsValid() {
		if s.perIP[c.ip] <= 1 {
			delete(s.perIP, c.ip)
		} else {
			s.perIP[c.ip]--
		}
	}
	delete(s.conns, c.id)
	if c.outgoing && s.outgoing[c.remote] == c {
		delete(s.outgoing, c.remote)
	}
	s.unregister(c)
}

// unregister drops the registration of c. s.mu is held.
func (s *Server) unregister(c *relayConn) {
	if c.name != "" && s.names[c.name] == c {
		delete(s.names, c.name)
		s.log.Infof("Unregistered %q (%s, from %s)", c.name, c.holder.Short(), c.remote)
	}
	c.name = ""
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
}

func (s *Server) isRegistered(c *relayConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.name != ""
}

// handle acts on one frame of c. An error is a protocol error: c closes.
func (s *Server) handle(c *relayConn, f *frame) error {
	switch f.Type {
	case typeRoute, typeError:
		s.forward(c, f)
	case typeRegisterBegin:
		c.challenge = make([]byte, challengeSize)
		randRead(c.challenge)
		s.reply(c, &frame{Type: typeChallenge, Payload: c.challenge})
	case typeRegister:
		s.register(c, f)
	case typePing:
		// A full queue costs the PONG, never the connection: a flood
		// towards a listener must not get it cut at its next keepalive.
		c.link.offer(appendFrame(nil, &frame{Type: typePong}))
	case typePong:
	default:
		return protoErrorf("unexpected %v from a client", f.Type)
	}
	return nil
}

// reply queues a frame for c; a full queue closes c.
func (s *Server) reply(c *relayConn, f *frame) {
	_ = c.link.send(appendFrame(nil, f), nil)
}

// forward applies the forwarding rule to a ROUTE or ERROR that arrived on
// c (docs/PROTOCOL.md, section 15.3).
func (s *Server) forward(c *relayConn, f *frame) {
	// relays are not endpoints
	if len(f.Onward) == 0 {
		s.log.Debugf("Dropped a %v with an empty onward route from %s", f.Type, c.remote)
		return
	}
	// pop the first hop, push c on the return route
	next := f.Onward[0]
	ret := append(make([]string, 0, len(f.Return)+1), c.id.hop())
	ret = append(ret, f.Return...)
	if len(ret) > MaxHops {
		s.log.Debugf("Dropped a %v from %s: its return route would exceed %d hops", f.Type, c.remote, MaxHops)
		return
	}
	dest, shared, why := s.resolve(next)
	if dest != nil {
		out := appendFrame(nil, &frame{Type: f.Type, Onward: f.Onward[1:], Return: ret, Payload: f.Payload})
		if shared {
			// A listener's or a relay's connection carries every session
			// of its devices: a full queue (a flood from anyone, or a slow
			// uplink) costs this frame, never the connection.
			if dest.link.offer(out) {
				return
			}
			if err := dest.link.closeErr(); err != nil {
				// closed since resolve, such as a next hop whose dial
				// already failed: the frame was not dropped for a full
				// queue, and saying so would mislead
				why = fmt.Sprintf("next hop %q: %v", next, err)
				if dest.outgoing {
					why = fmt.Sprintf("cannot reach next hop %q: %v", next, err)
				}
			} else {
				s.droppedFor(dest, next)
				why = fmt.Sprintf("next hop %q is busy: its outbound queue is full, frame dropped", next)
			}
		} else if err := dest.link.send(out, nil); err == nil {
			return
		} else {
			why = fmt.Sprintf("next hop %q: %v", next, err)
		}
	}
	s.log.Debugf("Cannot forward a %v from %s: %s", f.Type, c.remote, why)
	if f.Type == typeRoute { // never an ERROR about an ERROR
		s.sendError(ret, f.Onward, why)
	}
}

// dropLogInterval spaces the reports of frames dropped for a full queue.
const dropLogInterval = 10 * time.Second

// droppedFor counts a frame dropped for dest, and reports the count at
// most every dropLogInterval.
func (s *Server) droppedFor(dest *relayConn, hop string) {
	n := dest.dropped.Add(1)
	now := s.now().UnixNano()
	last := dest.dropLogged.Load()
	if now-last >= int64(dropLogInterval) && dest.dropLogged.CompareAndSwap(last, now) {
		s.log.Infof("Dropping frames for %s (%s): its outbound queue is full; %d dropped so far", hop, dest.remote, n)
	}
}

// resolve finds the connection a hop names, or says why there is none.
//
// shared reports whether the connection carries the sessions of others: a
// registered listener's connection or one to another relay.
func (s *Server) resolve(hop string) (dest *relayConn, shared bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dest, why = s.resolveLocked(hop)
	return dest, dest != nil && (dest.outgoing || dest.name != ""), why
}

// resolveLocked is resolve without shared. s.mu is held.
func (s *Server) resolveLocked(hop string) (*relayConn, string) {
	kind, _ := parseHop(hop) // checked by parseFrame
	switch kind {
	case hopConn:
		if c := s.conns[parseConnID(hop)]; c != nil {
			return c, ""
		}
		return nil, fmt.Sprintf("no connection %s (closed)", hop)
	case hopName:
		if c := s.names[hop]; c != nil {
			return c, ""
		}
		return nil, fmt.Sprintf("no listener registered as %q", hop)
	default:
		if !s.nextHops[hop] {
			return nil, fmt.Sprintf("next hop %q is not allowed here (it is not one of the relay's --next-hop)", hop)
		}
		if c := s.outgoing[hop]; c != nil {
			return c, ""
		}
		return s.dialLocked(hop)
	}
}

// dialLocked starts an outgoing connection to a next hop; frames queue
// while it dials. s.mu is held.
func (s *Server) dialLocked(hop string) (*relayConn, string) {
	if s.closed || len(s.conns) >= s.maxConns {
		return nil, fmt.Sprintf("next hop %q: too many connections", hop)
	}
	c := &relayConn{id: newConnID(), remote: hop, outgoing: true, link: newPendingLink()}
	for s.conns[c.id] != nil {
		c.id = newConnID()
	}
	s.conns[c.id] = c
	s.outgoing[hop] = c
	s.wg.Add(1)
	dial := func(done <-chan struct{}) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
		defer cancel()
		go func() { // the link closed: stop dialing
			select {
			case <-done:
				cancel()
			case <-ctx.Done():
			}
		}()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", strings.TrimPrefix(hop, "tcp://"))
	}
	c.link.start(dial, func() {
		s.log.Debugf("Connection %s to next hop %s", c.id.hop(), hop)
		go s.readLoop(c)
	}, func(queued [][]byte, err error) {
		defer s.wg.Done()
		s.drop(c)
		s.log.Infof("Cannot reach next hop %s: %v", hop, err)
		for _, b := range queued {
			if f, perr := parseFrame(b[4:]); perr == nil && f.Type == typeRoute {
				s.sendError(f.Return, append([]string{hop}, f.Onward...), fmt.Sprintf("cannot reach next hop %q: %v", hop, err))
			}
		}
	})
	return c, ""
}

// sendError sends an ERROR along ret, a return route whose first hop is a
// connection of this relay: the payload is "relay ADDR: why", the return
// route is onward, the route of the frame that could not go on (its first
// hop the one that failed), which the endpoint that sent the frame knows
// as the return route of its session.
func (s *Server) sendError(ret, onward []string, why string) {
	s.mu.Lock()
	c := s.conns[parseConnID(ret[0])]
	addr := s.addr
	s.mu.Unlock()
	if c == nil {
		return
	}
	f := &frame{Type: typeError, Onward: ret[1:], Return: onward, Payload: reason("relay " + addr + ": " + why)}
	// An ERROR is advice: one that finds no room is dropped, and the
	// sender learns from its own timeout. So a flood of frames that are
	// dropped does not close its sender for the ERRORs it did not read,
	// nor a relay's connection that many sessions share.
	c.link.offer(appendFrame(nil, f))
}
