// Package agent is a device's side of control instructions over the channel
// (docs/PROTOCOL.md, section 17.5): on each channel it sends the outcomes
// its gateway has not acknowledged (the outbox), then ready with the kinds it
// applies; it verifies each instruction the gateway pushes
// (control.Verifier), applies it (control/apply), and answers with exactly
// one outcome, kept in the outbox until the gateway acks it.
//
// It does not own the channel: the sender that does (outputs.ockam) hands
// it each instruction message its reader receives, and routes the acks and
// nacks of the outcome batches back (Link.Expect), as it does for data.
package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/control/apply"
	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// The outbox file (docs/PROTOCOL.md, section 17.5), mode 0600, replaced by
// a temporary file and a rename at every change:
//
//	u8    version = 1
//	u32   n, 0..MaxOutbox
//	n × { u64 batch | u16 length l | [l] outcome body (control.Outcome) }
const (
	// MaxOutbox bounds the unacknowledged outcomes kept; past it the
	// oldest is dropped.
	MaxOutbox     = 64
	outboxVersion = 1
	maxOutboxFile = 1 + 4 + MaxOutbox*(8+2+58+control.MaxReasonSize)

	// FirstBatch is the first batch id of outcomes: the upper half of the
	// batch space, so that they never meet a data message's batch (which
	// outputs.ockam counts from 1 in each process).
	FirstBatch = 1 << 63
	// queueSize bounds the instructions received and not yet handled: an
	// honest gateway sends one at a time; past it, an instruction is
	// answered "too many" at once, unparsed.
	queueSize = 4
	// chunkQueue bounds the chunks received and not yet written; past it,
	// OfferChunk waits (the channel's reader with it: backpressure).
	chunkQueue = 16
)

// Link is the channel a Session speaks on.
type Link interface {
	// Send sends one message on the channel.
	Send(secure.Message) error
	// Expect registers where the ack or nack of batch goes, before the
	// message of that batch is sent. w is buffered for MaxOutbox+queueSize
	// answers.
	Expect(batch uint64, w chan<- secure.Message)
}

// Config is what an Agent needs.
type Config struct {
	// Verifier decides on each instruction (policy, sequence store, flood
	// limit).
	Verifier *control.Verifier
	// Appliers apply the kinds this device is set up for; the ready
	// message names them.
	Appliers map[control.Kind]apply.Applier
	// Artifacts stages artifact instructions from their chunks; nil: the
	// device applies no artifacts.
	Artifacts *apply.Artifacts
	// Outbox is the file of the unacknowledged outcomes.
	Outbox string
	// Log receives the agent's log lines; nil discards them.
	Log logger.Logger
	// Now is the clock of the checks; nil is time.Now.
	Now func() time.Time
}

// Agent is a device's control side. It is safe for concurrent use; one
// Session runs per channel.
type Agent struct {
	cfg Config
	log logger.Logger
	now func() time.Time

	mu        sync.Mutex
	outbox    []entry
	nextBatch uint64
	applyMu   sync.Mutex // one instruction applied at a time, whatever the channel
}

// entry is one unacknowledged outcome.
type entry struct {
	batch uint64
	body  []byte
}

// New reads the outbox and returns an Agent.
func New(cfg Config) (*Agent, error) {
	if cfg.Verifier == nil || (len(cfg.Appliers) == 0 && cfg.Artifacts == nil) || cfg.Outbox == "" {
		return nil, errors.New("agent: a verifier, at least one applier and an outbox file are required")
	}
	a := &Agent{cfg: cfg, log: cfg.Log, now: cfg.Now, nextBatch: FirstBatch}
	if a.log == nil {
		a.log = logger.Nop{}
	}
	if a.now == nil {
		a.now = time.Now
	}
	b, err := control.ReadState(cfg.Outbox, maxOutboxFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("agent: outbox: %w", err)
	default:
		if a.outbox, err = parseOutbox(b); err != nil {
			return nil, fmt.Errorf("agent: outbox %s: %w", cfg.Outbox, err)
		}
	}
	for _, e := range a.outbox {
		a.nextBatch = max(a.nextBatch, e.batch+1)
	}
	return a, nil
}

// Kinds returns the kind bits of the ready message: the kinds with an
// applier.
func (a *Agent) Kinds() uint8 {
	var k uint8
	for kind := range a.cfg.Appliers {
		if kind >= control.KindConfig && kind <= control.KindCommand {
			k |= 1 << (kind - 1)
		}
	}
	if a.cfg.Artifacts != nil {
		k |= 1 << (control.KindArtifact - 1)
	}
	return k
}

// Outbox returns how many outcomes await their ack.
func (a *Agent) Outbox() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.outbox)
}

func parseOutbox(b []byte) ([]entry, error) {
	s := cryptobyte.String(b)
	var v uint8
	var n uint32
	if !s.ReadUint8(&v) || v != outboxVersion || !s.ReadUint32(&n) || n > MaxOutbox {
		return nil, errors.New("not a version 1 outbox")
	}
	var out []entry
	for i := range n {
		var e entry
		var body cryptobyte.String
		if !s.ReadUint64(&e.batch) || !s.ReadUint16LengthPrefixed(&body) {
			return nil, fmt.Errorf("entry %d truncated", i)
		}
		if _, err := control.ParseOutcome(body); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		e.body = bytes.Clone(body)
		out = append(out, e)
	}
	if len(s) != 0 {
		return nil, errors.New("trailing bytes")
	}
	return out, nil
}

// saveLocked writes the outbox; the caller holds a.mu.
func (a *Agent) saveLocked() error {
	b := []byte{outboxVersion}
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.outbox)))
	for _, e := range a.outbox {
		b = binary.BigEndian.AppendUint64(b, e.batch)
		b = binary.BigEndian.AppendUint16(b, uint16(len(e.body)))
		b = append(b, e.body...)
	}
	return atomicfile.Write(a.cfg.Outbox, b, 0o600)
}

// queue puts an outcome in the outbox, dropping the oldest past MaxOutbox,
// and returns its batch.
func (a *Agent) queue(o control.Outcome) (entry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := entry{batch: a.nextBatch, body: o.Marshal()}
	a.nextBatch++
	a.outbox = append(a.outbox, e)
	if len(a.outbox) > MaxOutbox {
		a.log.Warnf("Control: outbox full, dropped the oldest outcome (batch %d)", a.outbox[0].batch)
		a.outbox = a.outbox[1:]
	}
	return e, a.saveLocked()
}

// done removes the outcome of batch from the outbox.
func (a *Agent) done(batch uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, e := range a.outbox {
		if e.batch == batch {
			a.outbox = append(a.outbox[:i:i], a.outbox[i+1:]...)
			if err := a.saveLocked(); err != nil {
				a.log.Errorf("Control: outbox: %v", err)
			}
			return
		}
	}
}

// unacked returns the outbox's entries.
func (a *Agent) unacked() []entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]entry(nil), a.outbox...)
}

// Session is the agent on one channel.
type Session struct {
	a      *Agent
	link   Link
	ctx    context.Context
	cancel context.CancelFunc
	work   chan []byte
	chunks chan []byte
	acks   chan secure.Message
	wg     sync.WaitGroup
}

// NewSession returns the agent's session on a channel just opened; the
// channel's reader may hand it instructions (Offer) from now on. Begin
// starts it.
func (a *Agent) NewSession(l Link) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	return &Session{a: a, link: l, ctx: ctx, cancel: cancel, work: make(chan []byte, queueSize),
		chunks: make(chan []byte, chunkQueue),
		acks:   make(chan secure.Message, MaxOutbox+queueSize+1)}
}

// Begin sends the outbox, then ready, and starts the session's goroutines.
// It returns an error if sending failed (the channel is then unusable);
// Stop is still to be called.
func (s *Session) Begin() error {
	for _, e := range s.a.unacked() {
		if err := s.send(e); err != nil {
			return err
		}
	}
	if err := s.link.Send(secure.Message{Type: secure.TypeReady, Kinds: s.a.Kinds(), MaxChunk: secure.MaxChunkData}); err != nil {
		return err
	}
	s.wg.Add(2)
	go s.run()
	go s.answers()
	return nil
}

// send registers and sends one outcome.
func (s *Session) send(e entry) error {
	s.link.Expect(e.batch, s.acks)
	return s.link.Send(secure.Message{Type: secure.TypeOutcome, Batch: e.batch, Payload: e.body})
}

// Offer hands the session an instruction message's payload, from the
// channel's reader; it never blocks. Past queueSize waiting, the
// instruction is refused as too many (code 14, not permanent: the gateway
// offers it again on the next channel).
func (s *Session) Offer(payload []byte) {
	select {
	case s.work <- payload:
		return
	default:
	}
	in, _ := control.Parse(payload)
	s.answer(control.OutcomeOf(in, &control.RefusalError{Code: control.RefusedTooMany,
		Err: errors.New("the gateway sent instructions without waiting for their outcomes")}))
}

// OfferChunk hands the session a chunk message's body, from the channel's
// reader. It waits while chunkQueue chunks are not yet written, so that an
// artifact streams at the pace of the disk; it returns once the session is
// stopped. A chunk of no artifact being staged is dropped.
func (s *Session) OfferChunk(body []byte) {
	select {
	case s.chunks <- body:
	case <-s.ctx.Done():
	}
}

// Stop ends the session and waits for an instruction being applied.
func (s *Session) Stop() {
	s.cancel()
	s.wg.Wait()
}

// run verifies and applies the instructions in order.
func (s *Session) run() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case b := <-s.work:
			s.answer(s.a.handle(s.ctx, b, nil, s.chunks))
		case c := <-s.chunks:
			// The reader queued a chunk's instruction before the chunk:
			// select may still pick the chunk first, so an instruction
			// waiting now goes first, with this chunk. Else the chunk is
			// of an instruction refused or answered: dropped.
			select {
			case b := <-s.work:
				s.answer(s.a.handle(s.ctx, b, c, s.chunks))
			default:
			}
		}
	}
}

// handle verifies and applies one instruction and returns its outcome.
// first, if not nil, is a chunk received before the chunks still in
// chunks.
func (a *Agent) handle(ctx context.Context, b, first []byte, chunks <-chan []byte) control.Outcome {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	in, err := a.cfg.Verifier.Verify(b, a.now())
	switch {
	case err != nil:
	case in.Kind == control.KindArtifact && a.cfg.Artifacts != nil:
		err = a.stage(ctx, in, first, chunks)
	default:
		err = apply.Apply(ctx, a.cfg.Appliers, in)
	}
	o := control.OutcomeOf(in, err)
	id := "(unparsed)"
	if in != nil {
		id = in.ID.String()
	}
	switch o.Result {
	case control.Applied:
		a.log.Infof("Control: applied instruction %s (%v, operator %s, sequence %d)", id, in.Kind, in.Operator().Short(), in.Sequence)
	default:
		a.log.Warnf("Control: instruction %s %v: %s", id, o.Result, o.Reason)
	}
	return o
}

// answer queues an outcome in the outbox and sends it.
func (s *Session) answer(o control.Outcome) {
	e, err := s.a.queue(o)
	if err != nil {
		s.a.log.Errorf("Control: outbox: %v (the outcome is sent, but lost if the gateway does not ack it)", err)
	}
	if err := s.send(e); err != nil {
		s.a.log.Debugf("Control: sending an outcome: %v (sent again on the next channel)", err)
	}
}

// answers takes the gateway's acks and nacks of outcomes.
func (s *Session) answers() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case m := <-s.acks:
			switch {
			case m.Type == secure.TypeAck:
				s.a.done(m.Batch)
			case m.Permanent:
				s.a.log.Warnf("Control: the gateway refused the outcome of batch %d for good: %s", m.Batch, m.Reason)
				s.a.done(m.Batch)
			default:
				s.a.log.Debugf("Control: the gateway did not deliver the outcome of batch %d (%s); sent again on the next channel", m.Batch, m.Reason)
			}
		}
	}
}

// stage takes the chunks of a verified artifact instruction into its
// staging, in order, and commits it after the last one (section 17.3).
// Chunks of another instruction are dropped. The channel's end before the
// last chunk is a failure: the sequence is consumed, and the operator signs
// a new instruction.
func (a *Agent) stage(ctx context.Context, in *control.Instruction, first []byte, chunks <-chan []byte) error {
	st, err := a.cfg.Artifacts.Begin(in)
	if err != nil {
		return err
	}
	for {
		b := first
		first = nil
		if b == nil {
			select {
			case <-ctx.Done():
				st.Abort()
				return errors.New("the channel ended before the artifact's last chunk")
			case b = <-chunks:
			}
		}
		c, err := control.ParseChunk(b)
		if err != nil || c.ID != in.ID {
			continue
		}
		if err := st.Write(c.Offset, c.Data); err != nil {
			return err
		}
		if c.Last {
			return st.Commit(ctx)
		}
	}
}
