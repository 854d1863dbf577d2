package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

// Reconnection backoff of a Listener: the first attempt after this much,
// doubling up to the maximum, each wait drawn from its upper half.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 5 * time.Second
)

// tombstoneTTL is how long a Listener remembers a closed session id, so
// that the device's late messages do not open a new session.
const tombstoneTTL = time.Minute

// Listener accepts device sessions arriving on <base>/in/+ of one broker,
// through one connection (client id "ockam-l-<random hex>"). It
// implements net.Listener; its methods are safe for concurrent use.
//
// When the broker connection is lost, every session fails (with an error
// wrapping ErrBrokerLost) and the Listener reconnects and resubscribes by
// itself, with backoff; Accept goes on working across outages.
type Listener struct {
	url      *URL
	opts     Options
	clientID string
	inPrefix string // "<base>/in/"

	ctx    context.Context // done at Close
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu       sync.Mutex
	gen      uint64 // the broker connection whose messages count; bumped at each loss
	sessions map[string]*session
	pending  []*msgconn.Conn // sessions waiting for Accept
	ready    chan struct{}   // closed and replaced when pending grows or at Close
	closed   bool
	tombs    map[string]time.Time // closed session ids, until when they stay closed
	atCap    bool                 // MaxSessions reached: warned once
	stats    Stats
	budget   *msgconn.Budget // what the sessions buffer together
}

// session is one device session of a Listener.
type session struct {
	sid        string
	gen        uint64
	conn       *msgconn.Conn
	pub        *publisher
	peerClosed atomic.Bool // the device said "session closed"
}

// Stats counts what a Listener has seen since Listen.
type Stats struct {
	// Sessions is the number of live sessions: accepted or waiting for
	// Accept, and not closed.
	Sessions int
	// Dropped counts messages on a topic that is not <base>/in/<session
	// id> (32 lowercase hex), and retained messages.
	Dropped uint64
	// Refused counts the messages that would have opened a session beyond
	// MaxSessions.
	Refused uint64
	// Outages counts the broker connections lost.
	Outages uint64
}

var _ net.Listener = (*Listener)(nil)

// Listen connects to the broker of raw (an mqtt:// address, see ParseURL)
// and subscribes to <base>/in/+, waiting at most opts.ConnectTimeout: an
// unreachable broker, refused credentials or a refused subscription is an
// error here, while a later outage is not.
func Listen(raw string, opts Options) (*Listener, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	l := &Listener{
		url:      u,
		opts:     opts.withDefaults(),
		clientID: "ockam-l-" + hex.EncodeToString(id[:]),
		inPrefix: u.BaseTopic + "/in/",
		done:     make(chan struct{}),
		sessions: map[string]*session{},
		ready:    make(chan struct{}),
		tombs:    map[string]time.Time{},
	}
	l.budget = msgconn.NewBudget(l.opts.ReceiveBudget)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	client, lost, err := l.connect()
	if err != nil {
		l.cancel()
		return nil, err
	}
	go l.run(client, lost)
	return l, nil
}

// Accept waits for the next session and returns it. The returned
// *msgconn.Conn reads the device's bytes and publishes its writes to
// <base>/out/<session id>; its Close tells the device with an empty
// message. After Close, Accept returns net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return nil, net.ErrClosed
		}
		if len(l.pending) > 0 {
			c := l.pending[0]
			l.pending[0] = nil
			l.pending = l.pending[1:]
			l.mu.Unlock()
			return c, nil
		}
		ready := l.ready
		l.mu.Unlock()
		<-ready
	}
}

// Close disconnects from the broker and fails every session with an error
// wrapping net.ErrClosed; sessions not yet accepted are closed. It waits
// for the disconnection, at most about a second.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.closed = true
	l.wake()
	sessions, pending := l.sessions, l.pending
	l.sessions, l.pending = map[string]*session{}, nil
	l.mu.Unlock()
	err := fmt.Errorf("mqtt: listener closed: %w", net.ErrClosed)
	for _, s := range sessions {
		s.conn.Fail(err)
	}
	for _, c := range pending {
		c.Close()
	}
	l.cancel()
	<-l.done
	return nil
}

// Addr returns the listener's address, "mqtt://host:port/base".
func (l *Listener) Addr() net.Addr { return msgconn.Addr{Net: "mqtt", Text: l.url.String()} }

// Stats returns the listener's counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Sessions = len(l.sessions)
	return s
}

// connect makes a new client, connects it and subscribes to <base>/in/+.
// lost receives the reason when its connection is lost.
func (l *Listener) connect() (client paho.Client, lost <-chan error, err error) {
	lostc := make(chan error, 1)
	co := clientOptions(l.url, l.opts, l.clientID)
	co.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case lostc <- err:
		default:
		}
	})
	client = paho.NewClient(co)
	l.mu.Lock()
	l.gen++
	gen := l.gen
	l.mu.Unlock()
	handler := func(_ paho.Client, m paho.Message) { l.handle(gen, client, m) }
	if err := connect(l.ctx, client, l.url, l.inPrefix+"+", handler, l.opts.ConnectTimeout); err != nil {
		return nil, nil, err
	}
	return client, lostc, nil
}

// run watches the broker connection: after a loss it fails the sessions
// and reconnects; at Close it disconnects.
func (l *Listener) run(client paho.Client, lost <-chan error) {
	defer close(l.done)
	for {
		select {
		case <-l.ctx.Done():
			client.Disconnect(uint(closeTimeout.Milliseconds() / 2))
			return
		case err := <-lost:
			n := l.failSessions(fmt.Errorf("%w: %v", ErrBrokerLost, err))
			l.opts.Logger.Warnf("mqtt: lost the connection to broker %s (%v); %d sessions failed; reconnecting",
				l.url, err, n)
			start := time.Now()
			if client, lost = l.reconnect(); client == nil {
				return // closed
			}
			l.opts.Logger.Infof("mqtt: reconnected to broker %s after %v", l.url, time.Since(start).Round(time.Millisecond))
		}
	}
}

// failSessions ends every session after a loss of the broker connection
// and returns how many there were.
func (l *Listener) failSessions(err error) int {
	l.mu.Lock()
	l.gen++ // messages of the lost connection still in paho's queue no longer count
	l.stats.Outages++
	l.atCap = false
	sessions := l.sessions
	l.sessions = map[string]*session{}
	for sid := range sessions {
		l.bury(sid)
	}
	l.mu.Unlock()
	for _, s := range sessions {
		s.conn.Fail(err)
	}
	return len(sessions)
}

// reconnect tries to connect again, with backoff, until it succeeds or the
// listener is closed (then it returns a nil client).
func (l *Listener) reconnect() (paho.Client, <-chan error) {
	delay := reconnectMin
	for {
		t := time.NewTimer(delay/2 + mrand.N(delay/2+1))
		select {
		case <-l.ctx.Done():
			t.Stop()
			return nil, nil
		case <-t.C:
		}
		client, lost, err := l.connect()
		if err == nil {
			return client, lost
		}
		l.opts.Logger.Debugf("mqtt: reconnect to broker %s: %v", l.url, err)
		delay = min(2*delay, reconnectMax)
	}
}

// handle routes one message of <base>/in/+. It runs on paho's router
// goroutine, so it must not block: Deliver and Fail do not.
func (l *Listener) handle(gen uint64, client paho.Client, m paho.Message) {
	sid, ok := strings.CutPrefix(m.Topic(), l.inPrefix)
	if !ok || !validSID(sid) || m.Retained() {
		l.mu.Lock()
		l.stats.Dropped++
		l.mu.Unlock()
		l.opts.Logger.Debugf("mqtt: dropped a message on topic %q (retained: %v): not a session message",
			m.Topic(), m.Retained())
		return
	}
	payload := m.Payload()
	l.mu.Lock()
	if l.closed || gen != l.gen {
		l.mu.Unlock()
		return
	}
	s := l.sessions[sid]
	if s == nil {
		l.open(gen, client, sid, payload)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if len(payload) == 0 {
		s.peerClosed.Store(true)
		s.conn.Fail(io.EOF)
		return
	}
	if !s.conn.Deliver(payload) {
		l.opts.Logger.Debugf("mqtt: session %s: dropped %d bytes: the session is over", sid, len(payload))
	}
}

// open starts session sid with its first message, unless that is empty,
// the id was closed or refused lately, or MaxSessions are live (then the
// id is refused for good). l.mu is held.
func (l *Listener) open(gen uint64, client paho.Client, sid string, first []byte) {
	if len(first) == 0 {
		return // "session closed" of a session we do not have
	}
	if until, ok := l.tombs[sid]; ok && time.Now().Before(until) {
		return
	}
	if len(l.sessions) >= l.opts.MaxSessions {
		l.stats.Refused++
		l.bury(sid) // its next messages, mid-stream, must not open a session either
		if !l.atCap {
			l.atCap = true
			l.opts.Logger.Warnf("mqtt: %d sessions are live, the maximum: new sessions are refused", len(l.sessions))
		}
		return
	}
	s := &session{sid: sid, gen: gen, pub: newPublisher(client, l.url.outTopic(sid))}
	local := msgconn.Addr{Net: "mqtt", Text: "client " + l.clientID}
	s.conn = msgconn.New(local, sessionAddr(l.url, sid), s.pub.send, msgconn.Options{Budget: l.budget,
		OnClose: func() { l.closeSession(s) }})
	s.conn.Deliver(first)
	l.sessions[sid] = s
	l.pending = append(l.pending, s.conn)
	l.wake()
}

// closeSession forgets a session its owner closed and, unless the device
// ended it or the broker connection is gone, tells the device with an
// empty message on <base>/out/<session id>.
func (l *Listener) closeSession(s *session) {
	l.mu.Lock()
	if l.sessions[s.sid] == s {
		delete(l.sessions, s.sid)
		l.bury(s.sid)
	}
	if len(l.sessions) < l.opts.MaxSessions {
		l.atCap = false
	}
	signal := !l.closed && s.gen == l.gen && !s.peerClosed.Load()
	l.mu.Unlock()
	if signal {
		if err := s.pub.sendClosed(); err != nil {
			l.opts.Logger.Debugf("mqtt: session %s: publish the close: %v", s.sid, err)
		}
	}
}

// bury remembers sid as closed for tombstoneTTL, keeping at most
// MaxSessions ids. l.mu is held.
func (l *Listener) bury(sid string) {
	now := time.Now()
	if len(l.tombs) >= l.opts.MaxSessions {
		for k, until := range l.tombs {
			if !now.Before(until) {
				delete(l.tombs, k)
			}
		}
		if len(l.tombs) >= l.opts.MaxSessions {
			return
		}
	}
	l.tombs[sid] = now.Add(tombstoneTTL)
}

// wake tells waiting Accepts that something changed. l.mu is held.
func (l *Listener) wake() {
	close(l.ready)
	l.ready = make(chan struct{})
}
