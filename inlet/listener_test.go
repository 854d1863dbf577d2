package inlet

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
	"github.com/ockam-addons/telegraf-ockam/trust"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// channelFixture is a device enrolled with an authority, and a listener on
// loopback that answers every data message at once, as answer says: a stand-in
// for inputs.ockam_listener whose outputs deliver instantly.
type channelFixture struct {
	device ockamtest.Member
	fleet  *ockamtest.Fleet
	ln     net.Listener
	cfg    secure.HandshakeConfig

	mu       sync.Mutex
	answer   func(secure.Message) secure.Message
	payloads [][]byte // data messages received, when keep
	keep     bool
	lines    int // lines received
	conns    []net.Conn
	wg       sync.WaitGroup
}

// newChannelFixture starts the listener; it stops when the test ends.
func newChannelFixture(t testing.TB, keep bool) *channelFixture {
	t.Helper()
	fleet := ockamtest.NewFleet(t)
	f := &channelFixture{fleet: fleet, device: fleet.Enroll(t, "device", map[string]string{"role": "sensor"}), keep: keep}
	now := time.Now()
	listener, err := secure.CreateIdentity(vault.NewMemory(), now)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := secure.NewVerifier(fleet.Authority.Public())
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = secure.HandshakeConfig{
		Identity:   listener,
		Credential: fleet.Issue(t, fleet.Authority, listener.Identifier(), map[string]string{"role": "listener"}, now, time.Hour),
		Verifier:   verifier,
	}
	f.answer = func(m secure.Message) secure.Message { return secure.Message{Type: secure.TypeAck, Batch: m.Batch} }
	if f.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.stop)
	return f
}

// senderTimeout is the sender's timeout: no dial and no answer runs out of
// it on a loaded machine.
const senderTimeout = 30 * time.Second

// sender returns a sender for the device, started, connecting to the
// listener, and closed when the test ends; it counts in stats if not nil.
func (f *channelFixture) sender(t testing.TB, stats *selfstat.Collector) *sender.Sender {
	t.Helper()
	tr, err := trust.Open(sender.TrustConfig(trust.Config{
		Vault:      f.device.VaultPath,
		Credential: f.device.CredentialPath,
		Authority:  f.fleet.AuthorityFile,
		Log:        testutil.Logger{Quiet: true},
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() }) // after the sender's Close
	target, err := sender.ParseTarget("tcp://"+f.ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := sender.Config{Target: target, Trust: tr, Timeout: senderTimeout, Log: testutil.Logger{Quiet: true}}
	if stats != nil {
		cfg.Stats = sender.NewStats(func(field string) sender.Counter { return stats.Register("ockam", field, nil) })
	}
	s, err := sender.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// output returns outputs.ockam for the device, connected to the listener
// and closed when the test ends.
func (f *channelFixture) output(t testing.TB) *ockam.Output {
	t.Helper()
	o := &ockam.Output{
		Address:        "tcp://" + f.ln.Addr().String(),
		VaultPath:      f.device.VaultPath,
		CredentialPath: f.device.CredentialPath,
		AuthorityPath:  f.fleet.AuthorityFile,
		Timeout:        config.Duration(senderTimeout),
		Log:            testutil.Logger{Quiet: true},
	}
	if err := o.Init(); err != nil {
		t.Fatal(err)
	}
	if err := o.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	return o
}

func (f *channelFixture) setAnswer(a func(secure.Message) secure.Message) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

// received returns the data payloads kept so far.
func (f *channelFixture) received() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.payloads...)
}

func (f *channelFixture) accept() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, conn)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(conn)
		}()
	}
}

func (f *channelFixture) serve(conn net.Conn) {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), senderTimeout)
	ch, err := secure.Accept(ctx, secure.NewStreamTransport(conn), f.cfg)
	cancel()
	if err != nil {
		return
	}
	for {
		m, err := ch.Receive()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.lines += bytes.Count(m.Payload, []byte("\n"))
		if f.keep {
			f.payloads = append(f.payloads, m.Payload)
		}
		a := f.answer(m)
		f.mu.Unlock()
		if err := ch.Send(a); err != nil {
			return
		}
	}
}

// stop closes the listener and every channel, and waits for them.
func (f *channelFixture) stop() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
