package receiver

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSizeEstimate checks the weights of SizeEstimate against the heap
// that Telegraf's parser takes for 1 MiB of several kinds of line
// protocol, plus the tags the listener stamps: the estimate is never
// below what the metrics hold.
func TestSizeEstimate(t *testing.T) {
	stamped := map[string]string{"ockam_identity": "I" + strings.Repeat("ab", 32), "site": "plant-7"}
	for _, line := range []string{
		"m v=1\n",
		"m,host=a v=1 1700000000000000000\n",
		"cpu,host=server01,region=uswest,cpu=cpu-total usage_idle=99.1,usage_user=0.5,usage_system=0.4,usage_iowait=0i 1700000000000000000\n",
		`m,a=b s="` + strings.Repeat("x", 1000) + `" 1` + "\n",
		`m s="` + strings.Repeat("x", 60000) + `" 1` + "\n",
	} {
		payload := []byte(strings.Repeat(line, (1<<20)/len(line)))
		parser, err := newParser()
		require.NoError(t, err)
		before := heapInUse()
		metrics, err := parser.Parse(payload)
		require.NoError(t, err)
		stamp(metrics, stamped)
		held := int64(heapInUse()) - int64(before)
		runtime.KeepAlive(metrics)
		runtime.KeepAlive(payload)
		est := SizeEstimate(payload, len(stamped))
		t.Logf("%.40q: %d metrics, heap %d, estimate %d (%.2f×)", line, len(metrics), held, est, float64(est)/float64(held))
		require.GreaterOrEqual(t, est, held, fmt.Sprintf("%.40q", line))
	}
}

// heapInUse returns the bytes of live heap objects after two collections.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
