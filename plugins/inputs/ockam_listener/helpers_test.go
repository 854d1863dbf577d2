package ockam_listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// wait bounds every wait for something that should happen promptly, with
// room for a loaded machine: only a failing test waits that long.
const wait = 30 * time.Second

// pki is one authority and the files a listener needs, in a temporary
// directory.
type pki struct {
	t             testing.TB
	dir           string
	now           time.Time
	authority     *secure.LocalIdentity
	authorityFile string
	verifier      *secure.Verifier // trusts authority; used by devices
}

// newPKI is an ockamtest fleet (an authority and its identity file in a
// temporary directory) with the verifier that devices use.
func newPKI(t testing.TB) *pki {
	t.Helper()
	f := ockamtest.NewFleet(t)
	v, err := secure.NewVerifier(f.Authority.Public())
	require.NoError(t, err)
	return &pki{t: t, dir: f.Dir, now: time.Now(), authority: f.Authority, authorityFile: f.AuthorityFile, verifier: v}
}

// write writes a file into the directory, atomically (rename), and returns
// its path.
func (p *pki) write(name string, data []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	tmp := path + ".tmp"
	require.NoError(p.t, os.WriteFile(tmp, data, 0o600))
	require.NoError(p.t, os.Rename(tmp, path))
	return path
}

// listenerFiles creates a listener vault (encrypted when passphrase is not
// empty) and a credential issued at issued for ttl; it returns the vault
// directory and the credential file.
func (p *pki) listenerFiles(name, passphrase string, issued time.Time, ttl time.Duration) (vaultDir, credFile string) {
	p.t.Helper()
	vaultDir = filepath.Join(p.dir, name)
	v, err := vault.OpenFile(vaultDir, []byte(passphrase))
	require.NoError(p.t, err)
	id, err := secure.CreateIdentity(v, p.now)
	require.NoError(p.t, err)
	cred, err := secure.IssueCredential(p.authority.Signer(), id.Identifier(), map[string]string{"role": "listener"}, issued, ttl, nil)
	require.NoError(p.t, err)
	return vaultDir, p.write(name+".cred", cred.MarshalFile())
}

var listeners atomic.Int64

// listener returns a configured, not yet initialized Listener on a free
// loopback port, with its own internal-metrics collector.
func (p *pki) listener() *Listener {
	p.t.Helper()
	vaultDir, credFile := p.listenerFiles("listener", "", p.now, 24*time.Hour)
	l := New()
	l.ServiceAddress = "tcp://127.0.0.1:0"
	l.VaultPath = vaultDir
	l.CredentialPath = credFile
	l.AuthorityPaths = []string{p.authorityFile}
	l.Log = testutil.Logger{Name: "ockam_listener"}
	// Stats live in a global registry: unique tags keep runs apart (-count).
	l.Statistics = selfstat.NewCollector(map[string]string{"listener": fmt.Sprint(listeners.Add(1))})
	return l
}

// revocationList writes a revocation list of the authority.
func (p *pki) revocationList(seq uint64, revoked ...secure.Identifier) []byte {
	p.t.Helper()
	list, err := secure.NewRevocationList(p.authority.Signer(), seq, p.now, p.now.Add(secure.DefaultRevocationListValidity), revoked, nil)
	require.NoError(p.t, err)
	return list.MarshalFile()
}

// device is a sender: an identity in memory and its credential.
type device struct {
	id   *secure.LocalIdentity
	cred *secure.Credential
	pki  *pki
}

func (p *pki) device(attrs map[string]string) *device {
	p.t.Helper()
	return p.deviceFrom(p.authority, attrs, p.now, time.Hour)
}

// deviceFrom makes a device whose credential is issued by issuer.
func (p *pki) deviceFrom(issuer *secure.LocalIdentity, attrs map[string]string, issued time.Time, ttl time.Duration) *device {
	p.t.Helper()
	id, err := secure.CreateIdentity(vault.NewMemory(), p.now)
	require.NoError(p.t, err)
	cred, err := secure.IssueCredential(issuer.Signer(), id.Identifier(), attrs, issued, ttl, nil)
	require.NoError(p.t, err)
	return &device{id: id, cred: cred, pki: p}
}

// client is a device's open channel to the listener.
type client struct {
	t       *testing.T
	ch      *secure.Channel
	replies chan secure.Message
	done    chan struct{}
	err     error // why Receive stopped, once done is closed
}

// dial opens a channel to addr and starts reading replies.
func (d *device) dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := d.tryDial(addr)
	require.NoError(t, err)
	c.t = t
	t.Cleanup(func() { c.ch.Close("test done") })
	return c
}

func (d *device) tryDial(addr string) (*client, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(nc), secure.HandshakeConfig{
		Identity: d.id, Credential: d.cred, Verifier: d.pki.verifier,
	})
	if err != nil {
		return nil, err
	}
	c := &client{ch: ch, replies: make(chan secure.Message, 100), done: make(chan struct{})}
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
	return c, nil
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
		select { // the replies that came before the close
		case m := <-c.replies:
			return m
		default:
		}
		c.t.Fatalf("channel closed while waiting for a reply: %v", c.err)
	case <-time.After(wait):
		c.t.Fatal("no reply")
	}
	return secure.Message{}
}

// requireAck expects an ack of batch.
func (c *client) requireAck(batch uint64) {
	c.t.Helper()
	require.Equal(c.t, secure.Message{Type: secure.TypeAck, Batch: batch}, c.reply())
}

// requireNack expects a nack of batch whose reason starts with reason.
func (c *client) requireNack(batch uint64, permanent bool, reason string) secure.Message {
	c.t.Helper()
	m := c.reply()
	require.Equal(c.t, secure.TypeNack, m.Type, "reply %+v", m)
	require.Equal(c.t, batch, m.Batch)
	require.Equal(c.t, permanent, m.Permanent, "reply %+v", m)
	require.True(c.t, strings.HasPrefix(m.Reason, reason), "reason %q, want prefix %q", m.Reason, reason)
	return m
}

// requireNoReplyYet expects that nothing was answered so far: it sends
// marker, a message the listener refuses at once (bad line protocol), and
// expects its nack as the next reply. The listener answers a channel's
// messages in the order it queued the answers, so an answer given before the
// marker's would come first.
func (c *client) requireNoReplyYet(marker uint64) {
	c.t.Helper()
	c.send(marker, "not line protocol\n")
	c.requireNack(marker, true, reasonBadLine)
}

// requireNoReply expects nothing within d.
func (c *client) requireNoReply(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.replies:
		c.t.Fatalf("unexpected reply %+v", m)
	case <-time.After(d):
	}
}

// requireClosed expects the listener to close the channel, and returns why.
// No reply may come before the close.
func (c *client) requireClosed() error {
	c.t.Helper()
	return c.closedAfter(nil)
}

// requireClosedAfterAck expects the channel closed, tolerating one ack of
// batch before the close: a message delivered while the listener was
// already reading the frame that closes the channel is acked or not,
// depending on which of the two goroutines runs first.
func (c *client) requireClosedAfterAck(batch uint64) error {
	c.t.Helper()
	return c.closedAfter(&secure.Message{Type: secure.TypeAck, Batch: batch})
}

// closedAfter waits for the close, and fails on any reply but one optional
// ack (nil: none). The reader queues every reply it got before the close,
// then closes done: once done is closed, c.replies holds them all, so a
// select that finds both ready does not decide the outcome.
func (c *client) closedAfter(optional *secure.Message) error {
	c.t.Helper()
	check := func(m secure.Message) {
		c.t.Helper()
		if optional == nil || !reflect.DeepEqual(m, *optional) {
			c.t.Fatalf("unexpected reply %+v", m)
		}
		optional = nil // once
	}
	timeout := time.After(wait)
	for {
		select {
		case m := <-c.replies:
			check(m)
		case <-c.done:
			for {
				select {
				case m := <-c.replies:
					check(m)
				default:
					return c.err
				}
			}
		case <-timeout:
			c.t.Fatal("channel still open")
			return nil
		}
	}
}

// requireStat expects s to reach want and checks it is exactly want. For a
// counter that the listener moves on another goroutine after what the test
// observed (messages_accepted is counted after the metrics are emitted, so
// an ack may come first).
func requireStat(t *testing.T, s selfstat.Stat, want int64) {
	t.Helper()
	for deadline := time.Now().Add(wait); s.Get() != want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, want, s.Get(), "%s", s.FieldName())
}

// start initializes and starts l, and stops it at the end of the test.
func start(t *testing.T, l *Listener) (*outputs, string) {
	t.Helper()
	require.NoError(t, l.Init())
	acc := &testutil.Accumulator{}
	require.NoError(t, l.Start(acc))
	t.Cleanup(l.Stop)
	return &outputs{t: t, acc: acc}, l.receiver.Addr().String()
}

// outputs plays Telegraf's outputs: it takes the metrics the listener
// emitted, in order, each once.
type outputs struct {
	t     *testing.T
	acc   *testutil.Accumulator
	taken int
}

// take waits for n more metrics and returns them.
func (o *outputs) take(n int) []telegraf.Metric {
	o.t.Helper()
	var ms []telegraf.Metric
	require.Eventually(o.t, func() bool {
		ms = o.acc.GetTelegrafMetrics()
		return len(ms) >= o.taken+n
	}, wait, time.Millisecond, "waiting for %d metrics after %d", n, o.taken)
	ms = ms[o.taken : o.taken+n]
	o.taken += n
	return ms
}

func (o *outputs) accept(n int) []telegraf.Metric {
	o.t.Helper()
	ms := o.take(n)
	for _, m := range ms {
		m.Accept()
	}
	return ms
}

// requireNone checks that nothing beyond what was taken was emitted.
func (o *outputs) requireNone() {
	o.t.Helper()
	require.Len(o.t, o.acc.GetTelegrafMetrics(), o.taken)
}

// rawConn connects without a handshake.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc
}

// requireClosedByPeer expects the listener to close nc within d.
func requireClosedByPeer(t *testing.T, nc net.Conn, d time.Duration) {
	t.Helper()
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(d)))
	buf := make([]byte, 1024)
	for {
		_, err := nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection still open after %v", d)
		return
	}
}

// clock is an adjustable time source for the listener's validity checks.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// secret wraps a passphrase as Telegraf's config would.
func secret(s string) config.Secret { return config.NewSecret([]byte(s)) }

// startPiped starts l for a test inside a testing/synctest bubble, where
// the listener's timers run on the bubble's clock. It listens on no port (a
// goroutine in a real Accept never counts as blocked, so the clock would
// not move): each call of dial hands one end of a net.Pipe to the
// receiver's ServeConn, as a carrier does with a connection. l stops when
// the test ends.
func startPiped(t *testing.T, l *Listener) (out *outputs, dial func() net.Conn) {
	t.Helper()
	require.NoError(t, l.Init())
	require.NoError(t, l.trust.Close())
	l.network = "" // no service port
	require.NoError(t, l.newReceiver())
	acc := &testutil.Accumulator{}
	require.NoError(t, l.Start(acc))
	t.Cleanup(l.Stop)
	return &outputs{t: t, acc: acc}, func() net.Conn {
		dev, srv := net.Pipe()
		l.receiver.ServeConn(srv)
		t.Cleanup(func() { dev.Close() })
		return dev
	}
}

// dialPiped opens a channel over a connection of startPiped.
func (d *device) dialPiped(t *testing.T, dial func() net.Conn) *client {
	t.Helper()
	c, err := d.handshakeOver(dial(), secure.Identifier{})
	require.NoError(t, err)
	c.t = t
	t.Cleanup(func() { c.ch.Close("test done") })
	return c
}

// requireOpen checks that the listener neither answered nor closed c.
func (c *client) requireOpen() {
	c.t.Helper()
	select {
	case <-c.done:
		c.t.Fatalf("channel closed: %v", c.err)
	case m := <-c.replies:
		c.t.Fatalf("unexpected reply %+v", m)
	default:
	}
}

// checkCounter counts the reads of a listener's clock. The watch loop reads
// it once at the start of each check of its files, so a test that waits for
// n more reads (while no channel is busy) knows that n-1 checks ran in full.
type checkCounter struct{ reads atomic.Int64 }

// countChecks makes l's clock count its reads; call it before Init.
func countChecks(l *Listener) *checkCounter {
	c := &checkCounter{}
	l.now = func() time.Time {
		c.reads.Add(1)
		return time.Now()
	}
	return c
}

// waitChecks waits until the watch loop ran at least n more checks in full.
func (c *checkCounter) waitChecks(t *testing.T, n int64) {
	t.Helper()
	from := c.reads.Load()
	require.Eventually(t, func() bool { return c.reads.Load() > from+n }, wait, time.Millisecond,
		"waiting for %d checks of the files", n)
}
