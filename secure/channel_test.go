package secure

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sendAsync sends m from another goroutine and returns its result later:
// a large message needs the receiver running to get through the pipe.
func sendAsync(c *Channel, m Message) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Send(m) }()
	return done
}

func TestChannelMessages(t *testing.T) {
	e := newTestEnv(t)
	dev, lis, _, _ := newChannelPair(t, e)
	for _, m := range []Message{
		{Type: TypeData, Batch: 1, Payload: []byte("cpu,host=a usage=1 1700000000000000000\n")},
		{Type: TypeData, Batch: 2, Payload: []byte{}},
		{Type: TypeAck, Batch: 1},
		{Type: TypeNack, Batch: 2, Permanent: true, Reason: "policy: measurement mem not allowed"},
		{Type: TypeNack, Batch: 3, Reason: "shutting down"},
		{Type: TypeNack, Batch: 1<<64 - 1},
	} {
		for _, dir := range [][2]*Channel{{dev, lis}, {lis, dev}} {
			require.NoError(t, dir[0].Send(m))
			got, err := dir[1].Receive()
			require.NoError(t, err)
			if m.Type == TypeData && len(m.Payload) == 0 {
				require.Empty(t, got.Payload)
				got.Payload = m.Payload
			}
			require.Equal(t, m, got)
		}
	}
}

func TestChannelFragmentation(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name   string
		size   int
		frames int64
	}{
		{"0 bytes", 0, 1},
		{"1 byte", 1, 1},
		{"maxFragment", maxFragment, 1},
		{"maxFragment+1", maxFragment + 1, 2},
		{"3 MiB", 3 << 20, (3<<20 + maxFragment - 1) / maxFragment},
		{"DefaultMaxMessageSize", DefaultMaxMessageSize, (DefaultMaxMessageSize + maxFragment - 1) / maxFragment},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, lis, dt, _ := newChannelPair(t, e)
			payload := pattern(tc.size, 3)
			before := dt.writes.Load()
			sent := sendAsync(dev, Message{Type: TypeData, Batch: 42, Payload: payload})
			m, err := lis.Receive()
			require.NoError(t, err)
			require.NoError(t, <-sent)
			require.Equal(t, TypeData, m.Type)
			require.Equal(t, uint64(42), m.Batch)
			require.Equal(t, len(payload), len(m.Payload))
			require.True(t, bytes.Equal(payload, m.Payload))
			require.Equal(t, tc.frames, dt.writes.Load()-before, "frames")
		})
	}
	require.Equal(t, 65509, maxFragment, "65535 - 16 (tag) - 10 (data header)")
}

// TestHandshakeNegativeMaxMessageSize: a negative bound is a configuration
// error, not "no bound".
func TestHandshakeNegativeMaxMessageSize(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.listenerConfig()
	cfg.MaxMessageSize = -1
	_, err := NewResponder(cfg)
	require.EqualError(t, err, "secure: MaxMessageSize -1 is negative")
}

func TestChannelReassemblyBound(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name     string
		max, len int
		ok       bool
	}{
		{"at a set bound", 100000, 100000, true},
		{"over a set bound", 100000, 100001, false},
		{"over the default bound", 0, DefaultMaxMessageSize + 1, false},
		{"set bound of one fragment, two sent", maxFragment, maxFragment + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dt, lt := newMemPipe(64)
			lcfg := e.listenerConfig()
			lcfg.MaxMessageSize = tc.max // 0: the default
			dev, lis, derr, lerr := dialAccept(t, dt, lt, e.deviceConfig(), lcfg)
			require.NoError(t, derr)
			require.NoError(t, lerr)
			t.Cleanup(func() { dt.Close(); lt.Close() })
			sendAsync(dev, Message{Type: TypeData, Batch: 1, Payload: pattern(tc.len, 1)})
			m, err := lis.Receive()
			require.NoError(t, err)
			if tc.ok {
				require.False(t, m.TooLarge)
				require.Len(t, m.Payload, tc.len)
				return
			}
			// Read to its end and discarded: the channel goes on.
			require.Equal(t, Message{Type: TypeData, Batch: 1, TooLarge: true}, m)
			sendAsync(dev, Message{Type: TypeData, Batch: 2, Payload: []byte("next")})
			m, err = lis.Receive()
			require.NoError(t, err)
			require.Equal(t, Message{Type: TypeData, Batch: 2, Payload: []byte("next")}, m)
		})
	}
}

// sendRaw seals and writes plaintexts on c as they are, bypassing Send's
// encoding: what a misbehaving (but authenticated) peer can do.
func sendRaw(t *testing.T, c *Channel, plaintexts ...[]byte) {
	t.Helper()
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	for _, p := range plaintexts {
		require.NoError(t, c.writeLocked(p))
	}
}

func TestChannelMalformed(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name       string
		plaintexts [][]byte
	}{
		{"interleaved fragments", [][]byte{appendFragment(nil, 1, true, []byte("a")), appendFragment(nil, 2, false, []byte("b"))}},
		{"interleaved fragments, both with more", [][]byte{appendFragment(nil, 1, true, []byte("a")), appendFragment(nil, 2, true, []byte("b"))}},
		{"ack between fragments", [][]byte{appendFragment(nil, 1, true, []byte("a")), {byte(TypeAck), 0, 0, 0, 0, 0, 0, 0, 1}}},
		{"nack between fragments", [][]byte{appendFragment(nil, 1, true, []byte("a")), {byte(TypeNack), 0, 0, 0, 0, 0, 0, 0, 1, 1}}},
		{"close between fragments", [][]byte{appendFragment(nil, 1, true, []byte("a")), {byte(TypeClose)}}},
		{"fragment of another batch after more", [][]byte{appendFragment(nil, 1, true, nil), appendFragment(nil, 2, false, nil)}},
		{"rekey with a byte", [][]byte{{byte(TypeRekey), 0}}},
		{"unknown type", [][]byte{{9}}},
		{"empty plaintext", [][]byte{{}}},
		{"ack too short", [][]byte{{byte(TypeAck), 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, lis, _, _ := newChannelPair(t, e)
			sendRaw(t, dev, tc.plaintexts...)
			_, err := lis.Receive()
			require.ErrorIs(t, err, ErrMalformed)
			require.NoError(t, dev.Send(Message{Type: TypeAck, Batch: 1}), "a genuine message after it")
			_, again := lis.Receive()
			require.Equal(t, err, again, "does not revive the channel")
		})
	}
}

func TestChannelRekey(t *testing.T) {
	e := newTestEnv(t)
	dev, lis, dt, lt := newChannelPair(t, e)
	const limit, n = 3, 200
	dev.session.rekeyAfterMessages = limit
	lis.session.rekeyAfterMessages = limit
	devKey, lisKey := dev.session.send.UnsafeKey(), lis.session.send.UnsafeKey()
	devWrites, lisWrites := dt.writes.Load(), lt.writes.Load()

	var wg sync.WaitGroup
	for _, dir := range [][2]*Channel{{dev, lis}, {lis, dev}} {
		wg.Go(func() {
			for i := range n {
				assert.NoError(t, dir[0].Send(Message{Type: TypeData, Batch: uint64(i), Payload: []byte(fmt.Sprint(i))}))
			}
		})
		wg.Go(func() {
			for i := range n {
				m, err := dir[1].Receive()
				if !assert.NoError(t, err) {
					return
				}
				assert.Equal(t, uint64(i), m.Batch)
				assert.Equal(t, fmt.Sprint(i), string(m.Payload))
			}
		})
	}
	wg.Wait()
	// A rekey message after every 3 messages: n + (n-1)/3 frames each way.
	rekeys := int64((n - 1) / limit)
	require.Equal(t, n+rekeys, dt.writes.Load()-devWrites)
	require.Equal(t, n+rekeys, lt.writes.Load()-lisWrites)
	require.NotEqual(t, devKey, dev.session.send.UnsafeKey())
	require.NotEqual(t, lisKey, lis.session.send.UnsafeKey())
	require.Equal(t, dev.session.send.UnsafeKey(), lis.session.recv.UnsafeKey())
	require.Equal(t, lis.session.send.UnsafeKey(), dev.session.recv.UnsafeKey())
}

// TestChannelRekeyBetweenFragments: rekey belongs to the key schedule, not
// to the messages, so a sender rekeys between the fragments of a data
// message when a limit passes there, and the receiver reassembles the
// message across it (docs/PROTOCOL.md, section 9). Any other message
// between fragments is refused (TestChannelMalformed).
func TestChannelRekeyBetweenFragments(t *testing.T) {
	e := newTestEnv(t)
	dev, lis, dt, _ := newChannelPair(t, e)
	dev.session.rekeyAfterMessages = 1
	payload := pattern(2*maxFragment+1, 5)
	before := dt.writes.Load()
	sent := sendAsync(dev, Message{Type: TypeData, Batch: 9, Payload: payload})
	m, err := lis.Receive()
	require.NoError(t, err)
	require.NoError(t, <-sent)
	require.Equal(t, uint64(9), m.Batch)
	require.True(t, bytes.Equal(payload, m.Payload))
	// fragment, rekey, fragment, rekey, fragment
	require.Equal(t, int64(5), dt.writes.Load()-before)
	require.Equal(t, dev.session.send.UnsafeKey(), lis.session.recv.UnsafeKey())

	// The same by hand: a rekey between the two fragments of batch 10.
	sendRaw(t, dev, appendFragment(nil, 10, true, []byte("a")))
	dev.sendMu.Lock()
	require.NoError(t, dev.sealAndWrite([]byte{byte(TypeRekey)}))
	dev.session.rekeySend(time.Now())
	dev.sendMu.Unlock()
	sendRaw(t, dev, appendFragment(nil, 10, false, []byte("b")))
	m, err = lis.Receive()
	require.NoError(t, err)
	require.Equal(t, Message{Type: TypeData, Batch: 10, Payload: []byte("ab")}, m)
}

// TestChannelRekeyAfterTime runs on a fake clock: a sender rekeys after
// RekeyAfterTime, a channel idle for longer than RejectAfterTime still
// works (its first message is a rekey), and a peer that keeps a key past
// RejectAfterTime is refused.
func TestChannelRekeyAfterTime(t *testing.T) {
	e := newTestEnv(t)
	synctest.Test(t, func(t *testing.T) {
		dev, lis, dt, _ := newChannelPair(t, e)
		send := func(batch uint64) (frames int64, err error) {
			before := dt.writes.Load()
			require.NoError(t, dev.Send(Message{Type: TypeAck, Batch: batch}))
			m, err := lis.Receive()
			if err == nil {
				require.Equal(t, batch, m.Batch)
			}
			return dt.writes.Load() - before, err
		}

		frames, err := send(1)
		require.NoError(t, err)
		require.Equal(t, int64(1), frames)

		time.Sleep(RekeyAfterTime - time.Second)
		frames, err = send(2)
		require.NoError(t, err)
		require.Equal(t, int64(1), frames, "before the soft limit")

		time.Sleep(time.Second)
		frames, err = send(3)
		require.NoError(t, err)
		require.Equal(t, int64(2), frames, "a rekey, then the message")

		time.Sleep(RejectAfterTime + time.Hour)
		frames, err = send(4)
		require.NoError(t, err, "an idle channel")
		require.Equal(t, int64(2), frames)

		// A sender that does not rekey.
		dev.session.sendSince = time.Now().Add(24 * time.Hour)
		time.Sleep(RejectAfterTime - time.Second)
		_, err = send(5)
		require.NoError(t, err, "just under the hard limit")
		time.Sleep(time.Second)
		_, err = send(6)
		require.ErrorIs(t, err, ErrHandshake, "at the hard limit")
	})
}

func TestChannelRejectAfterMessages(t *testing.T) {
	e := newTestEnv(t)
	dev, lis, _, _ := newChannelPair(t, e)
	lis.session.received = RejectAfterMessages - 1
	require.NoError(t, dev.Send(Message{Type: TypeAck, Batch: 1}))
	_, err := lis.Receive()
	require.NoError(t, err)
	require.NoError(t, dev.Send(Message{Type: TypeAck, Batch: 2}))
	_, err = lis.Receive()
	require.ErrorIs(t, err, ErrHandshake)
}

// TestChannelReplay: a copy of an earlier message, a message from another
// channel, reordered or tampered messages fail authentication, and the
// channel stays failed.
func TestChannelReplay(t *testing.T) {
	e := newTestEnv(t)
	// capture sets up a pair whose device-side carrier records every
	// ciphertext the device writes.
	capture := func(t *testing.T) (dev, lis *Channel, dt *memTransport, sent *[][]byte) {
		var mu sync.Mutex
		sent = new([][]byte)
		dt, lt := newMemPipe(64)
		dt.tap = func(m []byte) {
			mu.Lock()
			defer mu.Unlock()
			*sent = append(*sent, m)
		}
		dev, lis, derr, lerr := dialAccept(t, dt, lt, e.deviceConfig(), e.listenerConfig())
		require.NoError(t, derr)
		require.NoError(t, lerr)
		t.Cleanup(func() { dt.Close(); lt.Close() })
		*sent = (*sent)[2:] // messages 1 and 3 of the handshake
		return dev, lis, dt, sent
	}
	sendAck := func(t *testing.T, c *Channel, batch uint64) {
		require.NoError(t, c.Send(Message{Type: TypeAck, Batch: batch}))
	}
	requireFailed := func(t *testing.T, lis *Channel) {
		t.Helper()
		_, err := lis.Receive()
		require.ErrorIs(t, err, ErrDecrypt)
		for range 3 {
			_, again := lis.Receive()
			require.Equal(t, err, again, "every later Receive")
		}
	}

	t.Run("replay in the same channel", func(t *testing.T) {
		dev, lis, dt, sent := capture(t)
		sendAck(t, dev, 1)
		sendAck(t, dev, 2)
		for range 2 {
			_, err := lis.Receive()
			require.NoError(t, err)
		}
		require.NoError(t, dt.WriteMessage((*sent)[0]))
		_, err := lis.Receive()
		require.ErrorIs(t, err, ErrDecrypt)
		// Genuine messages after the replay do not revive it.
		sendAck(t, dev, 3)
		for range 3 {
			_, again := lis.Receive()
			require.Equal(t, err, again, "every later Receive")
		}
	})
	t.Run("reordered", func(t *testing.T) {
		dev, lis, _, sent := capture(t)
		sendAck(t, dev, 1)
		sendAck(t, dev, 2)
		_, err := lis.session.open(nil, (*sent)[1], time.Now())
		require.ErrorIs(t, err, ErrDecrypt, "the second message first")
	})
	t.Run("from another channel", func(t *testing.T) {
		dev, _, _, sent := capture(t)
		_, lis2, dt2, _ := newChannelPair(t, e)
		sendAck(t, dev, 1)
		require.NoError(t, dt2.WriteMessage((*sent)[0]))
		requireFailed(t, lis2)
	})
	t.Run("tampered", func(t *testing.T) {
		dev, lis, _, sent := capture(t)
		sendAck(t, dev, 1)
		ct := (*sent)[0]
		for i := range ct {
			_, err := lis.session.open(nil, flip(ct, i, 0x01), time.Now())
			require.ErrorIs(t, err, ErrDecrypt, "byte %d", i)
		}
		_, err := lis.session.open(nil, ct[:len(ct)-1], time.Now())
		require.ErrorIs(t, err, ErrDecrypt, "truncated")
		m, err := lis.Receive()
		require.NoError(t, err, "a failed open does not move the nonce")
		require.Equal(t, uint64(1), m.Batch)
	})
}

func TestChannelClose(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name, reason, want string
	}{
		{"reason", "maintenance", "maintenance"},
		{"no reason", "", ""},
		{"long ASCII reason", strings.Repeat("x", MaxReason+10), strings.Repeat("x", MaxReason)},
		// Cut at MaxReason bytes, the last rune would be split: the cut
		// must fall before it, or the close message is not valid UTF-8
		// and is never sent.
		{"long reason, rune at the cut", strings.Repeat("a", MaxReason-1) + "é", strings.Repeat("a", MaxReason-1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev, lis, _, _ := newChannelPair(t, e)
			require.NoError(t, dev.Close(tc.reason))
			_, err := lis.Receive()
			require.ErrorIs(t, err, ErrClosed)
			require.Contains(t, err.Error(), fmt.Sprintf("%q", tc.want))
			_, again := lis.Receive()
			require.Equal(t, err, again)
			require.Error(t, dev.Send(Message{Type: TypeAck}), "closed")
		})
	}

	t.Run("carrier closed without a close message", func(t *testing.T) {
		_, lis, dt, _ := newChannelPair(t, e)
		dt.Close()
		_, err := lis.Receive()
		require.ErrorIs(t, err, io.EOF)
		_, again := lis.Receive()
		require.Equal(t, err, again)
	})
}

// TestChannelCloseWhileSendBlocks: Close must not wait for a Send that is
// blocked on a peer that stopped reading; closing the carrier releases it.
// It runs on the bubble's clock (testing/synctest): a Close or Send that
// waited would leave every goroutine blocked, and the 5 s would pass at once.
func TestChannelCloseWhileSendBlocks(t *testing.T) {
	e := newTestEnv(t)
	synctest.Test(t, func(t *testing.T) {
		dt, lt := newMemPipe(0) // every write waits for the reader
		dev, _, derr, lerr := dialAccept(t, dt, lt, e.deviceConfig(), e.listenerConfig())
		require.NoError(t, derr)
		require.NoError(t, lerr)
		sent := sendAsync(dev, Message{Type: TypeData, Batch: 1, Payload: []byte("x")})
		for dt.waiting.Load() == 0 {
			time.Sleep(time.Millisecond) // until Send blocks in the carrier
		}

		closed := make(chan error, 1)
		go func() { closed <- dev.Close("shutdown") }()
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			lt.Close() // release the test's goroutines
			t.Fatal("Close waits for a Send blocked on the peer")
		}
		select {
		case err := <-sent:
			require.Error(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Send still blocked after Close")
		}
		lt.Close()
	})
}

func TestChannelSendErrors(t *testing.T) {
	e := newTestEnv(t)
	dev, _, dt, _ := newChannelPair(t, e)
	before := dt.writes.Load()
	for _, m := range []Message{
		{Type: TypeClose, Reason: strings.Repeat("r", MaxReason+1)},
		{Type: TypeNack, Reason: "\xff"},
		{Type: 0},
		{Type: TypeRefuse + 1},
		{Type: TypeRefuse},
	} {
		require.Error(t, dev.Send(m), "%+v", m)
	}
	require.Equal(t, before, dt.writes.Load(), "nothing written")
}

// TestChannelConcurrentSend: Send from several goroutines, with rekeys in
// between; every message arrives whole, each sender's in its order.
func TestChannelConcurrentSend(t *testing.T) {
	e := newTestEnv(t)
	dev, lis, _, _ := newChannelPair(t, e)
	dev.session.rekeyAfterMessages = 5
	const senders, each = 8, 50
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range each {
				payload := pattern(100+s, byte(i))
				assert.NoError(t, dev.Send(Message{Type: TypeData, Batch: uint64(s<<32 | i), Payload: payload}))
			}
		})
	}
	next := make([]int, senders)
	for range senders * each {
		m, err := lis.Receive()
		require.NoError(t, err)
		s, i := int(m.Batch>>32), int(m.Batch&0xffffffff)
		require.Equal(t, next[s], i, "sender %d in order", s)
		require.Equal(t, pattern(100+s, byte(i)), m.Payload)
		next[s]++
	}
	wg.Wait()
}

// TestChannelAuthorize: the per-message check on a live channel sees a
// revocation list accepted mid-channel at its next call.
func TestChannelAuthorize(t *testing.T) {
	e := newTestEnv(t)
	dev, lis, _, _ := newChannelPair(t, e)
	require.NoError(t, e.verifier.Authorize(lis.Peer(), t0))
	require.NoError(t, e.verifier.Authorize(dev.Peer(), t0))

	l, err := NewRevocationList(e.authority.Signer(), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{e.device.Identifier()}, nil)
	require.NoError(t, err)
	require.NoError(t, e.verifier.UpdateRevocations(l))
	require.ErrorIs(t, e.verifier.Authorize(lis.Peer(), t0.Add(time.Second)), ErrRevoked)
	require.NoError(t, e.verifier.Authorize(dev.Peer(), t0.Add(time.Second)), "the listener is not revoked")
	require.ErrorIs(t, e.verifier.Authorize(dev.Peer(), t0.Add(credentialTTL)), ErrExpired)
}
