package sink

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/receiver"
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
	writes    [][][]telegraf.Metric // the groups of each write
	written   [][]telegraf.Metric   // every group written
	active    atomic.Int64
	maxActive atomic.Int64
}

func (f *fakeWriter) WriteGroups(ctx context.Context, groups [][]telegraf.Metric) []Outcome {
	n := f.active.Add(1)
	defer f.active.Add(-1)
	for {
		m := f.maxActive.Load()
		if n <= m || f.maxActive.CompareAndSwap(m, n) {
			break
		}
	}
	out := make([]Outcome, len(groups))
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			for i := range out {
				out[i] = Outcome{Reason: "canceled"}
			}
			return out
		}
	}
	f.mu.Lock()
	f.writes = append(f.writes, groups)
	f.written = append(f.written, groups...)
	f.mu.Unlock()
	for i, g := range groups {
		out[i] = Outcome{Delivered: true}
		if f.outcome != nil {
			out[i] = f.outcome(g)
		}
	}
	return out
}

// outcomeCh gets the outcome of one delivered message, once done is called.
type outcomeCh chan receiver.Outcome

// deliver hands metrics to s and returns where its outcome arrives; a
// second call of done fails the test.
func deliver(t *testing.T, s *Sink, metrics []telegraf.Metric) outcomeCh {
	t.Helper()
	a := make(outcomeCh, 2)
	s.Deliver(receiver.Peer{}, metrics, func(o receiver.Outcome) { a <- o })
	return a
}

// requireOutcome waits for a's outcome and checks it against want, and
// that done was called once.
func (a outcomeCh) requireOutcome(t *testing.T, want receiver.Outcome) {
	t.Helper()
	select {
	case o := <-a:
		require.Equal(t, want, o)
	case <-time.After(wait):
		t.Fatal("no outcome")
	}
	require.Empty(t, a, "done called twice")
}

// answered reports whether a's outcome has come.
func (a outcomeCh) answered() bool { return len(a) > 0 }

func group(values ...float64) []telegraf.Metric {
	ms := make([]telegraf.Metric, len(values))
	for i, v := range values {
		ms[i] = temp("plant-7", v)
	}
	return ms
}

func newTestSink(t *testing.T, w GroupWriter, workers, max int) *Sink {
	t.Helper()
	s := New(w, workers, max, testutil.Logger{Name: "ockamd"})
	t.Cleanup(s.Close)
	return s
}

var shuttingDown = receiver.Outcome{Reason: ReasonShuttingDown}

func TestSinkAnswersEachMessage(t *testing.T) {
	outcomes := map[float64]Outcome{
		1: {Delivered: true},
		2: {Permanent: true, Reason: "influxdb 400: partial write"},
		3: {Reason: "influxdb unreachable"},
	}
	want := map[float64]receiver.Outcome{
		1: receiver.Delivered(),
		2: {Permanent: true, Reason: "influxdb 400: partial write"},
		3: receiver.Transient("influxdb unreachable"),
	}
	w := &fakeWriter{outcome: func(ms []telegraf.Metric) Outcome {
		v, _ := ms[0].GetField("value")
		return outcomes[v.(float64)]
	}}
	s := newTestSink(t, w, 2, 10)

	answers := map[float64]outcomeCh{}
	for v := range outcomes {
		answers[v] = deliver(t, s, group(v, v))
	}
	for v, a := range answers {
		a.requireOutcome(t, want[v])
	}
	require.Len(t, w.written, 3, "one write per message")
	for _, g := range w.written {
		require.Len(t, g, 2, "a message is written whole")
	}
}

func TestSinkEmptyMessage(t *testing.T) {
	w := &fakeWriter{}
	s := newTestSink(t, w, 1, 1)
	a := deliver(t, s, nil)
	require.True(t, a.answered(), "answered before Deliver returned")
	a.requireOutcome(t, receiver.Delivered())
	require.Empty(t, w.written)
}

// TestSinkParallelWrites runs on the bubble's clock (testing/synctest):
// once every worker is blocked, no fourth write can start.
func TestSinkParallelWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{})}
		s := newTestSink(t, w, 3, 10)
		var answers []outcomeCh
		for i := range 8 {
			answers = append(answers, deliver(t, s, group(float64(i))))
			// A worker takes the messages queued behind the one it
			// takes: let one take each of the first three alone.
			synctest.Wait()
		}
		require.Equal(t, int64(3), w.active.Load())
		require.Equal(t, int64(3), w.maxActive.Load())
		for _, a := range answers {
			require.False(t, a.answered(), "nothing is answered before it is written")
		}
		close(w.gate)
		for _, a := range answers {
			a.requireOutcome(t, receiver.Delivered())
		}
		require.Equal(t, int64(3), w.maxActive.Load())
	})
}

// TestSinkWritesQueuedTogether runs on the bubble's clock
// (testing/synctest): the messages that queued while the only worker wrote
// are written together, until they hold MaxWriteMetrics metrics, and each
// gets its own outcome.
func TestSinkWritesQueuedTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{}), outcome: func(ms []telegraf.Metric) Outcome {
			if v, _ := ms[0].GetField("value"); v == 3.0 {
				return Outcome{Permanent: true, Reason: "influxdb 400: partial write"}
			}
			return Outcome{Delivered: true}
		}}
		s := newTestSink(t, w, 1, 10)
		first := deliver(t, s, group(1))
		synctest.Wait() // the worker writes it alone
		small := []outcomeCh{deliver(t, s, group(2, 2)), deliver(t, s, group(3)), deliver(t, s, group(4))}
		close(w.gate)
		first.requireOutcome(t, receiver.Delivered())
		small[0].requireOutcome(t, receiver.Delivered())
		small[1].requireOutcome(t, receiver.Outcome{Permanent: true, Reason: "influxdb 400: partial write"})
		small[2].requireOutcome(t, receiver.Delivered())
		require.Equal(t, [][][]telegraf.Metric{{group(1)}, {group(2, 2), group(3), group(4)}}, w.writes)

		// Large messages: taken until MaxWriteMetrics is reached, never split.
		w.gate, w.writes = make(chan struct{}), nil
		big := func(v float64) []telegraf.Metric { return group(slices.Repeat([]float64{v}, MaxWriteMetrics*3/5)...) }
		first = deliver(t, s, big(11))
		synctest.Wait()
		large := []outcomeCh{deliver(t, s, big(12)), deliver(t, s, big(13)), deliver(t, s, big(14))}
		close(w.gate)
		first.requireOutcome(t, receiver.Delivered())
		for _, a := range large {
			a.requireOutcome(t, receiver.Delivered())
		}
		require.Equal(t, [][][]telegraf.Metric{{big(11)}, {big(12), big(13)}, {big(14)}}, w.writes)
	})
}

// TestSinkDrain runs on the bubble's clock (testing/synctest): Drain is
// seen still waiting once nothing else can move.
func TestSinkDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{})}
		s := newTestSink(t, w, 1, 10)
		first := deliver(t, s, group(1))
		queued := deliver(t, s, group(2))
		synctest.Wait()
		require.Equal(t, int64(1), w.active.Load())

		drained := make(chan error, 1)
		go func() { drained <- s.Drain(context.Background()) }()
		// Once draining, a new message is refused at once; the queued ones wait.
		synctest.Wait()
		s.mu.Lock()
		require.Equal(t, draining, s.state)
		s.mu.Unlock()
		late := deliver(t, s, group(3))
		require.True(t, late.answered(), "refused before Deliver returned")
		late.requireOutcome(t, shuttingDown)
		synctest.Wait()
		select {
		case err := <-drained:
			t.Fatalf("Drain returned %v with writes under way", err)
		default:
		}

		close(w.gate)
		require.NoError(t, <-drained)
		// Every message is answered when Drain returns.
		require.True(t, first.answered())
		require.True(t, queued.answered())
		first.requireOutcome(t, receiver.Delivered())
		queued.requireOutcome(t, receiver.Delivered())
		require.Len(t, w.written, 2)
	})
}

func TestSinkDrainIdle(t *testing.T) {
	s := newTestSink(t, &fakeWriter{}, 1, 1)
	require.NoError(t, s.Drain(context.Background()))
	require.NoError(t, s.Drain(context.Background()), "twice")
}

// TestSinkCloseCancelsWrites runs on the bubble's clock
// (testing/synctest): Drain's deadline passes while the write hangs.
func TestSinkCloseCancelsWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{gate: make(chan struct{})} // never opens: InfluxDB hangs
		s := newTestSink(t, w, 1, 10)
		inFlight := deliver(t, s, group(1))
		queued := deliver(t, s, group(2))
		synctest.Wait()
		require.Equal(t, int64(1), w.active.Load())

		const deadline = 30 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		started := time.Now()
		require.ErrorIs(t, s.Drain(ctx), context.DeadlineExceeded)
		require.Equal(t, deadline, time.Since(started), "Drain gives up at its deadline")

		s.Close()
		inFlight.requireOutcome(t, shuttingDown)
		queued.requireOutcome(t, shuttingDown)
		late := deliver(t, s, group(3))
		late.requireOutcome(t, shuttingDown)
		s.Close() // twice is fine
		require.ErrorContains(t, s.Drain(context.Background()), "Drain after Close")
	})
}

// TestSinkCallerBugsPanic: more undelivered messages than max is the
// receiver's bug; the place of a message is free again before its done.
func TestSinkCallerBugsPanic(t *testing.T) {
	require.Panics(t, func() { New(&fakeWriter{}, 0, 1, testutil.Logger{}) })
	require.Panics(t, func() { New(&fakeWriter{}, 1, 0, testutil.Logger{}) })

	w := &fakeWriter{gate: make(chan struct{})}
	s := newTestSink(t, w, 1, 1)
	first := deliver(t, s, group(1))
	require.PanicsWithValue(t, "sink: more messages undelivered than max", func() { deliver(t, s, group(2)) })
	close(w.gate)
	first.requireOutcome(t, receiver.Delivered())
	// done is called with the place free: a receiver may deliver again from
	// inside done.
	again := make(outcomeCh, 2)
	fourth := make(chan outcomeCh, 1)
	s.Deliver(receiver.Peer{}, group(3), func(o receiver.Outcome) {
		again <- o
		fourth <- deliver(t, s, group(4)) // would panic if the place were still taken
	})
	again.requireOutcome(t, receiver.Delivered())
	(<-fourth).requireOutcome(t, receiver.Delivered())
}
