package secure

import (
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// The I/O drivers of the handshake: Dial and Accept.

func TestDialAccept(t *testing.T) {
	e := newTestEnv(t)
	c1, c2 := net.Pipe()
	dev, lis, derr, lerr := dialAccept(t, NewStreamTransport(c1), NewStreamTransport(c2), e.deviceConfig(), e.listenerConfig())
	require.NoError(t, derr)
	require.NoError(t, lerr)
	t.Cleanup(func() {
		c1.Close()
		c2.Close()
	})
	require.Equal(t, dev.ChannelBinding(), lis.ChannelBinding())
	require.Equal(t, e.listener.Identifier(), dev.Peer().Identifier)
	require.Equal(t, e.device.Identifier(), lis.Peer().Identifier)

	go func() { _ = dev.Send(Message{Type: TypeData, Batch: 1, Payload: []byte("cpu usage=1")}) }()
	m, err := lis.Receive()
	require.NoError(t, err)
	require.Equal(t, Message{Type: TypeData, Batch: 1, Payload: []byte("cpu usage=1")}, m)
}

// TestDialAcceptFaults fails each I/O of each side in turn (like x/crypto
// ssh's testHandshakeErrorHandlingN): both sides must return an error, the
// failing one with the injected error, neither may hang, and both carriers
// must be closed.
func TestDialAcceptFaults(t *testing.T) {
	e := newTestEnv(t)
	carriers := map[string]func() (Transport, Transport, func()){
		"memory": func() (Transport, Transport, func()) {
			a, b := newMemPipe(0)
			return a, b, func() {}
		},
		"net.Pipe": func() (Transport, Transport, func()) {
			a, b := net.Pipe()
			return NewStreamTransport(a), NewStreamTransport(b), func() { a.Close(); b.Close() }
		},
	}
	for name, carrier := range carriers {
		for _, faultyDevice := range []bool{true, false} {
			for n := range 5 { // each side does 4 I/Os; n = 4 fails none
				dt, lt, cleanup := carrier()
				t.Cleanup(cleanup)
				var faulty *faultTransport
				if faultyDevice {
					faulty = &faultTransport{Transport: dt, n: n}
					dt = faulty
				} else {
					faulty = &faultTransport{Transport: lt, n: n}
					lt = faulty
				}
				dev, lis, derr, lerr := dialAccept(t, dt, lt, e.deviceConfig(), e.listenerConfig())
				what := name + ", " + map[bool]string{true: "device", false: "listener"}[faultyDevice]
				if n == 4 {
					require.NoError(t, derr, what)
					require.NoError(t, lerr, what)
					require.Equal(t, dev.ChannelBinding(), lis.ChannelBinding())
					continue
				}
				require.Error(t, derr, "%s fails I/O %d", what, n)
				require.Error(t, lerr, "%s fails I/O %d", what, n)
				require.Nil(t, dev)
				require.Nil(t, lis)
				if faultyDevice {
					require.ErrorIs(t, derr, errInjected)
				} else {
					require.ErrorIs(t, lerr, errInjected)
				}
				// Both drivers closed their carriers.
				require.Error(t, dt.WriteMessage([]byte{1}), what)
				require.Error(t, lt.WriteMessage([]byte{1}), what)
			}
		}
	}
}

// TestHandshakeTimeout: a peer that never answers, at each step; the
// handshake ends when ctx does, and the error says so.
func TestHandshakeTimeout(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name string
		run  func(ctx context.Context, own, peer *memTransport) error
	}{
		{"dial, no message 2", func(ctx context.Context, own, peer *memTransport) error {
			_, err := Dial(ctx, own, e.deviceConfig())
			return err
		}},
		{"accept, no message 1", func(ctx context.Context, own, peer *memTransport) error {
			_, err := Accept(ctx, own, e.listenerConfig())
			return err
		}},
		{"accept, no message 3", func(ctx context.Context, own, peer *memTransport) error {
			i, err := NewInitiator(e.deviceConfig())
			if err != nil {
				return err
			}
			msg1, err := i.Start()
			if err != nil {
				return err
			}
			if err := peer.WriteMessage(msg1); err != nil {
				return err
			}
			_, err = Accept(ctx, own, e.listenerConfig())
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				own, peer := newMemPipe(4)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				start := time.Now()
				err := tc.run(ctx, own, peer)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				require.Equal(t, 10*time.Second, time.Since(start))
				require.ErrorIs(t, own.WriteMessage([]byte{1}), net.ErrClosed, "the carrier is closed")
			})
		})
	}

	t.Run("context already done", func(t *testing.T) {
		own, _ := newMemPipe(4)
		ctx, cancel := context.WithCancelCause(t.Context())
		cause := errors.New("shutting down")
		cancel(cause)
		_, err := Dial(ctx, own, e.deviceConfig())
		require.ErrorIs(t, err, cause)
	})
}
