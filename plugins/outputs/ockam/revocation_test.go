package ockam

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// writeList writes a revocation list of the authority, sequence seq,
// revoking subjects, to path.
func (f *fixture) writeList(t *testing.T, path string, seq uint64, subjects ...secure.Identifier) {
	t.Helper()
	now := time.Now()
	l, err := secure.NewRevocationList(f.authority.Signer(), seq, now, now.Add(time.Hour), subjects, nil)
	require.NoError(t, err)
	ockamtest.WriteFile(t, path, l.MarshalFile())
}

// withRevocationList sets revocation_list, checked every 10ms.
func withRevocationList(path string) func(*Output) {
	return func(o *Output) {
		o.RevocationList = path
		o.RevocationCheckInterval = config.Duration(10 * time.Millisecond)
	}
}

// TestRevokedListenerRefused (docs/SECURITY.md W15): a device whose list
// revokes the gateway refuses it in the handshake, before it reveals its
// own credential, and sends it nothing. The old output built its verifier
// without any list and delivered.
func TestRevokedListenerRefused(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	list := filepath.Join(f.dir, "revoked.list")
	f.writeList(t, list, 1, f.listener.Identifier())
	o, log := f.newOutput(t, l.addr(), withRevocationList(list))
	require.NoError(t, o.Connect())

	err := o.Write(testMetrics(3))
	require.ErrorIs(t, err, secure.ErrRevoked)
	require.ErrorContains(t, err, "the listener's credential is revoked, nothing is sent to it")
	require.Empty(t, l.messages())
	for _, hs := range l.handshakeLog() {
		require.Error(t, hs.err, "no handshake completes")
		require.Nil(t, hs.cred, "the device never revealed its credential")
	}
	require.NotEmpty(t, logged(log, "Cannot open a channel", "revoked"))
}

// TestListenerRevokedDuringBatch (W15): the gateway is revoked while a batch
// is in flight; its ack arrives after the device applied the list. The ack
// does not count: Write fails, Telegraf keeps the batch, and the channel is
// closed.
func TestListenerRevokedDuringBatch(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	list := filepath.Join(f.dir, "revoked.list")
	f.writeList(t, list, 1)
	o, log := f.newOutput(t, l.addr(), withRevocationList(list))
	require.NoError(t, o.Connect())
	require.NoError(t, o.Write(testMetrics(1)), "before the revocation")

	revoking, err := secure.NewRevocationList(f.authority.Signer(), 2, time.Now(), time.Now().Add(time.Hour),
		[]secure.Identifier{f.listener.Identifier()}, nil)
	require.NoError(t, err)
	verifier := o.trust.Verifier()
	l.setReply(func(secure.Message) reply {
		// The authority revokes the gateway; the device applies the list
		// before the gateway's ack reaches it.
		// (This runs on the fake listener's goroutine: no require here.)
		if err := os.WriteFile(list, revoking.MarshalFile(), 0o600); err != nil {
			t.Errorf("write the list: %v", err)
		}
		for deadline := time.Now().Add(30 * time.Second); verifier.RevocationSequence(f.authority.Identifier()) != 2; {
			if time.Now().After(deadline) {
				t.Errorf("the device did not apply the list")
				break
			}
			time.Sleep(time.Millisecond) // polling a condition
		}
		return replyAck
	})
	err = o.Write(testMetrics(2))
	require.ErrorIs(t, err, secure.ErrRevoked)
	require.ErrorContains(t, err, "unanswered")
	require.Len(t, l.messages(), 2, "the batch reached the gateway, but its ack did not count")
	require.Eventually(t, func() bool {
		return len(logged(log, "Channel to listener "+f.listener.Identifier().Short(), "revoked")) > 0
	}, 30*time.Second, time.Millisecond)

	// And the gateway gets nothing more.
	l.setReply(func(secure.Message) reply { return replyAck })
	require.ErrorIs(t, o.Write(testMetrics(1)), secure.ErrRevoked)
	require.Len(t, l.messages(), 2)
	require.Equal(t, 1, l.channels(), "no new channel to the revoked gateway")
}

// TestListenerRevokedOnIdleChannel (W15): an open channel with nothing in
// flight is closed within revocation_check_interval of the list that
// revokes the gateway.
func TestListenerRevokedOnIdleChannel(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	list := filepath.Join(f.dir, "revoked.list")
	f.writeList(t, list, 1)
	o, _ := f.newOutput(t, l.addr(), withRevocationList(list))
	require.NoError(t, o.Connect())
	require.NoError(t, o.Write(testMetrics(1)))
	require.Empty(t, l.endLog())

	f.writeList(t, list, 2, f.listener.Identifier())
	require.Eventually(t, func() bool { return len(l.endLog()) == 1 }, 30*time.Second, time.Millisecond,
		"the device closes the channel to the revoked gateway")
}
