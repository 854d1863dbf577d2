package inlet

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestThroughChannel runs writes through a real outputs.ockam sender and a
// secure channel to a listener that answers as each case says.
func TestThroughChannel(t *testing.T) {
	f := newChannelFixture(t, true)
	stats := newCollector(t)
	h, err := New(Config{Sender: f.sender(t, stats), Log: testutil.Logger{Quiet: true}, Statistics: stats})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(target, body string) (int, map[string]string) {
		t.Helper()
		resp, err := http.Post(srv.URL+target, "text/plain", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]string
		if resp.StatusCode != http.StatusNoContent {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
			if resp.StatusCode == http.StatusServiceUnavailable {
				require.Equal(t, "1", resp.Header.Get("Retry-After"))
			}
		}
		return resp.StatusCode, m
	}

	// Acked: the listener got the lines, timestamps in ns, bucket tagged.
	status, _ := post("/api/v2/write?bucket=db/rp&precision=ms", "cpu,host=a v=1 1700000000123\ncpu,host=b v=2 1700000000124\n")
	require.Equal(t, http.StatusNoContent, status)
	require.Equal(t, []string{
		"cpu,_ockam_bucket=db/rp,host=a v=1 1700000000123000000",
		"cpu,_ockam_bucket=db/rp,host=b v=2 1700000000124000000",
	}, strings.Split(strings.TrimSuffix(string(f.received()[0]), "\n"), "\n"), "one message")

	// A permanent nack: 400 with the listener's reason.
	f.setAnswer(func(m secure.Message) secure.Message {
		return secure.Message{Type: secure.TypeNack, Batch: m.Batch, Permanent: true, Reason: "revoked"}
	})
	status, body := post("/write?db=db&precision=s", "cpu v=1 1700000000\n")
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, `1 of 1 points refused, dropped: listener: "revoked"`, body["error"])

	// A transient nack: 503, the client retries.
	f.setAnswer(func(m secure.Message) secure.Message {
		return secure.Message{Type: secure.TypeNack, Batch: m.Batch, Reason: "not delivered"}
	})
	status, body = post("/api/v2/write?bucket=b", "cpu v=1\n")
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Equal(t, "unavailable", body["code"])
	require.Contains(t, body["message"], `"not delivered"`)

	// No listener: 503 without waiting for the timeout.
	f.stop()
	require.Eventually(t, func() bool { _, err := h.sender.Peer(); return err != nil }, senderTimeout, time.Millisecond)
	start := time.Now()
	status, body = post("/api/v2/write?bucket=b", "cpu v=1\n")
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, body["message"], "not delivered, retry later")
	require.Less(t, time.Since(start), senderTimeout, "without waiting for the timeout")

	counters := h.Counters()
	require.Equal(t, int64(1), counters["ockam_inlet.writes_acked"])
	require.Equal(t, int64(1), counters["ockam_inlet.writes_refused"])
	require.Equal(t, int64(2), counters["ockam_inlet.writes_unavailable"])
	require.Equal(t, int64(2), counters["ockam_inlet.metrics_acked"])
	require.Equal(t, int64(1), counters["ockam_inlet.metrics_refused"])
	require.Equal(t, int64(3), counters["ockam.messages_sent"])
	require.Equal(t, int64(1), counters["ockam.acks"])
	require.Equal(t, int64(1), counters["ockam.nacks_permanent"])
	require.Equal(t, int64(1), counters["ockam.nacks_transient"])
}

// TestThroughChannelConcurrent posts from several clients at once: every
// write is acked, and every line arrives once, intact.
func TestThroughChannelConcurrent(t *testing.T) {
	f := newChannelFixture(t, true)
	h, err := New(Config{Sender: f.sender(t, nil), Log: testutil.Logger{Quiet: true}})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	const clients, writes, lines = 12, 5, 40
	var want []string
	bodies := make([][]string, clients)
	for c := range clients {
		for w := range writes {
			var b strings.Builder
			for i := range lines {
				line := fmt.Sprintf("m,_ockam_bucket=b,client=c%d,write=w%d v=%di %d", c, w, i, 1700000000000000000+i)
				want = append(want, line)
				b.WriteString(strings.Replace(line, "_ockam_bucket=b,", "", 1) + "\n")
			}
			bodies[c] = append(bodies[c], b.String())
		}
	}
	var wg sync.WaitGroup
	statuses := make(chan int, clients*writes)
	for c := range clients {
		wg.Go(func() {
			for _, body := range bodies[c] {
				resp, err := http.Post(srv.URL+"/api/v2/write?bucket=b", "text/plain", strings.NewReader(body))
				if err != nil {
					statuses <- 0
					continue
				}
				resp.Body.Close()
				statuses <- resp.StatusCode
			}
		})
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		require.Equal(t, http.StatusNoContent, s)
	}
	var got []string
	for _, p := range f.received() {
		got = append(got, strings.Split(strings.TrimSuffix(string(p), "\n"), "\n")...)
	}
	sort.Strings(want)
	sort.Strings(got)
	require.Equal(t, want, got)
}
