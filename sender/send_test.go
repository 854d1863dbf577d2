package sender

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestSendAcked: payloads are packed into one message, the listener gets
// their bytes unchanged, and the Result counts every metric as acked.
func TestSendAcked(t *testing.T) {
	l := newListener(t, nil)
	s, stats, _ := newSender(t, l)
	buf, payloads := lines("cpu", 5)

	res, err := s.Send(context.Background(), payloads)
	require.NoError(t, err)
	require.Equal(t, Result{Acked: 5}, res)
	msgs := l.messages()
	require.Len(t, msgs, 1)
	require.Equal(t, buf, msgs[0].Payload)
	require.Equal(t, int64(1), stats["messages_sent"].get())
	require.Equal(t, int64(len(buf)), stats["bytes_sent"].get())
	require.Equal(t, int64(1), stats["acks"].get())
	require.Equal(t, uint64(1), s.Status().Channel)

	res, err = s.Send(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, Result{}, res, "nothing to send")
}

// waitFor waits until cond holds, failing the test after testTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSendSeqStreams: a message leaves as soon as it is full, before the
// caller produces the payloads after it, so serializing the rest of a
// batch overlaps sending its start. The iterator waits for the listener to
// have the first message before it yields the third payload; a sender
// that packed the whole batch before sending would never get there.
func TestSendSeqStreams(t *testing.T) {
	l := newListener(t, nil)
	s, _, _ := newSender(t, l, func(c *Config) { c.MaxMessageSize = 16 }) // one line a message
	_, payloads := lines("cpu", 4)
	seq := func(yield func(Payload) bool) {
		for i, p := range payloads {
			if i == 2 { // message 1 was full when payload 2 (index 1) came
				waitFor(t, "the listener has the first message", func() bool { return len(l.messages()) == 1 })
			}
			if !yield(p) {
				return
			}
		}
	}
	res, err := s.SendSeq(context.Background(), seq)
	require.NoError(t, err)
	require.Equal(t, Result{Acked: 4}, res)
	msgs := l.messages()
	require.Len(t, msgs, 4)
	for i, m := range msgs {
		require.Equal(t, payloads[i].Lines, m.Payload)
	}
}

// TestSendWindow: at most Window messages of a Send wait for their answers.
// The listener answers none: the sender sends Window messages, waits for an
// answer before the next, and gives up after Timeout; the listener read
// exactly Window messages before the channel closed.
func TestSendWindow(t *testing.T) {
	l := newListener(t, nil)
	l.setAnswer(silent)
	s, _, _ := newSender(t, l, func(c *Config) { c.MaxMessageSize = 16; c.Timeout = time.Second })
	_, payloads := lines("cpu", Window+5)
	res, err := s.Send(context.Background(), payloads)
	require.ErrorContains(t, err, "no answer from")
	require.ErrorContains(t, err, fmt.Sprintf("to %d of the messages sent", Window))
	require.Equal(t, Result{}, res)
	waitFor(t, "the listener read the channel to its end", func() bool { return l.endedChannels() == 1 })
	require.Len(t, l.messages(), Window)
}

// TestSendRefusedForGood: a permanent nack refuses its message's metrics
// for good: no error (retrying cannot help), the listener's reason in the
// Result, and the channel stays open.
func TestSendRefusedForGood(t *testing.T) {
	l := newListener(t, nil)
	s, stats, log := newSender(t, l, func(c *Config) { c.MaxMessageSize = 110 })
	l.setAnswer(func(m secure.Message) secure.Message {
		if bytes.HasPrefix(m.Payload, []byte("mem")) {
			return secure.Message{Type: secure.TypeNack, Batch: m.Batch, Permanent: true, Reason: `policy: measurement "mem"`}
		}
		return ack(m)
	})
	_, cpu := lines("cpu", 2)
	mem, _ := lines("mem", 3) // one payload of 3 lines, 108 bytes

	res, err := s.Send(context.Background(), append(cpu, Payload{Lines: mem, Metrics: 3}))
	require.NoError(t, err)
	require.Equal(t, Result{Acked: 2, Refused: []Refusal{{Metrics: 3, Reason: `policy: measurement "mem"`, Listener: true}}}, res)
	require.Equal(t, 3, res.RefusedMetrics())
	require.Len(t, l.messages(), 2, "cpu and mem do not fit in 110 bytes together")
	require.Equal(t, int64(1), stats["nacks_permanent"].get())
	require.Len(t, log.Errors(), 1)
	require.Contains(t, log.Errors()[0], "refused 3 metrics permanently")
	require.Equal(t, uint64(1), s.Status().Channel)
}

// TestSendChannelRefusedKeepsCode: a listener that refuses the channel
// says why with a code, which Send's error carries for its caller (the
// inlet answers a revoked device 400, not 503); later Sends fail at once
// with it, without waiting for a channel.
func TestSendChannelRefusedKeepsCode(t *testing.T) {
	l := newListener(t, func(*secure.Peer) error {
		return &secure.RefusalError{Code: secure.RefusedRevoked, Err: secure.ErrRevoked}
	})
	s, _, _ := newSender(t, l)
	_, payloads := lines("cpu", 1)

	res, err := s.Send(context.Background(), payloads)
	require.ErrorIs(t, err, secure.ErrRefused)
	refusal, ok := errors.AsType[*secure.RefusedError](err)
	require.True(t, ok)
	require.Equal(t, secure.RefusedRevoked, refusal.Code)
	require.Equal(t, Result{}, res)
	require.Empty(t, l.messages())

	start := time.Now()
	_, err = s.Send(context.Background(), payloads)
	require.ErrorIs(t, err, secure.ErrRefused)
	require.Less(t, time.Since(start), testTimeout, "not the wait for a channel")
	st := s.Status()
	require.Zero(t, st.Channel)
	require.ErrorIs(t, st.Err, secure.ErrRefused)
}

// TestSendTransientThenRetry: a transient nack makes Send return an error
// (send it all again later), with what was acked so far; the retry on the
// same channel is acked.
func TestSendTransientThenRetry(t *testing.T) {
	l := newListener(t, nil)
	s, stats, _ := newSender(t, l)
	l.setAnswer(func(m secure.Message) secure.Message {
		return secure.Message{Type: secure.TypeNack, Batch: m.Batch, Reason: "output buffer full"}
	})
	_, payloads := lines("cpu", 3)

	res, err := s.Send(context.Background(), payloads)
	require.ErrorContains(t, err, `asked to retry 3 metrics later: "output buffer full"`)
	require.Equal(t, Result{}, res)
	require.Equal(t, int64(1), stats["nacks_transient"].get())

	l.setAnswer(ack)
	res, err = s.Send(context.Background(), payloads)
	require.NoError(t, err)
	require.Equal(t, Result{Acked: 3}, res)
	require.Len(t, l.channels(), 1, "the same channel")
}

// TestAttackTransientNackText: the listener's reason is free text, and may
// quote whatever InfluxDB said. A transient nack whose text says "expired"
// must not close a healthy channel whose credential is valid and current
// (issue 16: write.go acted on strings.Contains(reason, "expired")); a
// channel whose credential was renewed in the file is closed, and the next
// one presents the renewed credential.
func TestAttackTransientNackText(t *testing.T) {
	l := newListener(t, nil)
	s, _, _ := newSender(t, l)
	l.setAnswer(func(m secure.Message) secure.Message {
		return secure.Message{Type: secure.TypeNack, Batch: m.Batch,
			Reason: `influxdb: retention policy "expired" not found; token expired`}
	})
	_, payloads := lines("cpu", 1)
	_, err := s.Send(context.Background(), payloads)
	require.ErrorContains(t, err, "asked to retry")
	require.Equal(t, uint64(1), s.Status().Channel, "the channel stays open")

	l.setAnswer(ack)
	_, err = s.Send(context.Background(), payloads)
	require.NoError(t, err)
	require.Len(t, l.channels(), 1, "no new channel")

	// The operator renewed the credential; the listener, whose clock is
	// ahead, says the one in use expired.
	renewed := l.fleet.Issue(t, l.fleet.Authority, l.device.Identity.Identifier(), map[string]string{"role": "sensor"},
		time.Now(), 2*time.Hour)
	ockamtest.WriteFile(t, l.device.CredentialPath, renewed.MarshalFile())
	l.setAnswer(func(m secure.Message) secure.Message {
		return secure.Message{Type: secure.TypeNack, Batch: m.Batch, Reason: "credential expired"}
	})
	_, err = s.Send(context.Background(), payloads)
	require.Error(t, err)
	l.setAnswer(ack)
	_, err = s.Send(context.Background(), payloads)
	require.NoError(t, err)
	creds := l.channels()
	require.Len(t, creds, 2, "a new channel")
	require.Equal(t, renewed.ID, creds[1].ID)
}

// TestSendStopsWithContext: ctx bounds the wait for the answers; a Send
// whose ctx ends returns its error (send it all again later).
func TestSendStopsWithContext(t *testing.T) {
	l := newListener(t, nil)
	s, _, _ := newSender(t, l)
	_, payloads := lines("cpu", 1)
	_, err := s.Send(context.Background(), payloads)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	l.setAnswer(func(m secure.Message) secure.Message {
		cancel() // the caller gives up: ctx bounds the wait for answers
		return secure.Message{Type: secure.TypeAck, Batch: m.Batch + 1000}
	})
	_, err = s.Send(ctx, payloads)
	require.ErrorIs(t, err, context.Canceled)
}

// TestConcurrentSendsAndShutdown: Sends from several goroutines share the
// channel, and any number of goroutines may shut a link down at once.
func TestConcurrentSendsAndShutdown(t *testing.T) {
	l := newListener(t, nil)
	s, _, _ := newSender(t, l)
	_, payloads := lines("cpu", 4)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			res, err := s.Send(context.Background(), payloads)
			if err == nil {
				require.Equal(t, Result{Acked: 4}, res)
			}
		})
	}
	wg.Wait()
	s.mu.Lock()
	link := s.link
	s.mu.Unlock()
	require.NotNil(t, link)
	for range 8 {
		wg.Go(func() { link.shutdown("test", testTimeout) })
	}
	wg.Wait()
	require.True(t, link.closedLocally())
	require.EqualError(t, link.cause(), "test")
}

// TestPack: payloads adjacent in one buffer become messages without a
// copy; others are copied, never changed; a payload over the packing
// target is cut at line ends; a line no listener accepts is refused.
func TestPack(t *testing.T) {
	s := &Sender{cfg: Config{MaxMessageSize: 72}, log: nopLog{}}
	buf, payloads := lines("cpu", 4) // 36 bytes each
	msgs, refused := s.pack(payloads)
	require.Empty(t, refused)
	require.Len(t, msgs, 2)
	require.Equal(t, message{payload: buf[:72], metrics: 2}, msgs[0])
	require.Same(t, &buf[0], &msgs[0].payload[0], "no copy")
	require.Same(t, &buf[72], &msgs[1].payload[0], "no copy")

	// Two buffers: the second payload is copied after the first.
	a, pa := lines("a", 1)
	b, pb := lines("b", 1)
	before := append([]byte(nil), a...)
	msgs, _ = s.pack(append(pa, pb...))
	require.Len(t, msgs, 1)
	require.Equal(t, append(append([]byte(nil), a...), b...), msgs[0].payload)
	require.Equal(t, before, a, "the caller's bytes are not changed")

	// One payload of four lines, over the target: cut at line ends.
	msgs, _ = s.pack([]Payload{{Lines: buf, Metrics: 4}})
	require.Equal(t, []message{{payload: buf[:72], metrics: 2}, {payload: buf[72:], metrics: 2}}, msgs)

	// A line longer than the target travels alone; one longer than any
	// listener accepts is refused.
	long := []byte("long v=\"" + strings.Repeat("x", 100) + "\" 1\n")
	huge := []byte("my\\ huge,t=1 v=\"" + strings.Repeat("y", secure.DefaultMaxMessageSize) + "\" 1\n")
	body := append(append(append(append([]byte(nil), buf[:36]...), long...), huge...), buf[36:72]...)
	msgs, refused = s.pack([]Payload{{Lines: body, Metrics: 4}})
	require.Equal(t, []message{{payload: buf[:36], metrics: 1}, {payload: long, metrics: 1}, {payload: buf[36:72], metrics: 1}}, msgs)
	require.Len(t, refused, 1)
	require.Equal(t, 1, refused[0].Metrics)
	require.False(t, refused[0].Listener)
	require.Contains(t, refused[0].Reason, `metric "my huge": its line of`)
}

// nopLog discards everything.
type nopLog struct{}

func (nopLog) Errorf(string, ...any) {}
func (nopLog) Warnf(string, ...any)  {}
func (nopLog) Infof(string, ...any)  {}
func (nopLog) Debugf(string, ...any) {}

// pack packs payloads as SendSeq does, and returns the messages instead of
// sending them.
func (s *Sender) pack(payloads []Payload) ([]message, []Refusal) {
	p := packer{limit: s.cfg.MaxMessageSize}
	for _, pl := range payloads {
		s.packPayload(&p, pl)
	}
	p.flush()
	return p.msgs, p.refused
}
