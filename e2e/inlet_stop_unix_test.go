//go:build unix

package e2e

import (
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestInletStopFinishesWrites stops the inlet with SIGTERM while a write
// waits for the listener's ack (the gateway is frozen with SIGSTOP): the
// inlet answers it, 204 once the gateway resumed and acked, then exits.
func TestInletStopFinishesWrites(t *testing.T) {
	f := newInletFleet(t)
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	in := startInlet(t, f.bin.ockam, f.device, f.authority, l)
	in.proc.waitLog(regexp.MustCompile(`Channel open to listener`), 30*time.Second)

	require.NoError(t, l.proc.cmd.Process.Signal(syscall.SIGSTOP))
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			require.NoError(t, l.proc.cmd.Process.Signal(syscall.SIGCONT))
		}
	}
	defer resume()
	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, in.url+"/write?db="+inletDatabase+"&precision=s",
			strings.NewReader("e2e_stop seq=1i 1700000000\n"))
		req.Header.Set("Authorization", "Token "+inletToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	// The write reached the inlet, which sent it and waits for the frozen gateway.
	eventually(t, 30*time.Second, "the write in flight", func() (bool, string) {
		return in.counter(t, "ockam.messages_sent") == 1, ""
	})
	require.NoError(t, in.proc.cmd.Process.Signal(syscall.SIGTERM))
	in.proc.waitLog(regexp.MustCompile(`Stopping: no new writes; waiting for those in flight`), 30*time.Second)
	time.Sleep(time.Second)
	require.False(t, in.proc.exited(), "the inlet waits for the write in flight")
	resume()
	select {
	case got := <-status:
		require.Equal(t, http.StatusNoContent, got)
	case <-time.After(20 * time.Second):
		t.Fatal("no answer to the write in flight")
	}
	select {
	case <-in.proc.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the inlet did not exit after answering")
	}
	require.NoError(t, in.proc.err, "exit status after SIGTERM")
	require.Len(t, f.db.rowsIn(inletBucket, "e2e_stop"), 1)
	log := in.proc.text()
	require.Less(t, strings.Index(log, "Stopping:"), strings.Index(log, "points acknowledged"),
		"the write was answered after SIGTERM")
}
