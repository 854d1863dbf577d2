// Package sink is where ockamd's receiver puts the metrics it verified: a
// receiver.Sink that writes each message's metrics to InfluxDB with the
// blocking write API, together with the messages queued behind it, and then
// answers each message: delivered when InfluxDB stored them, else whether
// the sender should retry.
//
// The receiver (package receiver) is the engine inputs.ockam_listener runs
// in Telegraf; only the Sink differs.
package sink

import (
	"context"
	"errors"
	"sync"

	"github.com/influxdata/telegraf"

	"github.com/ockam-addons/telegraf-ockam/receiver"
)

// ReasonShuttingDown is the transient nack reason of a group that arrives,
// or is still queued, while ockamd shuts down.
const ReasonShuttingDown = "ockamd shutting down"

// Outcome is how the write of one group ended.
type Outcome struct {
	// Delivered: InfluxDB stored every point (or there was none to store).
	Delivered bool
	// Permanent: not delivered, and writing the same points again cannot
	// succeed (InfluxDB refused them).
	Permanent bool
	// Reason is why it was not delivered, for the sender's log.
	Reason string
}

// GroupWriter writes groups of metrics, each the metrics of one message,
// together. WriteGroups returns the outcome of each group, in order; it must
// return within a bounded time (its own timeout) and may be called
// concurrently.
type GroupWriter interface {
	WriteGroups(ctx context.Context, groups [][]telegraf.Metric) []Outcome
}

// MaxWriteMetrics bounds what a worker writes at once: the message it takes,
// and those queued behind it until they hold this many metrics. One write
// of 10,000 points costs InfluxDB far less than six of 1,700 (a message of
// 256 KiB); a message is never split, and one is never held back to wait
// for others.
const MaxWriteMetrics = 10_000

// Sink is a receiver.Sink whose messages go to a GroupWriter, written by a
// fixed number of workers.
//
// Messages are queued, never written by the receiver's goroutine: Deliver
// returns at once, and each message's done is called once the writer is
// done with it. A worker writes the message it takes together with those
// queued behind it (MaxWriteMetrics). The queue holds max messages, the receiver's
// max_undelivered_messages: the receiver never has more undelivered, and
// going beyond is a bug, which panics.
type Sink struct {
	writer  GroupWriter
	workers int
	log     telegraf.Logger

	ctx     context.Context // canceled by Close: writes in progress end
	cancel  context.CancelFunc
	running sync.WaitGroup // the workers

	mu    sync.Mutex
	jobs  chan job
	held  int // messages queued or being written, not yet answered (the capacity)
	busy  int // messages queued, being written or being answered (Drain)
	state state
	idle  chan struct{} // closed once no longer running and busy is 0
	// idleClosed: idle is closed.
	idleClosed bool
}

type state int

const (
	running  state = iota
	draining       // new messages are refused (transient), queued ones are written
	closed         // new messages are refused, writes in progress are canceled
)

type job struct {
	metrics []telegraf.Metric
	done    func(receiver.Outcome)
}

var _ receiver.Sink = (*Sink)(nil)

// New returns a Sink that writes with w, workers messages at a time, for a
// receiver with max undelivered messages, and starts its workers.
func New(w GroupWriter, workers, max int, log telegraf.Logger) *Sink {
	if workers < 1 || max < 1 {
		panic("sink: workers and max must be at least 1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sink{writer: w, workers: workers, log: log, ctx: ctx, cancel: cancel,
		jobs: make(chan job, max), idle: make(chan struct{})}
	s.running.Add(workers)
	for range workers {
		go s.work()
	}
	return s
}

// Deliver queues metrics for writing. An empty message is delivered at
// once, and one that arrives after Drain or Close is refused (transient,
// ReasonShuttingDown) at once, both before Deliver returns.
func (s *Sink) Deliver(_ receiver.Peer, metrics []telegraf.Metric, done func(receiver.Outcome)) {
	s.mu.Lock()
	switch {
	case len(metrics) == 0:
		s.mu.Unlock()
		done(receiver.Delivered())
	case s.state != running:
		s.mu.Unlock()
		done(answer(Outcome{Reason: ReasonShuttingDown}))
	default:
		if s.held >= cap(s.jobs) {
			s.mu.Unlock()
			panic("sink: more messages undelivered than max")
		}
		s.jobs <- job{metrics: metrics, done: done} // room: held < cap(jobs)
		s.held++
		s.busy++
		s.mu.Unlock()
	}
}

// answer is the receiver's outcome of a write.
func answer(o Outcome) receiver.Outcome {
	if o.Delivered {
		return receiver.Delivered()
	}
	return receiver.Outcome{Permanent: o.Permanent, Reason: o.Reason}
}

// work writes queued messages until Close.
func (s *Sink) work() {
	defer s.running.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.jobs:
			jobs := s.behind(j)
			groups := make([][]telegraf.Metric, len(jobs))
			for i, j := range jobs {
				groups[i] = j.metrics
			}
			outcomes := s.writer.WriteGroups(s.ctx, groups)
			for i, j := range jobs {
				o := outcomes[i]
				if !o.Delivered && s.ctx.Err() != nil {
					o = Outcome{Reason: ReasonShuttingDown} // canceled by Close
				}
				s.finish(j, o)
			}
		}
	}
}

// behind returns j and the messages queued behind it, taken until they
// hold MaxWriteMetrics metrics or none is left: written together.
func (s *Sink) behind(j job) []job {
	jobs := []job{j}
	for n := len(j.metrics); n < MaxWriteMetrics; {
		select {
		case next := <-s.jobs:
			jobs = append(jobs, next)
			n += len(next.metrics)
		default:
			return jobs
		}
	}
	return jobs
}

// finish answers a written message. Its place in the queue is free before
// done: done lets the receiver deliver the next message at once.
func (s *Sink) finish(j job, o Outcome) {
	s.mu.Lock()
	s.held--
	s.mu.Unlock()
	j.done(answer(o))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy--
	s.closeIdleLocked()
}

// closeIdleLocked closes idle once the sink no longer runs and nothing is
// queued or being written.
func (s *Sink) closeIdleLocked() {
	if s.state != running && s.busy == 0 && !s.idleClosed {
		s.idleClosed = true
		close(s.idle)
	}
}

// Drain refuses every message delivered from now on (transient nack,
// ReasonShuttingDown) and waits until each queued message has been written
// and answered, or ctx ends.
func (s *Sink) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.state == running {
		s.state = draining
		s.closeIdleLocked()
	}
	idle := s.idle
	st := s.state
	s.mu.Unlock()
	if st == closed {
		return errors.New("sink: Drain after Close")
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close cancels the writes in progress, stops the workers and answers every
// message not written as not delivered (transient, ReasonShuttingDown).
// Messages delivered later are refused the same way.
func (s *Sink) Close() {
	s.mu.Lock()
	s.state = closed
	s.mu.Unlock()
	s.cancel()
	s.running.Wait()
	for {
		select {
		case j := <-s.jobs:
			s.finish(j, Outcome{Reason: ReasonShuttingDown})
		default:
			return
		}
	}
}
