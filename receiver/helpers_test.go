package receiver

import (
	"context"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/trust"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// wait bounds every wait for something that should happen promptly, with
// room for a loaded machine: only a failing test waits that long.
const wait = 30 * time.Second

// fixture is a fleet on disk: an authority, the receiver's vault and
// credential, and the verifier devices use.
type fixture struct {
	t        testing.TB
	fleet    *ockamtest.Fleet
	member   ockamtest.Member
	verifier *secure.Verifier
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := ockamtest.NewFleet(t)
	v, err := secure.NewVerifier(f.Authority.Public())
	require.NoError(t, err)
	return &fixture{t: t, fleet: f, member: f.Enroll(t, "receiver", map[string]string{"role": "listener"}), verifier: v}
}

// config returns the settings of inputs.ockam_listener's defaults, on a
// free loopback port, stamping ockam_identity and site.
func (f *fixture) config() Config {
	return Config{
		Network:                        "tcp",
		Address:                        "127.0.0.1:0",
		IdentityTag:                    "ockam_identity",
		AttributeTags:                  []string{"site"},
		MaxConnections:                 100,
		MaxHandshakesPerIP:             32,
		MaxChannelsPerIdentity:         16,
		HandshakeTimeout:               wait,
		ReadTimeout:                    5 * time.Minute,
		MaxReceivedMessageSize:         secure.DefaultMaxMessageSize,
		MaxUndeliveredMessages:         1000,
		MaxUndeliveredBytesPerChannel:  32 << 20,
		MaxUndeliveredBytesPerIdentity: 64 << 20,
		RevocationCheckInterval:        time.Second,
		Trust: trust.Config{
			Vault:       f.member.VaultPath,
			Credential:  f.member.CredentialPath,
			Authorities: []string{f.fleet.AuthorityFile},
			Peers:       "devices",
		},
		Log: logger.Nop{},
	}
}

// start creates a receiver of cfg with counters c and starts it with sink;
// it stops at the end of the test.
func start(t *testing.T, cfg Config, c *counters, sink Sink) *Receiver {
	t.Helper()
	cfg.Counters = c.register
	r, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, r.Start(sink))
	t.Cleanup(r.Stop)
	return r
}

// counters is a Registry whose values the tests read.
type counters struct {
	mu sync.Mutex
	m  map[string]*counter
}

func newCounters() *counters { return &counters{m: make(map[string]*counter)} }

func (c *counters) register(field string, tags map[string]string) Counter {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := field + "," + tags["reason"]
	if c.m[k] == nil {
		c.m[k] = new(counter)
	}
	return c.m[k]
}

// get returns the value of field (with reason tag reason, or "").
func (c *counters) get(field, reason string) int64 {
	ctr := c.register(field, map[string]string{"reason": reason}).(*counter)
	ctr.mu.Lock()
	defer ctr.mu.Unlock()
	return ctr.v
}

// requireCounter waits until field reaches want, and checks it is exactly
// want.
func (c *counters) requireCounter(t *testing.T, field, reason string, want int64) {
	t.Helper()
	require.Eventually(t, func() bool { return c.get(field, reason) >= want }, wait, time.Millisecond, "%s %s", field, reason)
	require.Equal(t, want, c.get(field, reason), "%s %s", field, reason)
}

// device is a sender with an identity in memory.
type device struct {
	id   *secure.LocalIdentity
	cred *secure.Credential
}

func (f *fixture) device(attrs map[string]string) *device {
	f.t.Helper()
	id, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	require.NoError(f.t, err)
	return &device{id: id, cred: f.fleet.Issue(f.t, f.fleet.Authority, id.Identifier(), attrs, time.Now(), time.Hour)}
}

// client is a device's open channel, with its replies read into a channel.
type client struct {
	t       *testing.T
	ch      *secure.Channel
	replies chan secure.Message
	done    chan struct{}
	err     error
}

// open opens a channel from d to addr, without a reader.
func (f *fixture) open(t *testing.T, d *device, addr net.Addr) *secure.Channel {
	t.Helper()
	nc, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(nc), secure.HandshakeConfig{
		Identity: d.id, Credential: d.cred, Verifier: f.verifier,
	})
	require.NoError(t, err)
	return ch
}

// dial opens a channel from d to addr, whose answers a reader collects.
func (f *fixture) dial(t *testing.T, d *device, addr net.Addr) *client {
	t.Helper()
	ch := f.open(t, d, addr)
	c := &client{t: t, ch: ch, replies: make(chan secure.Message, 100), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			m, err := ch.Receive()
			if err != nil {
				c.err = err
				return
			}
			c.replies <- m
		}
	}()
	t.Cleanup(func() { ch.Close("test done") })
	return c
}

func (c *client) send(batch uint64, payload string) {
	c.t.Helper()
	require.NoError(c.t, c.ch.Send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: []byte(payload)}))
}

// reply returns the next ack or nack.
func (c *client) reply() secure.Message {
	c.t.Helper()
	select {
	case m := <-c.replies:
		return m
	case <-c.done:
		c.t.Fatalf("channel closed while waiting for a reply: %v", c.err)
	case <-time.After(wait):
		c.t.Fatal("no reply")
	}
	return secure.Message{}
}

// delivery is one call of Sink.Deliver.
type delivery struct {
	peer    Peer
	metrics []telegraf.Metric
	done    func(Outcome)
	// doneBefore is how many done calls of the sink came before this
	// delivery.
	doneBefore int64
}

// chanSink hands every delivery to the test, and counts the done calls.
type chanSink struct {
	ch    chan delivery
	dones atomic.Int64
}

func newChanSink() *chanSink { return &chanSink{ch: make(chan delivery, 100)} }

func (s *chanSink) Deliver(peer Peer, metrics []telegraf.Metric, done func(Outcome)) {
	s.ch <- delivery{peer: peer, metrics: metrics, doneBefore: s.dones.Load(), done: func(o Outcome) {
		s.dones.Add(1)
		done(o)
	}}
}

// next returns the next delivery.
func (s *chanSink) next(t *testing.T) delivery {
	t.Helper()
	select {
	case d := <-s.ch:
		return d
	case <-time.After(wait):
		t.Fatal("nothing delivered")
	}
	return delivery{}
}

// outcomeSink answers every delivery at once, inside Deliver, with o.
type outcomeSink struct {
	o    Outcome
	mu   sync.Mutex
	seen []delivery
}

func (s *outcomeSink) Deliver(peer Peer, metrics []telegraf.Metric, done func(Outcome)) {
	s.mu.Lock()
	s.seen = append(s.seen, delivery{peer: peer, metrics: metrics})
	s.mu.Unlock()
	done(s.o)
}

func (s *outcomeSink) deliveries() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivery(nil), s.seen...)
}

// tags returns a metric's tags.
func tags(m telegraf.Metric) map[string]string { return maps.Clone(m.Tags()) }
