package agent

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/control/apply"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// recordLink records what a session sends, and answers nothing.
type recordLink struct {
	mu   sync.Mutex
	sent []secure.Message
	acks map[uint64]chan<- secure.Message
}

func (l *recordLink) Send(m secure.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, m)
	return nil
}

func (l *recordLink) Expect(batch uint64, w chan<- secure.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acks == nil {
		l.acks = map[uint64]chan<- secure.Message{}
	}
	l.acks[batch] = w
}

func (l *recordLink) messages() []secure.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]secure.Message(nil), l.sent...)
}

// newAgent is an agent of a device trusting a new authority, applying
// config into a new directory, its outbox in dir.
func newAgent(t *testing.T, dir string) *Agent {
	t.Helper()
	auth, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	require.NoError(t, err)
	creds, err := secure.NewVerifier(auth.Public())
	require.NoError(t, err)
	policy, err := control.NewPolicy(control.Rule{Attributes: map[string]string{"role": "operator"}, Kinds: []control.Kind{control.KindConfig}})
	require.NoError(t, err)
	store, err := control.OpenSequenceStore(filepath.Join(dir, "seq"))
	require.NoError(t, err)
	dev, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	require.NoError(t, err)
	v, err := control.NewVerifier(control.VerifierConfig{Credentials: creds, Policy: policy,
		Device: control.Device{Identifier: dev.Identifier()}, Sequences: store})
	require.NoError(t, err)
	a, err := New(Config{Verifier: v, Outbox: filepath.Join(dir, "outbox"),
		Appliers: map[control.Kind]apply.Applier{control.KindConfig: &apply.ConfigDir{Dir: t.TempDir()}}})
	require.NoError(t, err)
	return a
}

// TestOutboxPersists: an unacknowledged outcome is in the outbox file, and
// a new agent (a restart) sends it first, before ready, with its batch;
// an ack removes it. Junk is refused at once, unparsed.
func TestOutboxPersists(t *testing.T) {
	dir := t.TempDir()
	a := newAgent(t, dir)
	require.Equal(t, uint8(0b001), a.Kinds())
	l := &recordLink{}
	s := a.NewSession(l)
	require.NoError(t, s.Begin())
	s.Offer([]byte("junk"))
	require.Eventually(t, func() bool { return a.Outbox() == 1 }, 30*time.Second, time.Millisecond)
	s.Stop()
	sent := l.messages()
	require.Equal(t, secure.Message{Type: secure.TypeReady, Kinds: 1, MaxChunk: secure.MaxChunkData}, sent[0])
	require.Equal(t, secure.TypeOutcome, sent[1].Type)
	require.Equal(t, uint64(FirstBatch), sent[1].Batch)
	o, err := control.ParseOutcome(sent[1].Payload)
	require.NoError(t, err)
	require.Equal(t, control.Refused, o.Result)
	require.Equal(t, control.RefusedMalformed, o.Code)
	fi, err := os.Stat(filepath.Join(dir, "outbox"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// A restart: the outcome goes first, then ready; the ack clears it.
	b := newAgent(t, dir)
	require.Equal(t, 1, b.Outbox())
	l2 := &recordLink{}
	s2 := b.NewSession(l2)
	require.NoError(t, s2.Begin())
	defer s2.Stop()
	sent2 := l2.messages()
	require.Len(t, sent2, 2)
	require.Equal(t, sent[1], sent2[0])
	require.Equal(t, secure.TypeReady, sent2[1].Type)
	l2.acks[FirstBatch] <- secure.Message{Type: secure.TypeAck, Batch: FirstBatch}
	require.Eventually(t, func() bool { return b.Outbox() == 0 }, 30*time.Second, time.Millisecond)
	c := newAgent(t, dir)
	require.Zero(t, c.Outbox())
}

// TestOutboxBounded: past MaxOutbox unacknowledged outcomes the oldest is
// dropped.
func TestOutboxBounded(t *testing.T) {
	a := newAgent(t, t.TempDir())
	for range MaxOutbox + 3 {
		_, err := a.queue(control.Outcome{Result: control.Refused, Code: control.RefusedMalformed})
		require.NoError(t, err)
	}
	require.Equal(t, MaxOutbox, a.Outbox())
	require.Equal(t, uint64(FirstBatch+3), a.unacked()[0].batch)
}

// TestOutboxFileChecked: an outbox others may write, or one out of form,
// stops the agent at start.
func TestOutboxFileChecked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "outbox")
	require.NoError(t, os.WriteFile(path, []byte{1, 0, 0, 0, 0}, 0o666))
	require.NoError(t, os.Chmod(path, 0o666))
	_, err := New(Config{Verifier: newAgent(t, t.TempDir()).cfg.Verifier, Outbox: path,
		Appliers: map[control.Kind]apply.Applier{control.KindConfig: &apply.ConfigDir{Dir: dir}}})
	require.ErrorContains(t, err, "group or others may write it")
	require.NoError(t, os.Chmod(path, 0o600))
	require.NoError(t, os.WriteFile(path, []byte{1, 0, 0, 0, 1, 0}, 0o600))
	_, err = New(Config{Verifier: newAgent(t, t.TempDir()).cfg.Verifier, Outbox: path,
		Appliers: map[control.Kind]apply.Applier{control.KindConfig: &apply.ConfigDir{Dir: dir}}})
	require.ErrorContains(t, err, "truncated")
}

// TestFloodAnsweredAtOnce: a gateway that pushes instructions without
// waiting for their outcomes gets "too many" (code 14, not permanent) for
// those past the queue, answered at once, without verifying them.
func TestFloodAnsweredAtOnce(t *testing.T) {
	a := newAgent(t, t.TempDir())
	l := &recordLink{}
	s := a.NewSession(l) // not begun: nothing takes the queue
	for range queueSize + 2 {
		s.Offer([]byte("junk"))
	}
	sent := l.messages()
	require.Len(t, sent, 2)
	for _, m := range sent {
		o, err := control.ParseOutcome(m.Payload)
		require.NoError(t, err)
		require.Equal(t, control.RefusedTooMany, o.Code)
		require.False(t, o.Code.Permanent())
	}
	s.Stop()
}
