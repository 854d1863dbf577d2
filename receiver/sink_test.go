package receiver

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

const line = "temp,host=a value=21.5 1700000000000000000\n"

// TestSinkDelivered: the Sink gets the verified peer and the stamped
// metrics, and its Delivered outcome (here given inside Deliver) is an ack.
func TestSinkDelivered(t *testing.T) {
	f := newFixture(t)
	c := newCounters()
	sink := &outcomeSink{o: Delivered()}
	r := start(t, f.config(), c, sink)
	d := f.device(map[string]string{"site": "plant-7", "role": "sensor"})
	cl := f.dial(t, d, r.Addr())

	cl.send(1, "temp,host=a,ockam_identity=Iforged value=21.5 1700000000000000000\n")
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, cl.reply())
	got := sink.deliveries()
	require.Len(t, got, 1)
	require.Equal(t, d.id.Identifier(), got[0].peer.Identifier)
	require.Equal(t, map[string]string{"site": "plant-7", "role": "sensor"}, got[0].peer.Attributes)
	require.NotEmpty(t, got[0].peer.Remote)
	require.Len(t, got[0].metrics, 1)
	require.Equal(t, map[string]string{"host": "a", "ockam_identity": d.id.Identifier().String(), "site": "plant-7"},
		tags(got[0].metrics[0]))
	c.requireCounter(t, "messages_delivered", "", 1)
	c.requireCounter(t, "messages_accepted", "", 1)
	c.requireCounter(t, "metrics_emitted", "", 1)
	c.requireCounter(t, "forged_tags", "", 1)
	c.requireCounter(t, "undelivered_bytes", "", 0)
}

// TestSinkRefused: a refusal for good is a permanent nack with the Sink's
// reason, counted under its refusal; a permanent outcome without a refusal
// is counted as undelivered; an unknown refusal counts as "output".
func TestSinkRefused(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name         string
		o            Outcome
		want         secure.Message
		field, label string
	}{
		{"refused", Refused(RefusedOutput, "refused by the store"),
			secure.Message{Type: secure.TypeNack, Batch: 1, Permanent: true, Reason: "refused by the store"},
			"messages_refused", RefusedOutput},
		{"refused without reason", Refused(RefusedOutput, ""),
			secure.Message{Type: secure.TypeNack, Batch: 1, Permanent: true, Reason: ReasonNotDelivered},
			"messages_refused", RefusedOutput},
		{"unknown refusal", Refused("made-up", "x"),
			secure.Message{Type: secure.TypeNack, Batch: 1, Permanent: true, Reason: "x"},
			"messages_refused", RefusedOutput},
		{"permanent", Outcome{Permanent: true, Reason: "partial write: field type conflict"},
			secure.Message{Type: secure.TypeNack, Batch: 1, Permanent: true, Reason: "partial write: field type conflict"},
			"messages_undelivered", ""},
		{"long reason", Outcome{Permanent: true, Reason: strings.Repeat("é", secure.MaxReason)},
			secure.Message{Type: secure.TypeNack, Batch: 1, Permanent: true, Reason: strings.Repeat("é", secure.MaxReason/2)},
			"messages_undelivered", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCounters()
			r := start(t, f.config(), c, &outcomeSink{o: tc.o})
			cl := f.dial(t, f.device(nil), r.Addr())
			cl.send(1, line)
			require.Equal(t, tc.want, cl.reply())
			c.requireCounter(t, tc.field, tc.label, 1)
			require.Zero(t, c.get("messages_delivered", ""))
		})
	}
}

// TestSinkTransient: a transient outcome is a transient nack, with the
// default reason when the Sink gives none; the channel stays open.
func TestSinkTransient(t *testing.T) {
	f := newFixture(t)
	c := newCounters()
	r := start(t, f.config(), c, &outcomeSink{o: Transient("")})
	cl := f.dial(t, f.device(nil), r.Addr())
	cl.send(1, line)
	require.Equal(t, secure.Message{Type: secure.TypeNack, Batch: 1, Reason: ReasonNotDelivered}, cl.reply())
	cl.send(2, line)
	require.Equal(t, secure.Message{Type: secure.TypeNack, Batch: 2, Reason: ReasonNotDelivered}, cl.reply())
	c.requireCounter(t, "messages_undelivered", "", 2)
}

// TestSinkNeverDone: a Sink that does not call done holds its messages'
// max_undelivered_messages slots: the receiver delivers no more until done
// gives one back, and answers nothing meanwhile. Stop returns with the
// messages still pending; a late done does nothing, a second one panics.
func TestSinkNeverDone(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.MaxUndeliveredMessages = 2
	c := newCounters()
	sink := newChanSink()
	r := start(t, cfg, c, sink)
	cl := f.dial(t, f.device(nil), r.Addr())

	cl.send(1, line)
	cl.send(2, line)
	cl.send(3, line)
	first, second := sink.next(t), sink.next(t)
	c.requireCounter(t, "messages_accepted", "", 2)
	require.Positive(t, c.get("undelivered_bytes", ""))

	first.done(Delivered())
	third := sink.next(t)
	require.Equal(t, int64(1), third.doneBefore, "delivered only once the first gave back its slot")
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, cl.reply())
	require.Panics(t, func() { first.done(Delivered()) }, "done twice")

	select {
	case m := <-cl.replies:
		t.Fatalf("answered %+v without done", m)
	default:
	}
	r.Stop() // second and third still pending
	second.done(Delivered())
	third.done(Transient(""))
	require.Equal(t, int64(3), c.get("messages_accepted", ""))
}

// TestSinkNeverDoneBudget: undelivered bytes also bound what a Sink that
// does not answer holds: with room for one message per channel, the
// second waits (byte_limit_stalls) until the first is done.
func TestSinkNeverDoneBudget(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.MaxUndeliveredBytesPerChannel = SizeEstimate([]byte(line), 2) // exactly one message
	c := newCounters()
	sink := newChanSink()
	r := start(t, cfg, c, sink)
	cl := f.dial(t, f.device(nil), r.Addr())

	cl.send(1, line)
	cl.send(2, line)
	first := sink.next(t)
	c.requireCounter(t, "byte_limit_stalls", "", 1)
	require.Equal(t, SizeEstimate([]byte(line), 2), c.get("undelivered_bytes", ""))
	first.done(Delivered())
	second := sink.next(t)
	require.Equal(t, int64(1), second.doneBefore, "the second waited for room")
	second.done(Delivered())
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, cl.reply())
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 2}, cl.reply())
	c.requireCounter(t, "undelivered_bytes", "", 0)
}
