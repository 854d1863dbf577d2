package sink

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
)

// wait bounds every wait for something that should happen promptly, with
// room for a loaded machine: only a failing test waits that long.
const wait = 30 * time.Second

// fakeWriter answers each group with outcome(group). While gate is open
// (not closed), writes wait for it or for their context.
type fakeWriter struct {
	outcome func([]telegraf.Metric) Outcome
	gate    chan struct{}

	mu        sync.Mutex
	written   [][]telegraf.Metric
	active    atomic.Int64
	maxActive atomic.Int64
}

func (f *fakeWriter) Write(ctx context.Context, ms []telegraf.Metric) Outcome {
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for {
		m := f.maxActive.Load()
		if n <= m || f.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return Outcome{Reason: "canceled"}
		}
	}
	f.mu.Lock()
	f.written = append(f.written, ms)
	f.mu.Unlock()
	if f.outcome == nil {
		return Outcome{Delivered: true}
	}
	return f.outcome(ms)
}

// results reads n results from acc, by ID.
func results(t *testing.T, acc telegraf.TrackingAccumulator, n int) map[telegraf.TrackingID]telegraf.DeliveryInfo {
	t.Helper()
	out := make(map[telegraf.TrackingID]telegraf.DeliveryInfo, n)
	for range n {
		select {
		case info := <-acc.Delivered():
			_, dup := out[info.ID()]
			require.False(t, dup, "two results for group %d", info.ID())
			out[info.ID()] = info
		case <-time.After(wait):
			t.Fatalf("%d results of %d", len(out), n)
		}
	}
	return out
}

// requireOutcome checks a result against want, through the interfaces the
// listener uses.
func requireOutcome(t *testing.T, want Outcome, info telegraf.DeliveryInfo) {
	t.Helper()
	o, ok := info.(ockam_listener.DeliveryOutcome)
	require.True(t, ok, "the result implements ockam_listener.DeliveryOutcome")
	require.Equal(t, want, Outcome{Delivered: info.Delivered(), Permanent: o.Permanent(), Reason: o.Reason()})
}

func group(values ...float64) []telegraf.Metric {
	ms := make([]telegraf.Metric, len(values))
	for i, v := range values {
		ms[i] = temp("plant-7", v)
	}
	return ms
}

func newTestAccumulator(t *testing.T, w GroupWriter, workers, max int) (*Accumulator, telegraf.TrackingAccumulator) {
	t.Helper()
	a := New(w, workers, testutil.Logger{Name: "ockamd"})
	t.Cleanup(a.Close)
	return a, a.WithTracking(max)
}

func TestAccumulatorReportsEachGroup(t *testing.T) {
	outcomes := map[float64]Outcome{
		1: {Delivered: true},
		2: {Permanent: true, Reason: "influxdb 400: partial write"},
		3: {Reason: "influxdb unreachable"},
	}
	w := &fakeWriter{outcome: func(ms []telegraf.Metric) Outcome {
		v, _ := ms[0].GetField("value")
		return outcomes[v.(float64)]
	}}
	_, acc := newTestAccumulator(t, w, 2, 10)

	ids := map[telegraf.TrackingID]Outcome{}
	for v, o := range outcomes {
		ids[acc.AddTrackingMetricGroup(group(v, v))] = o
	}
	got := results(t, acc, len(ids))
	for id, want := range ids {
		requireOutcome(t, want, got[id])
	}
	require.Len(t, w.written, 3, "one write per group")
	for _, g := range w.written {
		require.Len(t, g, 2, "a group is written whole")
	}
}

func TestAccumulatorEmptyGroup(t *testing.T) {
	w := &fakeWriter{}
	_, acc := newTestAccumulator(t, w, 1, 1)
	id := acc.AddTrackingMetricGroup(nil)
	// Reported before AddTrackingMetricGroup returned.
	require.Len(t, acc.Delivered(), 1)
	requireOutcome(t, Outcome{Delivered: true}, results(t, acc, 1)[id])
	require.Empty(t, w.written)
}

// TestAccumulatorParallelWrites runs on the bubble's clock (testing/synctest):
// once every worker is blocked, no fourth write can start.
func TestAccumulatorParallelWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{})}
		_, acc := newTestAccumulator(t, w, 3, 10)
		for i := range 8 {
			acc.AddTrackingMetricGroup(group(float64(i)))
		}
		synctest.Wait() // every worker is in a write, or idle
		require.Equal(t, int64(3), w.active.Load())
		require.Equal(t, int64(3), w.maxActive.Load())
		require.Empty(t, acc.Delivered(), "nothing is answered before it is written")
		close(w.gate)
		results(t, acc, 8)
		require.Equal(t, int64(3), w.maxActive.Load())
	})
}

// TestAccumulatorDrain runs on the bubble's clock (testing/synctest): Drain
// is seen still waiting once nothing else can move.
func TestAccumulatorDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{})}
		a, acc := newTestAccumulator(t, w, 1, 10)
		first := acc.AddTrackingMetricGroup(group(1))
		queued := acc.AddTrackingMetricGroup(group(2))
		synctest.Wait()
		require.Equal(t, int64(1), w.active.Load())

		drained := make(chan error, 1)
		go func() { drained <- a.Drain(context.Background()) }()
		// Once draining, a new group is refused at once; the queued ones wait.
		synctest.Wait()
		a.mu.Lock()
		require.Equal(t, draining, a.state)
		a.mu.Unlock()
		late := acc.AddTrackingMetricGroup(group(3))
		requireOutcome(t, Outcome{Reason: ReasonShuttingDown}, results(t, acc, 1)[late])
		synctest.Wait()
		select {
		case err := <-drained:
			t.Fatalf("Drain returned %v with writes under way", err)
		default:
		}

		close(w.gate)
		require.NoError(t, <-drained)
		// Every result is on Delivered() when Drain returns.
		require.Len(t, acc.Delivered(), 2)
		got := results(t, acc, 2)
		requireOutcome(t, Outcome{Delivered: true}, got[first])
		requireOutcome(t, Outcome{Delivered: true}, got[queued])
		require.Len(t, w.written, 2)
	})
}

func TestAccumulatorDrainIdle(t *testing.T) {
	a, _ := newTestAccumulator(t, &fakeWriter{}, 1, 1)
	require.NoError(t, a.Drain(context.Background()))
	require.NoError(t, a.Drain(context.Background()), "twice")
}

// TestAccumulatorCloseCancelsWrites runs on the bubble's clock
// (testing/synctest): Drain's deadline passes while the write hangs.
func TestAccumulatorCloseCancelsWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{})} // never opens: InfluxDB hangs
		a, acc := newTestAccumulator(t, w, 1, 10)
		inFlight := acc.AddTrackingMetricGroup(group(1))
		queued := acc.AddTrackingMetricGroup(group(2))
		synctest.Wait()
		require.Equal(t, int64(1), w.active.Load())

		const deadline = 30 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		started := time.Now()
		require.ErrorIs(t, a.Drain(ctx), context.DeadlineExceeded)
		require.Equal(t, deadline, time.Since(started), "Drain gives up at its deadline")

		a.Close()
		got := results(t, acc, 2)
		requireOutcome(t, Outcome{Reason: ReasonShuttingDown}, got[inFlight])
		requireOutcome(t, Outcome{Reason: ReasonShuttingDown}, got[queued])
		late := acc.AddTrackingMetricGroup(group(3))
		requireOutcome(t, Outcome{Reason: ReasonShuttingDown}, results(t, acc, 1)[late])
		a.Close() // twice is fine
	})
}

func TestAccumulatorCallerBugsPanic(t *testing.T) {
	a := New(&fakeWriter{}, 1, testutil.Logger{})
	t.Cleanup(a.Close)
	require.PanicsWithValue(t, "sink: AddTrackingMetricGroup before WithTracking", func() { a.AddTrackingMetricGroup(group(1)) })
	a.WithTracking(1)
	require.PanicsWithValue(t, "sink: WithTracking called twice", func() { a.WithTracking(1) })
	require.Panics(t, func() { New(&fakeWriter{}, 0, testutil.Logger{}) })

	// More unanswered groups than WithTracking's max: one is being written
	// (or answered and not read), so a second is a bug.
	_, acc := newTestAccumulator(t, &fakeWriter{}, 1, 1)
	acc.AddTrackingMetricGroup(group(1))
	require.PanicsWithValue(t, "sink: more tracking groups unanswered than WithTracking's max", func() {
		acc.AddTrackingMetricGroup(group(2))
	})
	results(t, acc, 1)
	acc.AddTrackingMetricGroup(group(3)) // room again
	results(t, acc, 1)
}

func TestAccumulatorUntracked(t *testing.T) {
	w := &fakeWriter{outcome: func([]telegraf.Metric) Outcome { return Outcome{Reason: "influxdb unreachable"} }}
	log := &testutil.CaptureLogger{Name: "ockamd"}
	a := New(w, 1, log)
	t.Cleanup(a.Close)
	a.AddFields("temp", map[string]any{"value": 1.0}, map[string]string{"site": "x"}, ts)
	a.AddGauge("temp", map[string]any{"value": 2.0}, nil)
	require.Len(t, w.written, 2, "written in the caller's goroutine")
	require.Equal(t, telegraf.Gauge, w.written[1][0].Type())
	require.Equal(t, ts, w.written[0][0].Time())
	require.Len(t, log.Errors(), 2)
	require.Contains(t, log.Errors()[0], "influxdb unreachable")
	a.AddError(nil)
	a.AddError(context.Canceled)
	require.Len(t, log.Errors(), 3)
}
