package receiver

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// controlConfig is f.config with control: a pending store and an endpoint
// in a new directory.
func (f *fixture) controlConfig(t *testing.T, dir string) Config {
	cfg := f.config()
	cfg.ControlPending = filepath.Join(dir, "pending")
	cfg.ControlSocket = filepath.Join(dir, "ctl.sock")
	return cfg
}

// operator signs instructions: an identity with role=operator.
func (f *fixture) operator(attrs map[string]string) *device {
	if attrs == nil {
		attrs = map[string]string{"role": "operator"}
	}
	return f.device(attrs)
}

// instruction signs a config instruction of op for target.
func instruction(t *testing.T, op *device, target string, seq uint64, issued time.Time, life time.Duration) *control.Instruction {
	t.Helper()
	tg, err := control.ParseTarget(target)
	require.NoError(t, err)
	in, err := control.Sign(op.id.Signer(), op.cred, control.Template{
		Kind: control.KindConfig, Target: tg, Sequence: seq, IssuedAt: issued, Lifetime: life,
		Payload: []byte("\x08interval[agent]\n  interval = \"5s\"\n"),
	}, nil)
	require.NoError(t, err)
	return in
}

// handOver sends b to the control endpoint at path and returns the answer.
func handOver(t *testing.T, path string, b []byte) (status byte, reason string) {
	t.Helper()
	nc, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(wait)))
	_, err = nc.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
	require.NoError(t, err)
	_, err = nc.Write(b)
	require.NoError(t, err)
	answer, err := io.ReadAll(nc)
	require.NoError(t, err)
	require.NotEmpty(t, answer)
	return answer[0], string(answer[1:])
}

// accepted hands in over and requires it accepted.
func accepted(t *testing.T, path string, in *control.Instruction) {
	t.Helper()
	status, reason := handOver(t, path, in.Marshal())
	require.Equal(t, byte(EndpointAccepted), status, reason)
	require.Contains(t, reason, in.ID.String())
}

// ready sends a ready message for config and command.
func (c *client) ready() {
	c.t.Helper()
	require.NoError(c.t, c.ch.Send(secure.Message{Type: secure.TypeReady, Kinds: 0b101, MaxChunk: 1 << 14}))
}

// instruction returns the next message, which must be an instruction.
func (c *client) instruction() *control.Instruction {
	c.t.Helper()
	m := c.reply()
	require.Equal(c.t, secure.TypeInstruction, m.Type, "%+v", m)
	in, err := control.Parse(m.Payload)
	require.NoError(c.t, err)
	return in
}

// answer sends an outcome of batch for in.
func (c *client) answer(batch uint64, o control.Outcome) {
	c.t.Helper()
	require.NoError(c.t, c.ch.Send(secure.Message{Type: secure.TypeOutcome, Batch: batch, Payload: o.Marshal()}))
}

func applied(in *control.Instruction) control.Outcome { return control.OutcomeOf(in, nil) }

// TestControlPushToConnected: an instruction handed to the endpoint goes at
// once to the ready device it names; its outcome comes back as an
// ockam_control metric stamped with the channel's verified identity (not
// the device's word for operator and sequence), acked once delivered; the
// instruction leaves the store.
func TestControlPushToConnected(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	c := newCounters()
	sink := newChanSink()
	r := start(t, cfg, c, sink)
	fi, err := os.Stat(cfg.ControlSocket)
	require.NoError(t, err)
	require.Equal(t, os.ModeSocket|0o600, fi.Mode())

	d := f.device(map[string]string{"site": "plant-7", "role": "sensor"})
	cl := f.dial(t, d, r.Addr())
	cl.ready()
	op := f.operator(nil)
	in := instruction(t, op, d.id.Identifier().String(), 3, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, in)
	got := cl.instruction()
	require.Equal(t, in.Marshal(), got.Marshal())

	o := applied(in)
	o.Operator, o.Sequence = d.id.Identifier(), 99 // lies: the metric has the gateway's record
	cl.answer(7, o)
	del := sink.next(t)
	require.Equal(t, d.id.Identifier(), del.peer.Identifier)
	require.Len(t, del.metrics, 1)
	m := del.metrics[0]
	require.Equal(t, OutcomeMeasurement, m.Name())
	require.Equal(t, map[string]string{
		"instruction": in.ID.String(), "operator": op.id.Identifier().String(), "kind": "config", "result": "applied",
		"ockam_identity": d.id.Identifier().String(), "site": "plant-7",
	}, tags(m))
	require.Equal(t, map[string]any{"sequence": int64(3), "code": int64(0), "reason": ""}, m.Fields())
	del.done(Delivered())
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 7}, cl.reply())
	require.Zero(t, r.pending.Len(), "answered by its one device")
}

// TestControlSelectorAndLaterDevices: a selector's instruction reaches
// the matching devices that connect later, also after a gateway restart,
// never one that does not match, and never a device again once it
// answered.
func TestControlSelectorAndLaterDevices(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	cfg := f.controlConfig(t, dir)
	sink := &outcomeSink{o: Delivered()}
	r := start(t, cfg, newCounters(), sink)
	op := f.operator(nil)
	site := instruction(t, op, "site=plant-7", 1, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, site)

	a := f.device(map[string]string{"site": "plant-7"})
	b := f.device(map[string]string{"site": "plant-8"})
	ca := f.dial(t, a, r.Addr())
	ca.ready()
	require.Equal(t, site.ID, ca.instruction().ID)
	ca.answer(1, applied(site))
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, ca.reply())

	// b does not match: the first instruction it gets is the one for it.
	cb := f.dial(t, b, r.Addr())
	cb.ready()
	forB := instruction(t, op, b.id.Identifier().String(), 2, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, forB)
	require.Equal(t, forB.ID, cb.instruction().ID)
	cb.answer(1, applied(forB))
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, cb.reply())

	// A restart keeps the selector's instruction and who answered it.
	r.Stop()
	require.Equal(t, 1, r.pending.Len())
	r2 := start(t, cfg, newCounters(), sink)
	late := f.device(map[string]string{"site": "plant-7", "role": "sensor"})
	cl := f.dial(t, late, r2.Addr())
	cl.ready()
	require.Equal(t, site.ID, cl.instruction().ID, "a device that joined later")
	ca2 := f.dial(t, a, r2.Addr())
	ca2.ready()
	forA := instruction(t, op, a.id.Identifier().String(), 3, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, forA)
	require.Equal(t, forA.ID, ca2.instruction().ID, "a answered the selector's instruction before the restart")
}

// TestControlOneAtATime: a device gets the next instruction only after its
// outcome of the previous one, an operator's in ascending sequence.
func TestControlOneAtATime(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	r := start(t, cfg, newCounters(), &outcomeSink{o: Delivered()})
	d := f.device(nil)
	op := f.operator(nil)
	second := instruction(t, op, d.id.Identifier().String(), 9, time.Now(), time.Hour)
	first := instruction(t, op, d.id.Identifier().String(), 4, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, second)
	accepted(t, cfg.ControlSocket, first)
	cl := f.dial(t, d, r.Addr())
	cl.ready()
	require.Equal(t, first.ID, cl.instruction().ID)
	require.Empty(t, cl.replies, "nothing more before the outcome")
	cl.answer(1, applied(first))
	var next *control.Instruction
	for next == nil {
		m := cl.reply()
		if m.Type == secure.TypeInstruction {
			var err error
			next, err = control.Parse(m.Payload)
			require.NoError(t, err)
		} else {
			require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, m)
		}
	}
	require.Equal(t, second.ID, next.ID)
}

// TestControlExpired: an instruction that expired is not pushed, and one
// already expired is refused at the endpoint.
func TestControlExpired(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	clk := &clock{t: time.Now()}
	cfg.Now = clk.now
	r := start(t, cfg, newCounters(), &outcomeSink{o: Delivered()})
	d := f.device(nil)
	op := f.operator(nil)
	short := instruction(t, op, d.id.Identifier().String(), 1, clk.now(), 5*time.Minute)
	accepted(t, cfg.ControlSocket, short)
	clk.add(6 * time.Minute)

	status, reason := handOver(t, cfg.ControlSocket, short.Marshal())
	require.Equal(t, byte(EndpointRefused), status)
	require.Contains(t, reason, "expired")

	cl := f.dial(t, d, r.Addr())
	cl.ready()
	fresh := instruction(t, op, d.id.Identifier().String(), 2, clk.now(), time.Hour)
	accepted(t, cfg.ControlSocket, fresh)
	require.Equal(t, fresh.ID, cl.instruction().ID, "the expired one was dropped")
	require.Equal(t, 1, r.pending.Len())
}

// TestControlOutcomeForAnother: a device cannot answer for an instruction
// the gateway sent to another device: permanent nack, nothing emitted.
func TestControlOutcomeForAnother(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	c := newCounters()
	sink := &outcomeSink{o: Delivered()}
	r := start(t, cfg, c, sink)
	a, b := f.device(nil), f.device(nil)
	op := f.operator(nil)
	forA := instruction(t, op, a.id.Identifier().String(), 1, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, forA)
	cb := f.dial(t, b, r.Addr())
	cb.ready()
	cb.answer(5, control.Outcome{ID: forA.ID, Operator: op.id.Identifier(), Sequence: 1, Result: control.Refused,
		Code: control.RefusedReplayed, Reason: "forged"})
	nack := cb.reply()
	require.Equal(t, secure.TypeNack, nack.Type)
	require.True(t, nack.Permanent)
	require.Equal(t, uint64(5), nack.Batch)
	require.Contains(t, nack.Reason, "did not send to this device")
	c.requireCounter(t, "messages_refused", RefusedPolicy, 1)
	require.Empty(t, sink.deliveries())
	require.Equal(t, 1, r.pending.Len(), "still pending for a")

	// A malformed outcome is refused the same way, the channel stays open.
	require.NoError(t, cb.ch.Send(secure.Message{Type: secure.TypeOutcome, Batch: 6, Payload: make([]byte, 58)}))
	nack = cb.reply()
	require.Equal(t, secure.Message{Type: secure.TypeNack, Batch: 6, Permanent: true, Reason: nack.Reason}, nack)
	require.Contains(t, nack.Reason, "bad outcome")
}

// TestControlReservedMeasurement: a device's data message may not carry
// ockam_control, which only the gateway writes.
func TestControlReservedMeasurement(t *testing.T) {
	f := newFixture(t)
	c := newCounters()
	sink := &outcomeSink{o: Delivered()}
	r := start(t, f.config(), c, sink)
	cl := f.dial(t, f.device(nil), r.Addr())
	cl.send(1, `ockam_control,instruction=00,result=applied sequence=1i,code=0i,reason="" 1700000000000000000`+"\n")
	nack := cl.reply()
	require.Equal(t, secure.Message{Type: secure.TypeNack, Batch: 1, Permanent: true,
		Reason: `measurement "ockam_control" is reserved for the outcomes of control instructions, which the gateway writes`}, nack)
	c.requireCounter(t, "messages_refused", RefusedReservedField, 1)
	require.Empty(t, sink.deliveries())
}

// TestControlDisabled: without a pending store, a ready message is a
// protocol error, as for a listener of version 2.
func TestControlDisabled(t *testing.T) {
	f := newFixture(t)
	c := newCounters()
	r := start(t, f.config(), c, &outcomeSink{o: Delivered()})
	cl := f.dial(t, f.device(nil), r.Addr())
	cl.ready()
	select {
	case <-cl.done:
	case <-time.After(wait):
		t.Fatal("channel not closed")
	}
	require.ErrorIs(t, cl.err, secure.ErrClosed)
	require.Contains(t, cl.err.Error(), "protocol error")
	c.requireCounter(t, "channels_failed", "malformed", 1)
}

// TestControlEndpointFlood: a flood of instructions at the endpoint fills
// the pending store to its bound and no further: the excess is refused.
func TestControlEndpointFlood(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	r := start(t, cfg, newCounters(), &outcomeSink{o: Delivered()})
	op := f.operator(nil)
	target := f.device(nil).id.Identifier().String()
	for i := range control.DefaultPendingLimits.PerTarget {
		accepted(t, cfg.ControlSocket, instruction(t, op, target, uint64(i+1), time.Now(), time.Hour))
	}
	status, reason := handOver(t, cfg.ControlSocket, instruction(t, op, target, 1000, time.Now(), time.Hour).Marshal())
	require.Equal(t, byte(EndpointRefused), status)
	require.Contains(t, reason, "pending store full")
	require.Equal(t, control.DefaultPendingLimits.PerTarget, r.pending.Len())

	// Junk and oversized frames are refused before they are stored.
	status, reason = handOver(t, cfg.ControlSocket, []byte("not an instruction"))
	require.Equal(t, byte(EndpointRefused), status)
	require.Contains(t, reason, "malformed")
	nc, err := net.Dial("unix", cfg.ControlSocket)
	require.NoError(t, err)
	defer nc.Close()
	_, err = nc.Write(binary.BigEndian.AppendUint32(nil, control.MaxInstructionSize+1))
	require.NoError(t, err)
	answer, err := io.ReadAll(nc)
	require.NoError(t, err)
	require.Equal(t, byte(EndpointRefused), answer[0])
	require.Contains(t, string(answer[1:]), "too large")
	require.Equal(t, control.DefaultPendingLimits.PerTarget, r.pending.Len())
}

// TestControlEndpointTampered: the gateway keeps out an instruction whose
// signature does not verify (the devices would refuse it anyway).
func TestControlEndpointTampered(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	r := start(t, cfg, newCounters(), &outcomeSink{o: Delivered()})
	in := instruction(t, f.operator(nil), "site=plant-7", 1, time.Now(), time.Hour)
	b := in.Marshal()
	b[len(b)-70] ^= 1 // in the payload
	status, reason := handOver(t, cfg.ControlSocket, b)
	require.Equal(t, byte(EndpointRefused), status)
	require.Contains(t, reason, "signature")
	require.Zero(t, r.pending.Len())
}

// TestControlKinds: a device gets only the kinds its ready named.
func TestControlKinds(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	r := start(t, cfg, newCounters(), &outcomeSink{o: Delivered()})
	d := f.device(nil)
	op := f.operator(nil)
	cl := f.dial(t, d, r.Addr())
	require.NoError(t, cl.ch.Send(secure.Message{Type: secure.TypeReady, Kinds: 0b001, MaxChunk: 1}))
	target, err := control.ParseTarget(d.id.Identifier().String())
	require.NoError(t, err)
	payload, err := control.MarshalNamed("restart", nil)
	require.NoError(t, err)
	cmd, err := control.Sign(op.id.Signer(), op.cred, control.Template{Kind: control.KindCommand, Target: target,
		Sequence: 1, IssuedAt: time.Now(), Lifetime: time.Hour, Payload: payload}, nil)
	require.NoError(t, err)
	accepted(t, cfg.ControlSocket, cmd)
	conf := instruction(t, op, d.id.Identifier().String(), 2, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, conf)
	require.Equal(t, conf.ID, cl.instruction().ID, "the command is not for a device that applies config only")
	require.Equal(t, 2, r.pending.Len())
}
