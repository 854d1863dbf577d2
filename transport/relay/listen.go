package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

// Timing and limits of a Listener.
const (
	pingInterval    = 10 * time.Second // a PING keeps the registration alive (the relay drops it after 60 s)
	deadTimeout     = 30 * time.Second // no frame for this long: the connection is dead, reconnect
	registerTimeout = 10 * time.Second // for each answer of the registration
	minBackoff      = 100 * time.Millisecond
	maxBackoff      = 5 * time.Second
	acceptBacklog   = 64   // sessions arrived and not yet accepted
	maxSessions     = 1024 // sessions of one relay connection
)

// ListenConfig configures a Listener.
type ListenConfig struct {
	Relay string // "tcp://relay:4000"
	Name  string // the forwarding name to register
	// Credentials returns the identity and credential to register with,
	// called at every (re)registration so a renewed credential is picked
	// up. The credential must carry the attribute relay=Name.
	Credentials func() (*secure.LocalIdentity, *secure.Credential, error)
	Logger      logger.Logger // nil: none
	// ReceiveBudget bounds the bytes the sessions buffer together unread
	// (default msgconn.DefaultBudget): a session whose bytes find no room
	// fails, so that whoever reaches the relay cannot exhaust memory.
	ReceiveBudget int
}

// Listener is a net.Listener whose sessions arrive through a relay where
// it registered a forwarding name. Each session is a net.Conn for
// secure.Accept; its RemoteAddr is (relay) "RELAY RETURN-ROUTE…".
type Listener struct {
	cfg    ListenConfig
	log    logger.Logger
	accept chan *msgconn.Conn
	done   chan struct{}
	wg     sync.WaitGroup

	registered atomic.Bool
	closeOnce  sync.Once
	budget     *msgconn.Budget // what the sessions buffer together, across reconnects
	refused    atomic.Int64    // sessions refused
	refusedLog atomic.Int64    // Unix nanoseconds of the last warning about them

	mu  sync.Mutex
	cur *link // the current relay connection
}

var _ net.Listener = (*Listener)(nil)

// RefusedError is a relay's refusal of a registration.
type RefusedError struct{ Reason string }

// Error returns the relay's reason.
func (e *RefusedError) Error() string { return "relay refused the registration: " + e.Reason }

// Listen connects to the relay and registers Name, reconnecting with
// backoff (100 ms doubling to 5 s, with jitter) whenever the connection or
// registration is lost. It returns at once: registration happens in the
// background, and a refusal is logged at warn with the relay's reason, then
// retried. When the relay connection drops, every session of it fails.
func Listen(cfg ListenConfig) (*Listener, error) {
	if k, err := parseHop(cfg.Relay); err != nil || k != hopRelay {
		return nil, fmt.Errorf("relay: relay address %q: want tcp://HOST:PORT", cfg.Relay)
	}
	if err := checkName(cfg.Name); err != nil {
		return nil, fmt.Errorf("relay: forwarding %v", err)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("relay: ListenConfig.Credentials is nil")
	}
	budget := cfg.ReceiveBudget
	if budget <= 0 {
		budget = msgconn.DefaultBudget
	}
	l := &Listener{cfg: cfg, log: cfg.Logger, accept: make(chan *msgconn.Conn, acceptBacklog), done: make(chan struct{}),
		budget: msgconn.NewBudget(budget)}
	if l.log == nil {
		l.log = logger.Nop{}
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

// Accept waits for the next session. After Close it returns net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops the Listener: the relay connection closes, its sessions
// fail, and Accept returns net.ErrClosed.
func (l *Listener) Close() error {
	err := net.ErrClosed
	l.closeOnce.Do(func() {
		err = nil
		close(l.done)
		l.mu.Lock()
		if l.cur != nil {
			l.cur.close(nil)
		}
		l.mu.Unlock()
		l.wg.Wait()
		for {
			select {
			case c := <-l.accept:
				c.Close()
			default:
				return
			}
		}
	})
	return err
}

// Addr describes the relay and the name: (relay) "tcp://relay:4000 NAME".
func (l *Listener) Addr() net.Addr {
	return msgconn.Addr{Net: "relay", Text: l.cfg.Relay + " " + l.cfg.Name}
}

// Registered reports whether the name is registered at the relay now.
func (l *Listener) Registered() bool { return l.registered.Load() }

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// run connects and registers until Close, with backoff between attempts.
func (l *Listener) run() {
	defer l.wg.Done()
	backoff := minBackoff
	for !l.closed() {
		wasRegistered, err := l.connect()
		l.registered.Store(false)
		if l.closed() {
			return
		}
		var refused *RefusedError
		switch {
		case errors.As(err, &refused):
			l.log.Warnf("Relay %s refused to register %q: %s", l.cfg.Relay, l.cfg.Name, refused.Reason)
		case wasRegistered:
			l.log.Infof("Lost the connection to relay %s (%v); reconnecting", l.cfg.Relay, err)
			backoff = minBackoff
		default:
			l.log.Infof("Cannot register %q at relay %s: %v", l.cfg.Name, l.cfg.Relay, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter: reconnects of many listeners spread out
		select {
		case <-l.done:
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// connect makes one connection: dial, register, serve sessions until it
// drops. It reports whether the registration succeeded.
func (l *Listener) connect() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	go func() { // Close stops the dial
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(l.cfg.Relay, "tcp://"))
	cancel()
	if err != nil {
		return false, err
	}
	lk := newLink(nc)
	defer lk.close(nil)
	l.mu.Lock()
	l.cur = lk
	l.mu.Unlock()
	if l.closed() {
		return false, net.ErrClosed
	}
	r := bufio.NewReaderSize(nc, 64<<10)
	if err := l.register(lk, r); err != nil {
		return false, err
	}
	l.registered.Store(true)
	l.log.Infof("Registered %q at relay %s", l.cfg.Name, l.cfg.Relay)
	return true, l.serve(lk, r)
}

// register runs REGISTER_BEGIN, CHALLENGE, REGISTER, REGISTERED.
func (l *Listener) register(lk *link, r *bufio.Reader) error {
	if err := lk.send(appendFrame(nil, &frame{Type: typeRegisterBegin}), nil); err != nil {
		return err
	}
	ch, err := l.expect(lk, r, typeChallenge)
	if err != nil {
		return err
	}
	id, cred, err := l.cfg.Credentials()
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	raw := cred.Marshal()
	sig, err := id.Signer().Sign(registerMessage(ch.Payload, l.cfg.Name))
	if err != nil {
		return fmt.Errorf("sign the registration: %w", err)
	}
	reg := &frame{Type: typeRegister, Name: l.cfg.Name, Key: id.Signer().Public(), Credential: raw, Signature: sig}
	if err := lk.send(appendFrame(nil, reg), nil); err != nil {
		return err
	}
	ans, err := l.expect(lk, r, typeRegistered)
	if err != nil {
		return err
	}
	if ans.Name != l.cfg.Name {
		return protoErrorf("relay registered %q, not %q", ans.Name, l.cfg.Name)
	}
	return nil
}

// expect reads the answer of the registration: a frame of type want, or a
// REFUSED (a *RefusedError).
func (l *Listener) expect(lk *link, r *bufio.Reader, want frameType) (*frame, error) {
	_ = lk.nc.SetReadDeadline(time.Now().Add(registerTimeout))
	for {
		f, err := readFrame(r)
		switch {
		case err != nil:
			return nil, err
		case f.Type == want:
			return f, nil
		case f.Type == typeRefused:
			return nil, &RefusedError{Reason: string(f.Payload)}
		case f.Type == typePong:
		default:
			return nil, protoErrorf("%v while waiting for %v", f.Type, want)
		}
	}
}

// relaySessions are the sessions of one relay connection, by return route.
type relaySessions struct {
	l  *Listener
	lk *link
	mu sync.Mutex
	m  map[string]*msgconn.Conn
}

// serve reads the frames of a registered connection, pings, and
// demultiplexes sessions, until the connection fails; then every session
// fails.
func (l *Listener) serve(lk *link, r *bufio.Reader) error {
	ss := &relaySessions{l: l, lk: lk, m: map[string]*msgconn.Conn{}}
	pingDone := make(chan struct{})
	defer close(pingDone)
	go func() {
		t := time.NewTicker(pingInterval)
		defer t.Stop()
		for {
			select {
			case <-pingDone:
				return
			case <-t.C:
				lk.offer(appendFrame(nil, &frame{Type: typePing})) // a full queue is no reason to close
			}
		}
	}()
	var err error
	for err == nil {
		_ = lk.nc.SetReadDeadline(time.Now().Add(deadTimeout))
		var f *frame
		if f, err = readFrame(r); err == nil {
			err = ss.handle(f)
		}
	}
	if cerr := lk.closeErr(); cerr != nil {
		err = cerr
	}
	lk.close(err)
	ss.failAll(fmt.Errorf("relay %s: connection lost: %w", l.cfg.Relay, err))
	return err
}

// handle acts on one frame of the relay connection.
func (ss *relaySessions) handle(f *frame) error {
	switch {
	case f.Type == typePing:
		ss.lk.offer(appendFrame(nil, &frame{Type: typePong}))
		return nil
	case f.Type == typePong:
		return nil
	case f.Type != typeRoute && f.Type != typeError:
		return protoErrorf("unexpected %v on a registered connection", f.Type)
	case len(f.Onward) > 0 || len(f.Return) == 0:
		ss.l.log.Debugf("Dropped a %v not addressed to this listener", f.Type)
		return nil
	}
	key := strings.Join(f.Return, " ")
	ss.mu.Lock()
	c := ss.m[key]
	ss.mu.Unlock()
	switch {
	case c != nil && f.Type == typeError:
		ss.remove(key, c)
		c.Fail(errors.New("relay: " + string(f.Payload)))
	case c != nil:
		c.Deliver(f.Payload) // a full buffer fails c: its channel closes
	case f.Type == typeRoute:
		ss.open(key, f)
	}
	return nil
}

// open starts a session with the first frame of an unknown return route.
func (ss *relaySessions) open(key string, f *frame) {
	ret := f.Return
	ss.mu.Lock()
	if len(ss.m) >= maxSessions {
		ss.mu.Unlock()
		ss.refuse(ret, fmt.Sprintf("listener %q: too many sessions", ss.l.cfg.Name))
		return
	}
	var c *msgconn.Conn
	send := func(p []byte, abort <-chan struct{}) error {
		return ss.lk.send(appendFrame(nil, &frame{Type: typeRoute, Onward: ret, Payload: p}), abort)
	}
	remote := msgconn.Addr{Net: "relay", Text: ss.l.cfg.Relay + " " + key}
	c = msgconn.New(ss.l.Addr(), remote, send, msgconn.Options{MaxPayload: MaxPayload, Budget: ss.l.budget,
		OnClose: func() { ss.remove(key, c) }})
	ss.m[key] = c
	ss.mu.Unlock()
	c.Deliver(f.Payload)
	select {
	case ss.l.accept <- c:
	default:
		ss.remove(key, c)
		c.Close()
		ss.refuse(ret, fmt.Sprintf("listener %q: too many sessions waiting to be accepted", ss.l.cfg.Name))
	}
}

// refuseLogInterval spaces the warnings about refused sessions: anyone who
// reaches the relay can cause them.
const refuseLogInterval = time.Minute

// refuse tells a device why its session cannot start.
func (ss *relaySessions) refuse(ret []string, why string) {
	n := ss.l.refused.Add(1)
	now, last := time.Now().UnixNano(), ss.l.refusedLog.Load()
	if now-last >= int64(refuseLogInterval) && ss.l.refusedLog.CompareAndSwap(last, now) {
		ss.l.log.Warnf("Refused a session: %s (%d refused so far; logged at most once a minute)", why, n)
	} else {
		ss.l.log.Debugf("Refused a session: %s", why)
	}
	ss.lk.offer(appendFrame(nil, &frame{Type: typeError, Onward: ret, Payload: reason(why)}))
}

func (ss *relaySessions) remove(key string, c *msgconn.Conn) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m[key] == c {
		delete(ss.m, key)
	}
}

// failAll fails every session: their channels close.
func (ss *relaySessions) failAll(err error) {
	ss.mu.Lock()
	m := ss.m
	ss.m = map[string]*msgconn.Conn{}
	ss.mu.Unlock()
	for _, c := range m {
		c.Fail(err)
	}
}
