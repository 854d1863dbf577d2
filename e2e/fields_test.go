package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The end-to-end tests of docs/SECURITY.md W12 and W13: what a device can
// put in its points that InfluxDB, or an InfluxQL query, would take for
// something else.

// TestProvenanceThroughFields (W12): an attacker with a valid credential
// (site=plant-9) writes fields named ockam_identity and site, with the
// victim's identifier and site, next to a victim (site=plant-7) writing
// usage. InfluxQL resolves a name that is both a tag and a field to the
// field, so before the fix `SELECT usage FROM cpu WHERE
// ockam_identity='I<victim>'` also returned the attacker's points. Through
// the gateway Telegraf and through ockamd, the queries return exactly the
// victim's points, and the attacker's device logs the permanent refusal.
func TestProvenanceThroughFields(t *testing.T) {
	for _, receiver := range []string{"gateway Telegraf", "ockamd"} {
		t.Run(receiver, func(t *testing.T) {
			f := newOckamdFleet(t) // influxd, the authority, the gateway's identity
			victim := f.device("victim", "site=plant-7")
			attacker := f.device("attacker", "site=plant-9")
			var l *listener
			if receiver == "ockamd" {
				l = f.start(`["cpu"]`, `  bucket = "db/autogen"`).listener
			} else {
				l = startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["cpu"]`, "")
			}
			const n = 40
			start := time.Now().Truncate(time.Second).Add(-time.Hour)
			var mine, forged []string
			for i := range n {
				at := start.Add(time.Duration(i) * time.Second).UnixNano()
				mine = append(mine, fmt.Sprintf("cpu,src=e2e usage=%d %d", i, at))
				forged = append(forged, fmt.Sprintf(`cpu,src=e2e ockam_identity=%q,site="plant-7",usage=99 %d`, victim.id, at+1))
			}
			startDevice(t, f.bin.telegraf, victim, f.authority, l, "500ms", execLines(t, mine, 4))
			bad := startDevice(t, f.bin.telegraf, attacker, f.authority, l, "500ms", execLines(t, forged, 4))

			refused := regexp.MustCompile(`E! \[outputs\.ockam\] Listener I[0-9a-f]+… refused (\d+) metrics permanently, ` +
				`they will be dropped: "field \\"(?:ockam_identity|site)\\" on measurement \\"cpu\\" has the name of a tag the listener sets`)
			eventually(t, 90*time.Second, "the victim's points stored, the attacker's refused", func() (bool, string) {
				k := sumCounts(refused, bad.text())
				return len(f.db.rows("cpu")) >= n && k >= n, fmt.Sprintf("%d rows, %d refused", len(f.db.rows("cpu")), k)
			})
			require.Equal(t, n, sumCounts(refused, bad.text()), "each forged point refused once: no retry")
			require.Zero(t, bad.count(regexp.MustCompile(`Error writing to outputs\.ockam`)), "the attacker was never told to retry")
			want := make([][]any, n)
			for i := range n {
				want[i] = []any{start.Add(time.Duration(i) * time.Second).UTC().Format(time.RFC3339), float64(i)}
			}
			for _, where := range []string{fmt.Sprintf("ockam_identity='%s'", victim.id), "site='plant-7'"} {
				got := influxQL(t, f.db, "SELECT usage FROM cpu WHERE "+where)
				require.Equal(t, want, got, "SELECT usage FROM cpu WHERE %s", where)
			}
			fields := influxQL(t, f.db, "SHOW FIELD KEYS FROM cpu")
			require.Equal(t, [][]any{{"usage", "float"}}, fields, "no field ockam_identity or site in InfluxDB")
			t.Logf("figures (%s): %d victim points stored and returned by both queries; %d forged points refused "+
				"permanently; the attacker's log says:\n  %s", receiver, n, n, refused.FindString(bad.text()))
		})
	}
}

// TestPoisonPointsThroughGateway (W13): device A writes, among good
// points, a point influxd refuses for good because of its shape (a tag
// named time), then one it refuses because of the stored data (a field
// type conflict), while device B writes good points every 500 ms to the
// same gateway Telegraf (inputs.ockam_listener → outputs.influxdb_v2 →
// influxd 1.8). Before the fix, each gateway batch holding a poison point
// was dropped whole and every message in it nacked "not delivered": A
// retried its poison forever and B was told to retry data InfluxDB had
// stored. Now the first poison is refused at once (before delivery, with
// InfluxDB's words), the second once an output refused it twice, B sees no
// refusal and no retry and every one of its points is stored once, and A's
// later points flow.
func TestPoisonPointsThroughGateway(t *testing.T) {
	f := newOckamdFleet(t)
	a := f.device("poisoner", "site=plant-9")
	b := f.device("bystander", "site=plant-7")
	const n = 60
	start := time.Now().Truncate(time.Second).Add(-time.Hour)
	at := func(i int) int64 { return start.Add(time.Duration(i) * time.Second).UnixNano() }
	// The seed fixes the type of e2e_conflict's value in the shard A writes to.
	resp, err := http.Post(f.db.url()+"/write?db="+database, "text/plain",
		strings.NewReader(fmt.Sprintf("e2e_conflict,src=seed value=\"a string\" %d\n", at(0))))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)

	var aLines, bLines []string
	for i := range n {
		switch i {
		case 5:
			aLines = append(aLines, fmt.Sprintf("e2e_bad,time=x value=1 %d", at(i)))
		case 20:
			aLines = append(aLines, fmt.Sprintf("e2e_conflict value=1 %d", at(i)))
		default:
			aLines = append(aLines, fmt.Sprintf("e2e_a seq=%di %d", i, at(i)))
		}
		bLines = append(bLines, fmt.Sprintf("e2e_b seq=%di %d", i, at(i)))
	}
	l := startListener(t, f.bin.telegraf, f.gateway, f.authority, f.db, `["e2e_*"]`, "")
	devA := startDevice(t, f.bin.telegraf, a, f.authority, l, "500ms", execLines(t, aLines, 2))
	devB := startDevice(t, f.bin.telegraf, b, f.authority, l, "500ms", execLines(t, bLines, 2))

	refusal := regexp.MustCompile(`E! \[outputs\.ockam\] Listener I[0-9a-f]+… refused (\d+) metrics permanently, they will be dropped: "(.*)"`)
	timeTag := `invalid tag key: input tag \"time\" on measurement \"e2e_bad\" is invalid`
	byOutput := `refused for good by an output of the gateway`
	reasons := func() []string {
		var out []string
		for _, m := range refusal.FindAllStringSubmatch(devA.text(), -1) {
			out = append(out, m[2])
		}
		return out
	}
	lastA := func() bool { return slices.Contains(f.db.seqsOf("e2e_a", a.id), int64(n-1)) }
	eventually(t, 120*time.Second, "both streams, and both poison points refused", func() (bool, string) {
		r := reasons()
		return len(f.db.seqsOf("e2e_b", b.id)) >= n && lastA() && len(r) >= 2, fmt.Sprintf("refusals %q", r)
	})
	r := reasons()
	require.Len(t, r, 2, "each poison refused once: %q", r)
	require.Contains(t, r[0], timeTag)
	require.Contains(t, r[1], byOutput)
	require.Zero(t, devA.count(regexp.MustCompile(`Error writing to outputs\.ockam`)), "A was never told to retry")

	// B: every point stored once, no refusal, no retry.
	wantB := make([]int64, n)
	for i := range wantB {
		wantB[i] = int64(i)
	}
	require.Equal(t, wantB, f.db.seqsOf("e2e_b", b.id))
	require.Zero(t, devB.count(regexp.MustCompile(`permanently|Error writing|asked to retry`)), "B saw no refusal and no retry")
	// A: its points after the second poison's message all stored.
	stored := f.db.seqsOf("e2e_a", a.id)
	for i := 30; i < n; i++ {
		require.Contains(t, stored, int64(i), "A's later point %d", i)
	}
	require.Empty(t, f.db.rows("e2e_bad"))
	require.Len(t, f.db.rows("e2e_conflict"), 1, "the seed only")
	t.Logf("figures: B %d/%d points stored once; A %d of its %d good points stored (those packed with a poison "+
		"point are refused with it); A's refusals:\n  %s\n  %s", len(f.db.seqsOf("e2e_b", b.id)), n, len(stored), n-2, r[0], r[1])
}

// sumCounts adds up the first group, a count, of every match of re in text.
func sumCounts(re *regexp.Regexp, text string) int {
	total := 0
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		k, _ := strconv.Atoi(m[1])
		total += k
	}
	return total
}

// seqsOf returns the integer field seq of measurement's points whose
// ockam_identity is id, sorted (a point stored twice counts once: same
// series and time).
func (db *influxDB) seqsOf(measurement, id string) []int64 {
	var out []int64
	for seq := range db.seqs(measurement)[id] {
		out = append(out, seq)
	}
	slices.Sort(out)
	return out
}

// influxQL runs an InfluxQL query on the database and returns the values
// of its first series (none: nil).
func influxQL(t *testing.T, db *influxDB, q string) [][]any {
	t.Helper()
	series := influxQLSeries(t, db, q)
	if len(series) == 0 {
		return nil
	}
	return series[0].Values
}
