package sender

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/trust"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// testTimeout is long enough that no dial and no answer runs out of time
// on a loaded machine; a test of a timeout sets its own.
const testTimeout = 30 * time.Second

// listener accepts channels over loopback TCP with secure.Accept, as
// inputs.ockam_listener does, and answers each data message as answer says.
type listener struct {
	fleet  *ockamtest.Fleet
	device ockamtest.Member
	ln     net.Listener
	cfg    secure.HandshakeConfig

	mu       sync.Mutex
	answer   func(secure.Message) secure.Message
	received []secure.Message     // data messages
	creds    []*secure.Credential // the device's, one per channel accepted
	conns    []net.Conn
	ended    int // channels whose serve returned
	wg       sync.WaitGroup
}

// silent answers nothing: the listener never acks.
func silent(secure.Message) secure.Message { return secure.Message{} }

// ack answers m with an ack.
func ack(m secure.Message) secure.Message {
	return secure.Message{Type: secure.TypeAck, Batch: m.Batch}
}

// newListener enrolls a device and a listener with one authority and
// starts the listener; it stops when the test ends. admit, if not nil,
// decides whether a verified device gets a channel.
func newListener(t *testing.T, admit func(*secure.Peer) error) *listener {
	t.Helper()
	fleet := ockamtest.NewFleet(t)
	l := &listener{fleet: fleet, device: fleet.Enroll(t, "device", map[string]string{"role": "sensor"}), answer: ack}
	now := time.Now()
	id, err := secure.CreateIdentity(vault.NewMemory(), now)
	require.NoError(t, err)
	verifier, err := secure.NewVerifier(fleet.Authority.Public())
	require.NoError(t, err)
	l.cfg = secure.HandshakeConfig{
		Identity:   id,
		Credential: fleet.Issue(t, fleet.Authority, id.Identifier(), map[string]string{"role": "listener"}, now, time.Hour),
		Verifier:   verifier,
		Admit:      admit,
	}
	l.ln, err = net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.stop)
	return l
}

func (l *listener) setAnswer(a func(secure.Message) secure.Message) {
	l.mu.Lock()
	l.answer = a
	l.mu.Unlock()
}

// messages returns the data messages received so far.
func (l *listener) messages() []secure.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]secure.Message(nil), l.received...)
}

// endedChannels returns how many channels the listener read to their end.
func (l *listener) endedChannels() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended
}

// channels returns the device's credential of each channel accepted.
func (l *listener) channels() []*secure.Credential {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*secure.Credential(nil), l.creds...)
}

func (l *listener) accept() {
	defer l.wg.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns = append(l.conns, conn)
		l.mu.Unlock()
		l.wg.Go(func() { l.serve(conn) })
	}
}

func (l *listener) serve(conn net.Conn) {
	defer conn.Close()
	defer func() {
		l.mu.Lock()
		l.ended++
		l.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	ch, err := secure.Accept(ctx, secure.NewStreamTransport(conn), l.cfg)
	cancel()
	if err != nil {
		return
	}
	l.mu.Lock()
	l.creds = append(l.creds, ch.Peer().Credential)
	l.mu.Unlock()
	for {
		m, err := ch.Receive()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.received = append(l.received, m)
		answer := l.answer
		l.mu.Unlock()
		if a := answer(m); a.Type != 0 {
			if err := ch.Send(a); err != nil {
				return
			}
		}
	}
}

func (l *listener) stop() {
	l.ln.Close()
	l.mu.Lock()
	for _, c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// counts is a Counter that remembers its total.
type counts struct {
	mu sync.Mutex
	n  int64
}

func (c *counts) Incr(n int64) {
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
}

func (c *counts) get() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// newSender returns a started sender of l's device to l, with its counters
// by field name; it is closed when the test ends. modify may change the
// configuration first.
func newSender(t *testing.T, l *listener, modify ...func(*Config)) (*Sender, map[string]*counts, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{}
	tr, err := trust.Open(TrustConfig(trust.Config{
		Vault:      l.device.VaultPath,
		Credential: l.device.CredentialPath,
		Authority:  l.fleet.AuthorityFile,
		Log:        log,
	}))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) }) // after the sender's Close
	target, err := ParseTarget("tcp://"+l.ln.Addr().String(), nil)
	require.NoError(t, err)
	stats := map[string]*counts{}
	cfg := Config{
		Target: target, Trust: tr, Timeout: testTimeout, CredentialPath: l.device.CredentialPath, Log: log,
		Stats: NewStats(func(field string) Counter {
			c := &counts{}
			stats[field] = c
			return c
		}),
	}
	for _, m := range modify {
		m(&cfg)
	}
	s, err := New(cfg)
	require.NoError(t, err)
	s.Start()
	t.Cleanup(s.Close)
	return s, stats, log
}

// lines returns one buffer of n lines of line protocol, as payloads of one
// line each (adjacent in memory, as outputs.ockam makes them).
func lines(name string, n int) ([]byte, []Payload) {
	var buf []byte
	var ends []int
	for i := range n {
		buf = append(buf, name+",host=h v="...)
		buf = append(buf, byte('0'+i%10))
		buf = append(buf, "i 1700000000000000000\n"...)
		ends = append(ends, len(buf))
	}
	payloads := make([]Payload, n)
	start := 0
	for i, end := range ends {
		payloads[i] = Payload{Lines: buf[start:end], Metrics: 1}
		start = end
	}
	return buf, payloads
}
