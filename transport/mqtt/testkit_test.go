package mqtt

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt/mqtttest"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// base is the base topic of the tests.
const base = "ockam/plant-7"

// waitFor bounds every wait of the tests on the broker.
const waitFor = 30 * time.Second

// newBroker starts a broker and returns it with the address of base on it.
func newBroker(t *testing.T) (*mqtttest.B, string) {
	t.Helper()
	b := mqtttest.Broker(t)
	return b, b.URL() + "/" + base
}

// testLogger logs through t, and stops at the end of the test.
type testLogger struct{ t *testing.T }

func (l testLogger) Debugf(f string, a ...any) { l.t.Logf("debug: "+f, a...) }
func (l testLogger) Infof(f string, a ...any)  { l.t.Logf("info: "+f, a...) }
func (l testLogger) Warnf(f string, a ...any)  { l.t.Logf("warn: "+f, a...) }
func (l testLogger) Errorf(f string, a ...any) { l.t.Logf("error: "+f, a...) }

func listen(t *testing.T, addr string, opts Options) *Listener {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger{t}
	}
	l, err := Listen(addr, opts)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	return l
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	c, err := Dial(ctx, addr, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// accept returns the listener's next session, failing after waitFor.
func accept(t *testing.T, l *Listener) net.Conn {
	t.Helper()
	c, err := acceptWithin(l, waitFor)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// acceptWithin returns the next session, or an error after d (the Accept
// goroutine then closes the session it gets, if any).
func acceptWithin(l *Listener, d time.Duration) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	done := make(chan struct{})
	go func() {
		c, err := l.Accept()
		select {
		case ch <- result{c, err}:
		case <-done:
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-time.After(d):
		close(done)
		return nil, context.DeadlineExceeded
	}
}

// readN reads exactly n bytes from c within waitFor.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(waitFor)))
	b := make([]byte, n)
	_, err := io.ReadFull(c, b)
	require.NoError(t, err)
	return b
}

// readErr reads from c until an error, within d, and returns it.
func readErr(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return io.EOF // io.Copy hides it
	}
	return err
}

func write(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(waitFor)))
	n, err := c.Write(b)
	require.NoError(t, err)
	require.Equal(t, len(b), n)
}

// channelEnv is an authority, a device and a listener, each with its
// identity in a memory vault and a credential: the handshake configs of
// both ends of a secure channel.
type channelEnv struct {
	device, listener secure.HandshakeConfig
}

func newChannelEnv(t *testing.T) channelEnv {
	t.Helper()
	now := time.Now()
	ident := func() *secure.LocalIdentity {
		l, err := secure.CreateIdentity(vault.NewMemory(), now)
		require.NoError(t, err)
		return l
	}
	authority, device, listener := ident(), ident(), ident()
	cred := func(l *secure.LocalIdentity, attrs map[string]string) *secure.Credential {
		c, err := secure.IssueCredential(authority.Signer(), l.Identifier(), attrs, now, time.Hour, nil)
		require.NoError(t, err)
		return c
	}
	v, err := secure.NewVerifier(authority.Public())
	require.NoError(t, err)
	return channelEnv{
		device: secure.HandshakeConfig{Identity: device, Credential: cred(device, map[string]string{"role": "sensor"}),
			Verifier: v, PeerAttributes: map[string]string{"role": "listener"}},
		listener: secure.HandshakeConfig{Identity: listener, Credential: cred(listener, map[string]string{"role": "listener"}),
			Verifier: v},
	}
}

// secureDial runs the device's handshake over a new session.
func (e channelEnv) secureDial(t *testing.T, addr string) *secure.Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	conn, err := Dial(ctx, addr, Options{})
	require.NoError(t, err)
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), e.device)
	require.NoError(t, err)
	t.Cleanup(func() { ch.Close("test over") })
	return ch
}

// serveEcho accepts secure channels on l until it is closed, and answers
// every data message with a data message of the same batch whose payload
// is "echo: " and the payload. Each handshake's result goes to results.
func (e channelEnv) serveEcho(t *testing.T, l *Listener, results chan<- error) {
	t.Helper()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				ch, err := secure.Accept(ctx, secure.NewStreamTransport(conn), e.listener)
				if results != nil {
					results <- err
				}
				if err != nil {
					return
				}
				defer ch.Close("bye")
				for {
					m, err := ch.Receive()
					if err != nil {
						return
					}
					reply := secure.Message{Type: secure.TypeData, Batch: m.Batch, Payload: append([]byte("echo: "), m.Payload...)}
					if ch.Send(reply) != nil {
						return
					}
				}
			}()
		}
	}()
}

// roundTrip sends payload as batch over ch and checks the echo.
func roundTrip(t *testing.T, ch *secure.Channel, batch uint64, payload []byte) {
	t.Helper()
	require.NoError(t, ch.Send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: payload}))
	m, err := ch.Receive()
	require.NoError(t, err)
	require.Equal(t, secure.TypeData, m.Type)
	require.Equal(t, batch, m.Batch)
	require.Equal(t, append([]byte("echo: "), payload...), m.Payload)
}
