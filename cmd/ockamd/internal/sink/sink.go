// Package sink is where ockamd's listener puts the metrics it verified: an
// Accumulator that writes every tracking group to InfluxDB with the blocking
// write API and reports, on Delivered(), whether InfluxDB stored it, and if
// not, whether the sender should retry (ockam_listener.DeliveryOutcome).
//
// The listener (plugins/inputs/ockam_listener) is the same one Telegraf
// runs; only the accumulator differs. Its contract is Telegraf's tracking
// accumulator (TELEGRAF.md, "Tracking accumulator"): one result per group,
// on a channel of the capacity given to WithTracking, which the caller must
// never exceed with unanswered groups.
package sink

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"

	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
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

// GroupWriter writes one group of metrics. Write must return within a
// bounded time (its own timeout) and may be called concurrently.
type GroupWriter interface {
	Write(ctx context.Context, metrics []telegraf.Metric) Outcome
}

// deliveryInfo is one result on Delivered().
type deliveryInfo struct {
	id      telegraf.TrackingID
	outcome Outcome
}

var _ ockam_listener.DeliveryOutcome = deliveryInfo{}

func (d deliveryInfo) ID() telegraf.TrackingID { return d.id }
func (d deliveryInfo) Delivered() bool         { return d.outcome.Delivered }
func (d deliveryInfo) Permanent() bool         { return d.outcome.Permanent }
func (d deliveryInfo) Reason() string          { return d.outcome.Reason }

// Accumulator is a telegraf.TrackingAccumulator whose groups go to a
// GroupWriter, written by a fixed number of workers.
//
// Tracking groups are queued, never written by the caller's goroutine:
// AddTrackingMetricGroup returns at once, and each group's result arrives on
// Delivered() once the writer is done with it. Metrics added without
// tracking (AddMetric, AddFields, …) are written in the caller's goroutine;
// a failure is logged, as no one is waiting for it.
//
// The caller (the listener) must call WithTracking once before adding
// anything, and keep at most that many groups unanswered: every group takes
// a place in the queue and then in the Delivered() channel until it is read.
// Going beyond is a bug, and panics, as Telegraf's own accumulator does.
type Accumulator struct {
	writer  GroupWriter
	workers int
	log     telegraf.Logger

	ctx     context.Context // canceled by Close: writes in progress end
	cancel  context.CancelFunc
	running sync.WaitGroup // the workers
	lastID  atomic.Uint64

	mu        sync.Mutex
	jobs      chan job // set by WithTracking
	delivered chan telegraf.DeliveryInfo
	busy      int // tracking groups queued or being written
	state     state
	idle      chan struct{} // closed once draining and busy is 0
}

type state int

const (
	running  state = iota
	draining       // new groups are refused (transient), queued ones are written
	closed         // new groups are refused, writes in progress are canceled
)

type job struct {
	id      telegraf.TrackingID
	metrics []telegraf.Metric
}

var (
	_ telegraf.TrackingAccumulator   = (*Accumulator)(nil)
	_ ockam_listener.OutcomeReporter = (*Accumulator)(nil)
)

// New returns an Accumulator that writes with w, workers groups at a time.
func New(w GroupWriter, workers int, log telegraf.Logger) *Accumulator {
	if workers < 1 {
		panic("sink: workers must be at least 1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Accumulator{writer: w, workers: workers, log: log, ctx: ctx, cancel: cancel, idle: make(chan struct{})}
}

// WithTracking makes room for max unanswered groups and starts the
// workers. It may be called once.
func (a *Accumulator) WithTracking(max int) telegraf.TrackingAccumulator {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.jobs != nil {
		panic("sink: WithTracking called twice")
	}
	a.jobs = make(chan job, max)
	a.delivered = make(chan telegraf.DeliveryInfo, max)
	a.running.Add(a.workers)
	for range a.workers {
		go a.work()
	}
	return a
}

// Delivered returns the channel of the groups' results.
func (a *Accumulator) Delivered() <-chan telegraf.DeliveryInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.delivered
}

// AddTrackingMetricGroup queues group for writing and returns its ID. An
// empty group is reported delivered at once, and a group added after Drain
// or Close is reported not delivered (transient, ReasonShuttingDown) at once,
// both before AddTrackingMetricGroup returns.
func (a *Accumulator) AddTrackingMetricGroup(group []telegraf.Metric) telegraf.TrackingID {
	id := telegraf.TrackingID(a.lastID.Add(1))
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.jobs == nil:
		panic("sink: AddTrackingMetricGroup before WithTracking")
	case a.busy+len(a.delivered) >= cap(a.delivered):
		// Queued, being written, or answered and not read yet.
		panic("sink: more tracking groups unanswered than WithTracking's max")
	case len(group) == 0:
		a.notify(id, Outcome{Delivered: true})
	case a.state != running:
		a.notify(id, Outcome{Reason: ReasonShuttingDown})
	default:
		a.jobs <- job{id: id, metrics: group} // room: busy < cap(jobs)
		a.busy++
	}
	return id
}

// AddTrackingMetric is AddTrackingMetricGroup of one metric.
func (a *Accumulator) AddTrackingMetric(m telegraf.Metric) telegraf.TrackingID {
	return a.AddTrackingMetricGroup([]telegraf.Metric{m})
}

// notify reports a result, with mu held (so that busy and the results
// waiting in delivered add up to the groups unanswered). The check in
// AddTrackingMetricGroup keeps room for it: it never waits.
func (a *Accumulator) notify(id telegraf.TrackingID, o Outcome) {
	select {
	case a.delivered <- deliveryInfo{id: id, outcome: o}:
	default:
		panic("sink: Delivered() is full: more tracking groups unanswered than WithTracking's max")
	}
}

// work writes queued groups until Close.
func (a *Accumulator) work() {
	defer a.running.Done()
	for {
		select {
		case <-a.ctx.Done():
			return
		case j := <-a.jobs:
			o := a.writer.Write(a.ctx, j.metrics)
			if !o.Delivered && a.ctx.Err() != nil {
				o = Outcome{Reason: ReasonShuttingDown} // canceled by Close
			}
			a.done(j.id, o)
		}
	}
}

// done reports the result of a written group.
func (a *Accumulator) done(id telegraf.TrackingID, o Outcome) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.notify(id, o)
	a.busy--
	if a.state == draining && a.busy == 0 {
		close(a.idle)
	}
}

// Drain refuses every group added from now on (transient nack,
// ReasonShuttingDown) and waits until each queued group has been written
// and its result put on Delivered(), or ctx ends.
func (a *Accumulator) Drain(ctx context.Context) error {
	a.mu.Lock()
	if a.state == running {
		a.state = draining
		if a.busy == 0 {
			close(a.idle)
		}
	}
	idle := a.idle
	st := a.state
	a.mu.Unlock()
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

// Close cancels the writes in progress, stops the workers and reports every
// group not written as not delivered (transient, ReasonShuttingDown).
// Results still go to Delivered(), which has room for them. Groups added
// later are refused the same way.
func (a *Accumulator) Close() {
	a.mu.Lock()
	a.state = closed
	jobs := a.jobs
	a.mu.Unlock()
	a.cancel()
	a.running.Wait()
	for jobs != nil {
		select {
		case j := <-jobs:
			a.done(j.id, Outcome{Reason: ReasonShuttingDown})
		default:
			return
		}
	}
}

// AddMetric writes m at once, without tracking; a failure is logged.
func (a *Accumulator) AddMetric(m telegraf.Metric) {
	if o := a.writer.Write(a.ctx, []telegraf.Metric{m}); !o.Delivered {
		a.log.Errorf("Writing a metric of %q without tracking failed: %s", m.Name(), o.Reason)
	}
}

// AddFields writes an untyped metric, as AddMetric.
func (a *Accumulator) AddFields(measurement string, fields map[string]any, tags map[string]string, t ...time.Time) {
	a.add(measurement, fields, tags, telegraf.Untyped, t)
}

// AddGauge writes a gauge, as AddMetric.
func (a *Accumulator) AddGauge(measurement string, fields map[string]any, tags map[string]string, t ...time.Time) {
	a.add(measurement, fields, tags, telegraf.Gauge, t)
}

// AddCounter writes a counter, as AddMetric.
func (a *Accumulator) AddCounter(measurement string, fields map[string]any, tags map[string]string, t ...time.Time) {
	a.add(measurement, fields, tags, telegraf.Counter, t)
}

// AddSummary writes a summary, as AddMetric.
func (a *Accumulator) AddSummary(measurement string, fields map[string]any, tags map[string]string, t ...time.Time) {
	a.add(measurement, fields, tags, telegraf.Summary, t)
}

// AddHistogram writes a histogram, as AddMetric.
func (a *Accumulator) AddHistogram(measurement string, fields map[string]any, tags map[string]string, t ...time.Time) {
	a.add(measurement, fields, tags, telegraf.Histogram, t)
}

func (a *Accumulator) add(measurement string, fields map[string]any, tags map[string]string, tp telegraf.ValueType, t []time.Time) {
	tm := time.Now()
	if len(t) > 0 {
		tm = t[0]
	}
	a.AddMetric(metric.New(measurement, tags, fields, tm, tp))
}

// SetPrecision does nothing: timestamps are written in nanoseconds.
func (*Accumulator) SetPrecision(time.Duration) {}

// AddError logs err.
func (a *Accumulator) AddError(err error) {
	if err != nil {
		a.log.Errorf("Error in the listener: %v", err)
	}
}

// ReportsOutcomes reports true: every result on Delivered() implements
// ockam_listener.DeliveryOutcome, so the listener keeps no copy of a
// message to send it again.
func (*Accumulator) ReportsOutcomes() bool { return true }
