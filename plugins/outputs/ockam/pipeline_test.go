package ockam

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
)

// The tests in this file run the real inputs.ockam_listener in this process,
// with an accumulator whose metrics are delivered as soon as they arrive (as
// Telegraf's outputs would), and send to it with outputs.ockam.

var pipelines atomic.Int64

// realListener is an inputs.ockam_listener serving on addr.
type realListener struct {
	*ockam_listener.Listener
	acc *testutil.Accumulator
	log *testutil.CaptureLogger

	done     chan struct{}
	accepter sync.WaitGroup
	stopped  bool
}

// startRealListener starts a listener on addr with the given vault,
// credential and trusted authorities. Its channels close after idle of
// inactivity, so that the next write opens a new one. It stops when the
// test ends, if not before.
func startRealListener(t *testing.T, addr, vaultPath, credPath string, idle time.Duration, authorities ...string) *realListener {
	t.Helper()
	return startListenerAt(t, func(l *ockam_listener.Listener) { l.ServiceAddress = "tcp://" + addr },
		vaultPath, credPath, idle, authorities...)
}

// startListenerAt is startRealListener where where sets what the listener
// listens on (service_address, relay_address and relay_name).
func startListenerAt(t *testing.T, where func(*ockam_listener.Listener), vaultPath, credPath string, idle time.Duration,
	authorities ...string) *realListener {
	t.Helper()
	l := inputs.Inputs["ockam_listener"]().(*ockam_listener.Listener)
	where(l)
	l.VaultPath, l.CredentialPath, l.AuthorityPaths = vaultPath, credPath, authorities
	l.RevocationCheckInterval = config.Duration(20 * time.Millisecond)
	l.ReadTimeout = config.Duration(idle)
	r := &realListener{Listener: l, acc: &testutil.Accumulator{}, log: &testutil.CaptureLogger{Name: "ockam_listener"},
		done: make(chan struct{})}
	l.Log = r.log
	l.Statistics = selfstat.NewCollector(map[string]string{"pipeline": fmt.Sprint(pipelines.Add(1))})
	require.NoError(t, l.Init())
	require.NoError(t, l.Start(r.acc))
	r.accepter.Add(1)
	go r.deliver()
	t.Cleanup(r.stop)
	return r
}

// deliver marks every metric the listener emits as delivered.
func (r *realListener) deliver() {
	defer r.accepter.Done()
	accepted := 0
	for {
		ms := r.acc.GetTelegrafMetrics()
		for _, m := range ms[accepted:] {
			m.Accept()
		}
		accepted = len(ms)
		select {
		case <-r.done:
			return
		case <-time.After(time.Millisecond):
		}
	}
}

// stop stops the listener, as Telegraf does at a restart.
func (r *realListener) stop() {
	if r.stopped {
		return
	}
	r.stopped = true
	close(r.done)
	r.accepter.Wait()
	r.Stop()
}

// seqs returns "tag=seq" (seq in 5 digits) for every metric the listener emitted, sorted,
// with its value of tag (the verified identity, say).
func (r *realListener) seqs(tag string) []string {
	var got []string
	for _, m := range r.acc.GetTelegrafMetrics() {
		v, _ := m.GetTag(tag)
		seq, _ := m.GetField("seq")
		got = append(got, fmt.Sprintf("%s=%05d", v, seq))
	}
	slices.Sort(got)
	return got
}

// newPipelineOutput returns a connected outputs.ockam for the vault and
// credential, trusting authorities, sending to addr. It closes when the test
// ends, if not before.
func newPipelineOutput(t *testing.T, addr, vaultPath, credPath string, authorities ...string) *Output {
	t.Helper()
	o := outputs.Outputs["ockam"]().(*Output)
	o.Address = "tcp://" + addr
	o.VaultPath, o.CredentialPath = vaultPath, credPath
	o.AuthorityPath, o.AuthorityPaths = authorities[0], authorities[1:]
	// Long enough that no answer and no handshake runs out of time on a
	// loaded machine: a timeout would end the channel and count a reconnect.
	o.Timeout = config.Duration(30 * time.Second)
	o.Log = &testutil.CaptureLogger{Name: "outputs.ockam"}
	o.Statistics = selfstat.NewCollector(map[string]string{"pipeline": fmt.Sprint(pipelines.Add(1))})
	require.NoError(t, o.Init())
	require.NoError(t, o.Connect())
	t.Cleanup(func() { o.Close() })
	return o
}

// sequence returns the metrics seq from, from+1, ..., from+n-1.
func sequence(from, n int) []telegraf.Metric {
	ms := make([]telegraf.Metric, n)
	for i := range ms {
		ms[i] = metric.New("rotation", map[string]string{}, map[string]any{"seq": int64(from + i)},
			time.Unix(1700000000, int64(from+i)))
	}
	return ms
}

// writeAll writes ms as Telegraf does: a failed write is retried with the
// same batch until it succeeds. It returns how many writes failed.
func writeAll(t *testing.T, o *Output, ms []telegraf.Metric) int {
	t.Helper()
	failed := 0
	for deadline := time.Now().Add(60 * time.Second); ; failed++ {
		err := o.Write(ms)
		if err == nil {
			return failed
		}
		if time.Now().After(deadline) {
			t.Fatalf("write still failing after %d attempts: %v", failed+1, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requireWriteFails expects every write of ms within a second to fail.
func requireWriteFails(t *testing.T, o *Output, ms []telegraf.Metric) error {
	t.Helper()
	var err error
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		err = o.Write(ms)
		require.Error(t, err)
	}
	return err
}

// waitChannelEnd waits until o has no open channel (the listener closed the
// idle one).
func waitChannelEnd(t *testing.T, o *Output) {
	t.Helper()
	require.Eventually(t, func() bool { return o.sender.Status().Channel == 0 }, 30*time.Second, 5*time.Millisecond)
}

// currentLink returns the number of o's channel now (0 when it has none).
func currentLink(o *Output) uint64 { return o.sender.Status().Channel }

// want returns "id=seq" (as seqs formats it) for seq from, ..., from+n-1.
func want(id string, from, n int) []string {
	w := make([]string, n)
	for i := range w {
		w[i] = fmt.Sprintf("%s=%05d", id, from+i)
	}
	return w
}

// logged returns the messages of log, a *testutil.CaptureLogger, at any
// level, that contain every part.
func logged(log telegraf.Logger, parts ...string) []string {
	var found []string
next:
	for _, e := range log.(*testutil.CaptureLogger).Messages() {
		for _, p := range parts {
			if !strings.Contains(e.Text, p) {
				continue next
			}
		}
		found = append(found, e.Text)
	}
	return found
}
