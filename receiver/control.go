package receiver

import (
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Control instructions over the channel (docs/PROTOCOL.md, section 17.5):
// the gateway keeps what operators handed it (control.Pending), pushes it
// to each device that said ready and matches its target, one at a time, and
// turns each outcome into an ockam_control metric stamped with the
// channel's verified identity.

// OutcomeMeasurement is the measurement of outcome metrics. A device's data
// message may not carry it (refused like a reserved field).
const OutcomeMeasurement = "ockam_control"

// recentAnswered bounds the instructions the receiver remembers after they
// left the pending store (answered by their one device), so that an outcome
// a device sends again from its outbox still finds its instruction.
const recentAnswered = 4096

// ctlState is a channel's control state. Lock order: ctlState.mu before
// conn.mu.
type ctlState struct {
	mu sync.Mutex
	// Set by ready: the device applies instructions of these kinds.
	ready    bool
	kinds    uint8
	maxChunk uint32
	device   secure.Identifier
	attrs    map[string]string
	// inflight is the instruction sent and not yet answered on this
	// channel; offered is every instruction sent on it.
	inflight *control.Instruction
	offered  map[control.ID]*control.Instruction
}

// recentInstructions remembers the last instructions that left the pending
// store when answered.
type recentInstructions struct {
	mu    sync.Mutex
	byID  map[control.ID]*control.Instruction
	order []control.ID
}

func (r *recentInstructions) add(in *control.Instruction) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID == nil {
		r.byID = make(map[control.ID]*control.Instruction)
	}
	if r.byID[in.ID] != nil {
		return
	}
	if len(r.order) >= recentAnswered {
		delete(r.byID, r.order[0])
		r.order = r.order[1:]
	}
	r.byID[in.ID] = in
	r.order = append(r.order, in.ID)
}

func (r *recentInstructions) get(id control.ID) *control.Instruction {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

// kindBit is the bit of a kind in a ready message; 0 for a kind it cannot
// name.
func kindBit(k control.Kind) uint8 {
	if k < control.KindConfig || k > control.KindCommand {
		return 0
	}
	return 1 << (k - 1)
}

// ready takes a device's ready message: from now on instructions are
// pushed to it. A second ready is a protocol error.
func (r *Receiver) ready(c *conn, m secure.Message) error {
	c.ctl.mu.Lock()
	if c.ctl.ready {
		c.ctl.mu.Unlock()
		return fmt.Errorf("%w: a second ready message", secure.ErrMalformed)
	}
	c.ctl.ready, c.ctl.kinds, c.ctl.maxChunk = true, m.Kinds, m.MaxChunk
	c.ctl.device, c.ctl.attrs = c.peer.Identifier, c.peer.Credential.Attributes
	c.ctl.offered = make(map[control.ID]*control.Instruction)
	c.ctl.mu.Unlock()
	r.log.Debugf("Channel from %s (%s) ready for instructions (kinds %03b)", c.remote, c.peer.Identifier.Short(), m.Kinds)
	r.pushNext(c)
	return nil
}

// pushNext sends the device the next pending instruction for it, unless
// it is not ready or one is awaiting its outcome: one at a time, so an
// honest gateway never meets the device's flood limit.
func (r *Receiver) pushNext(c *conn) {
	c.ctl.mu.Lock()
	defer c.ctl.mu.Unlock()
	if !c.ctl.ready || c.ctl.inflight != nil || c.ctx.Err() != nil {
		return
	}
	for _, in := range r.pending.Due(c.ctl.device, c.ctl.attrs, r.now()) {
		if c.ctl.offered[in.ID] != nil || c.ctl.kinds&kindBit(in.Kind) == 0 {
			continue
		}
		out := outgoing{msg: secure.Message{Type: secure.TypeInstruction, Payload: in.Marshal()}}
		if in.Kind == control.KindArtifact {
			f, err := r.pending.ArtifactFile(in)
			if err != nil { // removed since Due: expired or answered
				continue
			}
			m, err := control.ParseManifest(in.Payload)
			if err != nil { // checked by Add
				f.Close()
				continue
			}
			out.artifact = &artifactSend{id: in.ID, f: f, size: m.Size, max: c.ctl.maxChunk}
		}
		c.ctl.offered[in.ID], c.ctl.inflight = in, in
		c.enqueue(out)
		r.log.Debugf("Sent instruction %s (%v, operator %s, sequence %d) to %s",
			in.ID, in.Kind, in.Operator().Short(), in.Sequence, c.ctl.device.Short())
		return
	}
}

// pushAll offers pending instructions to every ready channel, after an
// instruction was added.
func (r *Receiver) pushAll() {
	r.channelsMu.Lock()
	conns := make([]*conn, 0, len(r.channels))
	for c := range r.channels {
		conns = append(conns, c)
	}
	r.channelsMu.Unlock()
	for _, c := range conns {
		r.pushNext(c)
	}
}

// instructionFor returns the instruction an outcome on c answers: sent on
// this channel, or (an outcome from the device's outbox, section 17.5)
// pending or recently answered and targeted at this device. nil: the
// gateway did not send it to this device, as far as it knows.
func (r *Receiver) instructionFor(c *conn, id control.ID) *control.Instruction {
	c.ctl.mu.Lock()
	in := c.ctl.offered[id]
	c.ctl.mu.Unlock()
	if in != nil {
		return in
	}
	for _, in := range []*control.Instruction{r.pending.Get(id), r.recent.get(id)} {
		if in != nil && in.Target.Matches(c.peer.Identifier, c.peer.Credential.Attributes) {
			return in
		}
	}
	return nil
}

// outcome takes a device's outcome message: it records the answer, emits
// the ockam_control metric through the Sink like a data message (answered
// with ack or nack by the Sink's outcome), and pushes the next
// instruction. It returns ok false when the channel must be closed.
func (r *Receiver) outcome(c *conn, m secure.Message) (closeReason string, ok bool) {
	c.inflight.Add(1)
	if closeReason, stop, refused := r.checkSender(c, m.Batch); refused {
		return closeReason, !stop
	}
	o, err := control.ParseOutcome(m.Payload)
	if err != nil {
		r.refuse(c, m.Batch, RefusedParse, true, "bad outcome: "+err.Error(), err)
		return "", true
	}
	in := r.instructionFor(c, o.ID)
	if in == nil {
		err := fmt.Errorf("outcome of instruction %s, which this gateway did not send to this device", o.ID)
		r.refuse(c, m.Batch, RefusedPolicy, true, err.Error(), err)
		return "", true
	}
	// A device that was over its flood limit may take it later; any other
	// answer is final (section 17.2).
	if o.Result != control.Refused || o.Code.Permanent() {
		if in.Target.Selector == nil {
			r.recent.add(in)
		}
		if err := r.pending.Answered(in.ID, c.peer.Identifier); err != nil && r.pendingLog.allow(time.Now(), time.Minute) {
			r.log.Errorf("Control: %v (logged at most once a minute)", err)
		}
	}
	c.ctl.mu.Lock()
	if c.ctl.inflight != nil && c.ctl.inflight.ID == in.ID {
		c.ctl.inflight = nil
	}
	c.ctl.mu.Unlock()
	r.log.Debugf("Outcome of instruction %s from %s: %v %d %q", in.ID, c.peer.Identifier.Short(), o.Result, o.Code, o.Reason)

	metrics := []telegraf.Metric{outcomeMetric(in, o, r.now())}
	stamp(metrics, c.tags)
	size := SizeEstimate(m.Payload, len(c.tags)+4)
	if r.keepsCopies {
		size *= 2
	}
	if !r.budget.acquire(c.ctx, c, c.key, size, func() { r.stalled(c) }) {
		return "", false
	}
	if !r.deliver(c, m.Batch, size, metrics, nil) {
		r.budget.release(c, c.key, size)
		return "", false
	}
	r.pushNext(c)
	return "", true
}

// outcomeMetric is the ockam_control metric of an outcome (section 17.5),
// before the channel's verified tags are stamped on it. The instruction's
// id, operator, sequence and kind are the gateway's own record, not the
// device's word.
func outcomeMetric(in *control.Instruction, o control.Outcome, now time.Time) telegraf.Metric {
	seq := int64(math.MaxInt64)
	if in.Sequence <= math.MaxInt64 {
		seq = int64(in.Sequence)
	}
	return metric.New(OutcomeMeasurement,
		map[string]string{
			"instruction": in.ID.String(),
			"operator":    in.Operator().String(),
			"kind":        in.Kind.String(),
			"result":      o.Result.String(),
		},
		map[string]any{"sequence": seq, "code": int64(o.Code), "reason": o.Reason},
		now)
}

// artifactSend is the artifact of an instruction being pushed: its chunks
// follow the instruction back to back, read from the pending store's file
// as the writer sends them, so an artifact is never held in memory.
type artifactSend struct {
	id   control.ID
	f    *os.File
	size uint64
	max  uint32 // the device's max chunk bytes
}

// sendArtifact sends the chunks of a, the last flagged, and closes its
// file. An error ends the channel: the device then fails the instruction
// as interrupted.
func (c *conn) sendArtifact(a *artifactSend) error {
	defer a.f.Close()
	buf := make([]byte, 0, control.ChunkHeaderSize+int(a.max))
	data := make([]byte, a.max)
	for off := uint64(0); ; {
		n := min(uint64(a.max), a.size-off)
		if _, err := io.ReadFull(a.f, data[:n]); err != nil {
			return fmt.Errorf("reading the artifact of instruction %s: %w", a.id, err)
		}
		last := off+n == a.size
		buf = control.AppendChunk(buf[:0], control.Chunk{ID: a.id, Offset: off, Last: last, Data: data[:n]})
		if err := c.send(secure.Message{Type: secure.TypeChunk, Payload: buf}); err != nil {
			return err
		}
		c.touch()
		if off += n; last {
			return nil
		}
	}
}
