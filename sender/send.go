package sender

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"slices"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Payload is line protocol that a caller already has: whole lines, each
// ending in '\n', one metric per line.
type Payload struct {
	// Lines are the bytes to send. Send reads them and does not keep them
	// after it returns.
	Lines []byte
	// Metrics is the number of lines in Lines: what Result counts.
	Metrics int
}

// Result is what became of the metrics of one Send that returned no error:
// each metric was either acknowledged or refused for good.
type Result struct {
	// Acked is how many metrics the listener acknowledged: it delivered them.
	Acked int
	// Refused are the metrics that no retry can deliver, in the order they
	// were found.
	Refused []Refusal
}

// Refusal is a part of a Send that was refused for good, either by the
// listener (a permanent nack: its policy, a revoked credential, line
// protocol it cannot parse) or by the sender or its caller before sending
// (a metric that cannot be serialized, or whose line is larger than any
// listener accepts).
type Refusal struct {
	Metrics int    // how many metrics
	Reason  string // the listener's nack reason (peer text: print it with %q), or the sender's
	// Listener is true when the listener sent the nack, false when the
	// metrics were refused without being sent.
	Listener bool
}

// RefusedMetrics returns how many metrics were refused, in all.
func (r Result) RefusedMetrics() int {
	n := 0
	for _, f := range r.Refused {
		n += f.Metrics
	}
	return n
}

// Send packs payloads into data messages of at most MaxMessageSize bytes
// (cutting a larger payload at line ends), sends them, and waits until the
// listener answered every message. Each refusal is logged and counted.
//
// It returns an error, with the metrics acknowledged so far in the Result,
// when the caller should send all of payloads again later: no channel, a
// transient nack, no answer within Timeout, a lost connection, or ctx
// ended. The error wraps the listener's *secure.RefusedError when it
// refused the channel. A retry may deliver again the metrics that were
// acknowledged (a duplicate, never a loss). Otherwise the error is nil,
// and every metric is either counted in Result.Acked or in Result.Refused.
//
// ctx bounds the wait for the answers; the wait for a channel is bounded by
// Timeout alone. Send may be called from several goroutines at once: their
// messages share the channel. Start must have been called.
func (s *Sender) Send(ctx context.Context, payloads []Payload) (Result, error) {
	return s.SendSeq(ctx, slices.Values(payloads))
}

// Window is how many messages of one Send may wait for their answers at
// once. Beyond it, Send waits for an answer before it sends the next
// message; the listener's own limit (max_undelivered_messages) may hold
// the device back sooner.
const Window = 1024

// SendSeq is Send for payloads that the caller produces while they are
// sent: a message leaves as soon as it is full, before the next payload is
// asked for, so the caller's work on the rest of a batch (serializing it)
// overlaps the transfer and the listener's work on its first messages. A
// payload's lines must stay unchanged until SendSeq returns. After an
// error no more payloads are asked for.
func (s *Sender) SendSeq(ctx context.Context, payloads iter.Seq[Payload]) (Result, error) {
	t := transfer{s: s, ctx: ctx}
	p := packer{limit: s.cfg.MaxMessageSize, emit: t.send}
	for pl := range payloads {
		s.packPayload(&p, pl)
		if t.err != nil {
			break
		}
	}
	if t.err == nil {
		p.flush()
	}
	if t.l != nil && len(t.pending) > 0 {
		err := s.awaitReplies(ctx, t.l, t.pending, t.replies, &t.res, 0)
		if t.err == nil {
			t.err = err
		}
	}
	t.res.Refused = append(p.refused, t.res.Refused...)
	return t.res, t.err
}

// transfer is one Send's messages on their way: sent as the packer fills
// them, at most Window unanswered.
type transfer struct {
	s       *Sender
	ctx     context.Context
	l       *link // once the first message is ready
	replies chan secure.Message
	pending map[uint64]*message // sent, not answered
	res     Result              // the listener's answers so far
	err     error               // the first error: nothing more is sent
}

// send sends m, first waiting for a channel (the first message) or for an
// answer (Window messages unanswered).
func (t *transfer) send(m message) {
	s := t.s
	if t.err != nil {
		return
	}
	if t.l == nil {
		if t.err = t.ctx.Err(); t.err != nil {
			return
		}
		if t.l, t.err = s.waitLink(); t.err != nil {
			return
		}
		t.replies = make(chan secure.Message, Window) // never blocks the reader: one answer per batch
		t.pending = make(map[uint64]*message)
	}
	if len(t.pending) >= Window {
		if t.err = s.awaitReplies(t.ctx, t.l, t.pending, t.replies, &t.res, Window-1); t.err != nil {
			return
		}
	}
	batch := s.lastBatch.Add(1)
	t.pending[batch] = &m
	t.l.expect(batch, t.replies)
	if err := t.l.send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: m.payload}, s.cfg.Timeout); err != nil {
		t.err = fmt.Errorf("send to %s: %w", s.cfg.Target, err)
		return
	}
	s.stats.MessagesSent.Incr(1)
	s.stats.BytesSent.Incr(int64(len(m.payload)))
}

// awaitReplies collects the answers to the messages in pending into res
// until at most until are unanswered. The timeout starts again with every
// answer: a slow listener that makes progress is not cut off in the middle
// of a large batch. A transient nack is returned once the wait is over;
// the answers after it still count.
func (s *Sender) awaitReplies(ctx context.Context, l *link, pending map[uint64]*message,
	replies <-chan secure.Message, res *Result, until int) error {
	timer := time.NewTimer(s.cfg.Timeout)
	defer timer.Stop()
	var retry error
	for len(pending) > until {
		select {
		case m := <-replies:
			if err := s.handleReply(l, pending, m, res); err != nil && retry == nil {
				retry = err
			}
			timer.Reset(s.cfg.Timeout)
		case <-l.done:
			// Answers the reader queued before the link ended still count.
			for drained := false; !drained; {
				select {
				case m := <-replies:
					if err := s.handleReply(l, pending, m, res); err != nil && retry == nil {
						retry = err
					}
				default:
					drained = true
				}
			}
			if len(pending) <= until || retry != nil {
				return retry
			}
			return fmt.Errorf("channel to %s lost with %d messages unanswered: %w", s.cfg.Target, len(pending), l.cause())
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for %d answers from %s: %w", len(pending), s.cfg.Target, ctx.Err())
		case <-timer.C:
			l.shutdown("no acknowledgement within timeout", s.cfg.Timeout)
			return fmt.Errorf("no answer from %s within %v to %d of the messages sent; channel closed",
				s.cfg.Target, s.cfg.Timeout, len(pending))
		}
	}
	return retry
}

// handleReply accounts for one ack or nack in res. It returns an error for a
// transient nack.
func (s *Sender) handleReply(l *link, pending map[uint64]*message, m secure.Message, res *Result) error {
	msg, ok := pending[m.Batch]
	if !ok {
		return nil // the reader only routes batches we registered
	}
	delete(pending, m.Batch)
	switch {
	case m.Type == secure.TypeAck:
		s.stats.Acks.Incr(1)
		res.Acked += msg.metrics
		return nil
	case m.Permanent:
		s.stats.NacksPermanent.Incr(1)
		res.Refused = append(res.Refused, Refusal{Metrics: msg.metrics, Reason: m.Reason, Listener: true})
		s.log.Errorf("Listener %s refused %d metrics permanently, they will be dropped: %q",
			l.peer.Short(), msg.metrics, m.Reason)
		return nil
	}
	s.stats.NacksTransient.Incr(1)
	s.renewIfStale(l)
	return fmt.Errorf("listener %s asked to retry %d metrics later: %q", l.peer.Short(), msg.metrics, m.Reason)
}

// renewIfStale closes l after a transient nack when the credential it
// carries is no longer the one to use: it expired by this device's clock,
// or credential_path now holds another one (renewed by the operator). The
// next channel presents the current one. The nack's reason is the peer's
// free text and is not read: a transient nack that quotes InfluxDB keeps a
// healthy channel open.
func (s *Sender) renewIfStale(l *link) {
	now := time.Now()
	if err := s.cfg.Trust.Reload(now); err != nil {
		s.log.Debugf("Reloading %s after a transient nack: %v", s.cfg.CredentialPath, err)
	}
	cur := s.cfg.Trust.Current().Credential
	expired := !now.Before(l.own.ExpiresAt)
	if !expired && cur != nil && cur.ID == l.own.ID {
		return
	}
	s.log.Warnf("Listener %s asked to retry and the credential of this channel is no longer current; "+
		"reconnecting with the credential in %s", l.peer.Short(), s.cfg.CredentialPath)
	l.shutdown("credential expired", s.cfg.Timeout)
}

// message is one data message of a Send.
type message struct {
	payload []byte // whole lines of line protocol
	metrics int    // how many metrics (lines) it holds
}

// packPayload adds pl to p: packed into messages of at most
// MaxMessageSize bytes, a payload larger than that cut at line ends, and a
// line larger than that alone. A line larger than any listener accepts is
// logged, dropped and refused: no retry can deliver it. Payloads adjacent
// in memory (subslices of one buffer, in order) are packed without a copy;
// messages may share memory with payloads.
func (s *Sender) packPayload(p *packer, pl Payload) {
	if len(pl.Lines) <= p.limit {
		p.add(pl.Lines, pl.Metrics)
		return
	}
	for rest := pl.Lines; len(rest) > 0; {
		n := bytes.IndexByte(rest, '\n') + 1
		if n == 0 {
			n = len(rest)
		}
		line := rest[:n]
		rest = rest[n:]
		if len(line) > secure.DefaultMaxMessageSize {
			name := measurement(line)
			reason := fmt.Sprintf("its line of %d bytes is larger than %d, the most a listener accepts",
				len(line), secure.DefaultMaxMessageSize)
			s.log.Errorf("Dropping a metric of %q: %s", name, reason)
			p.refused = append(p.refused, Refusal{Metrics: 1, Reason: fmt.Sprintf("metric %q: %s", name, reason)})
			continue
		}
		p.add(line, 1)
	}
}

// packer builds the messages of one Send.
type packer struct {
	limit   int
	emit    func(message) // takes each full message; nil: they go to msgs
	msgs    []message
	refused []Refusal
	cur     message
	owned   bool // cur.payload is our own allocation
}

// add appends lines (n metrics) to the current message, or starts a new one
// when they do not fit.
func (p *packer) add(lines []byte, n int) {
	if len(lines) == 0 {
		return
	}
	if p.cur.metrics > 0 && len(p.cur.payload)+len(lines) > p.limit {
		p.flush()
	}
	switch {
	case p.cur.payload == nil:
		p.cur.payload, p.owned = lines, false // borrowed until something is appended
	case adjacent(p.cur.payload, lines):
		p.cur.payload = p.cur.payload[:len(p.cur.payload)+len(lines)]
	default:
		if !p.owned {
			b := make([]byte, len(p.cur.payload), min(p.limit, 2*(len(p.cur.payload)+len(lines))))
			copy(b, p.cur.payload)
			p.cur.payload, p.owned = b, true
		}
		p.cur.payload = append(p.cur.payload, lines...)
	}
	p.cur.metrics += n
}

func (p *packer) flush() {
	switch {
	case p.cur.metrics == 0 && len(p.cur.payload) == 0:
	case p.emit != nil:
		p.emit(p.cur)
	default:
		p.msgs = append(p.msgs, p.cur)
	}
	p.cur, p.owned = message{}, false
}

// adjacent reports whether b starts where a ends, in the same array.
func adjacent(a, b []byte) bool {
	if len(b) == 0 || cap(a)-len(a) < len(b) {
		return false
	}
	return &a[:len(a)+1][len(a)] == &b[0]
}

// measurement returns the measurement name at the start of line, for
// messages: up to the first unescaped comma or space, unescaped.
func measurement(line []byte) string {
	var name []byte
	for i := 0; i < len(line) && i < 1024; i++ {
		switch c := line[i]; {
		case c == '\\' && i+1 < len(line):
			i++
			name = append(name, line[i])
		case c == ',' || c == ' ' || c == '\n':
			return string(name)
		default:
			name = append(name, c)
		}
	}
	return string(name)
}
