package secure

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// t0 is the fixed "now" of the tests; every other time is relative to it.
var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// credentialTTL is the lifetime of the credentials the tests issue.
const credentialTTL = 24 * time.Hour

// testEnv is one authority, a device and a listener with a credential each
// from that authority, and a Verifier that trusts it.
type testEnv struct {
	authority, device, listener *LocalIdentity
	deviceCred, listenerCred    *Credential
	verifier                    *Verifier
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{authority: newIdentity(t), device: newIdentity(t), listener: newIdentity(t)}
	e.deviceCred = issue(t, e.authority, e.device.Identifier(), map[string]string{"role": "sensor", "site": "plant-7"})
	e.listenerCred = issue(t, e.authority, e.listener.Identifier(), map[string]string{"role": "listener"})
	e.verifier = newVerifier(t, e.authority)
	return e
}

// deviceConfig is the initiator's side: the device, checked at t0.
func (e *testEnv) deviceConfig() HandshakeConfig {
	return HandshakeConfig{Identity: e.device, Credential: e.deviceCred, Verifier: e.verifier, Now: fixedNow(t0)}
}

// listenerConfig is the responder's side: the listener, checked at t0.
func (e *testEnv) listenerConfig() HandshakeConfig {
	return HandshakeConfig{Identity: e.listener, Credential: e.listenerCred, Verifier: e.verifier, Now: fixedNow(t0)}
}

func fixedNow(now time.Time) func() time.Time { return func() time.Time { return now } }

// newIdentity creates an identity with random keys in a memory vault at t0.
func newIdentity(t testing.TB) *LocalIdentity {
	t.Helper()
	l, err := CreateIdentity(vault.NewMemory(), t0)
	require.NoError(t, err)
	return l
}

// seededIdentity builds an identity from fixed keys, for vectors, with its
// purpose key attested at created for DefaultAttestationTTL.
func seededIdentity(t testing.TB, signerSeed, purposeScalar [32]byte, created time.Time) *LocalIdentity {
	t.Helper()
	signer := vault.NewSignerFromSeed(signerSeed)
	purpose := vault.NewDHFromScalar(purposeScalar)
	a, err := Attest(signer, purpose.PublicKey(), created, DefaultAttestationTTL)
	require.NoError(t, err)
	return &LocalIdentity{signer: signer, purpose: purpose, slot: purposeSlots[0], public: &Identity{attestation: a}}
}

// issue signs a credential for subject, issued at t0 for credentialTTL.
func issue(t testing.TB, authority *LocalIdentity, subject Identifier, attrs map[string]string) *Credential {
	t.Helper()
	c, err := IssueCredential(authority.Signer(), subject, attrs, t0, credentialTTL, nil)
	require.NoError(t, err)
	return c
}

func newVerifier(t testing.TB, authorities ...*LocalIdentity) *Verifier {
	t.Helper()
	var pub []*Identity
	for _, a := range authorities {
		pub = append(pub, a.Public())
	}
	v, err := NewVerifier(pub...)
	require.NoError(t, err)
	return v
}

// flip returns a copy of b with byte i XORed with mask.
func flip(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	c[i] ^= mask
	return c
}

// memTransport is the in-memory twin of a Transport (as wireguard-go's
// bindtest.ChannelBind is of a Bind): whole messages over Go channels.
// Closing one end fails its own calls with net.ErrClosed; the other end
// reads what was already sent, then io.EOF, and its writes fail with
// io.ErrClosedPipe.
type memTransport struct {
	in, out   *memLink
	closeOnce sync.Once
	writes    atomic.Int64
	waiting   atomic.Int64 // writes waiting for room in the pipe
	// tap, when set before first use, sees a copy of every message written.
	tap func(msg []byte)
}

var _ Transport = (*memTransport)(nil)

type memLink struct {
	ch                     chan []byte
	writerDone, readerDone chan struct{}
}

func newMemLink(buffer int) *memLink {
	return &memLink{ch: make(chan []byte, buffer), writerDone: make(chan struct{}), readerDone: make(chan struct{})}
}

// newMemPipe returns two connected ends; each direction buffers buffer
// messages (0: every write waits for the reader, like net.Pipe).
func newMemPipe(buffer int) (a, b *memTransport) {
	ab, ba := newMemLink(buffer), newMemLink(buffer)
	return &memTransport{in: ba, out: ab}, &memTransport{in: ab, out: ba}
}

func (m *memTransport) WriteMessage(msg []byte) error {
	if len(msg) == 0 || len(msg) > MaxNoiseMessage {
		return fmt.Errorf("memTransport: message of %d bytes", len(msg))
	}
	select {
	case <-m.out.writerDone:
		return net.ErrClosed
	case <-m.out.readerDone:
		return io.ErrClosedPipe
	default:
	}
	msg = bytes.Clone(msg)
	if m.tap != nil {
		m.tap(bytes.Clone(msg))
	}
	m.waiting.Add(1)
	defer m.waiting.Add(-1)
	select {
	case m.out.ch <- msg:
		m.writes.Add(1)
		return nil
	case <-m.out.writerDone:
		return net.ErrClosed
	case <-m.out.readerDone:
		return io.ErrClosedPipe
	}
}

func (m *memTransport) ReadMessage() ([]byte, error) {
	select {
	case <-m.in.readerDone:
		return nil, net.ErrClosed
	default:
	}
	select {
	case msg := <-m.in.ch:
		return msg, nil
	default:
	}
	select {
	case msg := <-m.in.ch:
		return msg, nil
	case <-m.in.readerDone:
		return nil, net.ErrClosed
	case <-m.in.writerDone:
		select {
		case msg := <-m.in.ch:
			return msg, nil
		default:
			return nil, io.EOF
		}
	}
}

func (m *memTransport) Close() error {
	m.closeOnce.Do(func() {
		close(m.out.writerDone)
		close(m.in.readerDone)
	})
	return nil
}

// errInjected is the failure faultTransport injects.
var errInjected = errors.New("injected I/O failure")

// faultTransport fails its nth I/O (reads and writes counted together,
// from 0) with errInjected, like x/crypto/ssh's
// testHandshakeErrorHandlingN. It is used by one goroutine.
type faultTransport struct {
	Transport
	n, ops int
}

func (f *faultTransport) fail() bool {
	f.ops++
	return f.ops-1 == f.n
}

func (f *faultTransport) WriteMessage(msg []byte) error {
	if f.fail() {
		return errInjected
	}
	return f.Transport.WriteMessage(msg)
}

func (f *faultTransport) ReadMessage() ([]byte, error) {
	if f.fail() {
		return nil, errInjected
	}
	return f.Transport.ReadMessage()
}

// dialAccept runs Dial on dt and Accept on lt concurrently and returns both
// outcomes. It fails the test if either side has not returned within 10 s
// (a hang); the context has a longer deadline so that it is never what
// ends a handshake here.
func dialAccept(t *testing.T, dt, lt Transport, dcfg, lcfg HandshakeConfig) (dev, lis *Channel, derr, lerr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lis, lerr = Accept(ctx, lt, lcfg)
	}()
	ddone := make(chan struct{})
	go func() {
		defer close(ddone)
		dev, derr = Dial(ctx, dt, dcfg)
	}()
	for _, c := range []chan struct{}{ddone, done} {
		select {
		case <-c:
		case <-time.After(10 * time.Second):
			t.Fatal("handshake hangs")
		}
	}
	return dev, lis, derr, lerr
}

// newChannelPair establishes a device and a listener channel over an
// in-memory pipe that buffers 64 messages each way.
func newChannelPair(t *testing.T, e *testEnv) (dev, lis *Channel, dt, lt *memTransport) {
	t.Helper()
	dt, lt = newMemPipe(64)
	dev, lis, derr, lerr := dialAccept(t, dt, lt, e.deviceConfig(), e.listenerConfig())
	require.NoError(t, derr)
	require.NoError(t, lerr)
	t.Cleanup(func() {
		// Close the carriers, not the channels: a Close that waits on a full
		// pipe would hang the cleanup of a test that stopped reading.
		dt.Close()
		lt.Close()
	})
	return dev, lis, dt, lt
}
