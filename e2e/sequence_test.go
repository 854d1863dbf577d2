package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// point is one metric a device sends: a measurement with tags, an integer
// field seq and a float field value, at a time of its own.
type point struct {
	measurement string
	tags        map[string]string
	seq         int64
	time        time.Time
}

// sequence returns n points of measurement, tagged src=e2e, one second
// apart and ending an hour ago: whole seconds survive Telegraf's rounding
// of gathered timestamps to the collection interval.
func sequence(measurement string, n int) []point {
	start := time.Now().Truncate(time.Second).Add(-time.Hour - time.Duration(n)*time.Second)
	pts := make([]point, n)
	for i := range pts {
		pts[i] = point{
			measurement: measurement,
			tags:        map[string]string{"src": "e2e"},
			seq:         int64(i),
			time:        start.Add(time.Duration(i) * time.Second),
		}
	}
	return pts
}

// value is the float field of the point seq.
func value(seq int64) float64 { return float64(seq) / 4 }

// line formats p as line protocol with the tags t.
func (p point) line(t map[string]string) string {
	var b strings.Builder
	b.WriteString(p.measurement)
	for _, k := range slices.Sorted(maps.Keys(t)) {
		fmt.Fprintf(&b, ",%s=%s", k, t[k])
	}
	fmt.Fprintf(&b, " seq=%di,value=%s %d", p.seq, strconv.FormatFloat(value(p.seq), 'g', -1, 64), p.time.UnixNano())
	return b.String()
}

// sent is p as the device sends it.
func (p point) sent() string { return p.line(p.tags) }

// stored is p as InfluxDB must hold it once the listener stamped it with
// the identifier id and the site attribute: whatever the device put in
// those tags is overwritten, and a site tag is removed when site is ""
// (a credential without that attribute).
func (p point) stored(id, site string) string {
	t := maps.Clone(p.tags)
	t["ockam_identity"] = id
	t["site"] = site
	if site == "" {
		delete(t, "site")
	}
	return p.line(t)
}

// storedAll is stored for every point, sorted like influxDB.rows.
func storedAll(pts []point, id, site string) []string {
	out := make([]string, len(pts))
	for i, p := range pts {
		out[i] = p.stored(id, site)
	}
	sort.Strings(out)
	return out
}

// execScript prints the next K lines of a file at each run, remembering
// where it stopped in a state file, and nothing once the file is exhausted.
const execScript = `#!/bin/sh
# usage: next.sh DATA STATE K
set -e
pos=$(cat "$2" 2>/dev/null || echo 0)
tail -n "+$((pos + 1))" "$1" | head -n "$3"
echo $((pos + $3)) >"$2"
`

// execInputs writes pts to a file and returns an [[inputs.exec]] section
// that hands the device perRun of them at each collection interval, each
// point exactly once: a steady, finite stream.
func execInputs(t *testing.T, pts []point, perRun int) string {
	t.Helper()
	lines := make([]string, len(pts))
	for i, p := range pts {
		lines[i] = p.sent()
	}
	return execLines(t, lines, perRun)
}

// execLines is execInputs of lines of line protocol.
func execLines(t *testing.T, lines []string, perRun int) string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "next.sh")
	data := filepath.Join(dir, "points.lp")
	if err := os.WriteFile(script, []byte(execScript), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(data, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`[[inputs.exec]]
  commands = [["/bin/sh", %q, %q, %q, "%d"]]
  timeout = "5s"
  data_format = "influx"`, script, data, filepath.Join(dir, "position"), perRun)
}
