package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api/query"
)

// database and bucket are where the listener writes: InfluxDB 1.8 maps the
// v2 bucket "db/autogen" to database db, retention policy autogen.
const (
	database = "db"
	bucket   = database + "/autogen"
)

// listeningHTTP is the line influxd 1.8 logs once its HTTP API is bound.
var listeningHTTP = regexp.MustCompile(`msg="Listening on HTTP".* addr=(\S+)`)

// influxDB is an influxd 1.8 with its data in a temporary directory. It can
// be stopped and started again on the same data and port.
type influxDB struct {
	t      *testing.T
	bin    string
	dir    string
	addr   string // host:port of the HTTP API, once started
	proc   *process
	starts int
	client influxdb2.Client
}

// startInfluxDB starts influxd on a free loopback port and creates the
// database.
func startInfluxDB(t *testing.T, bin string) *influxDB {
	t.Helper()
	db := &influxDB{t: t, bin: bin, dir: t.TempDir()}
	db.start("127.0.0.1:0")
	db.client = influxdb2.NewClient(db.url(), "")
	t.Cleanup(db.client.Close)
	return db
}

// url is the base URL of the HTTP API.
func (db *influxDB) url() string { return "http://" + db.addr }

// start runs influxd bound to bind, waits until /ping answers and creates
// the database (a no-op if it exists).
func (db *influxDB) start(bind string) {
	t := db.t
	t.Helper()
	db.starts++
	conf := filepath.Join(db.dir, fmt.Sprintf("influxdb-%d.conf", db.starts))
	renderTemplate(t, "influxdb.conf.tmpl", conf, map[string]string{"Dir": db.dir, "HTTPBind": bind})
	db.proc = startProcess(t, fmt.Sprintf("influxd-%d", db.starts), db.bin, "-config", conf)
	// Flux's standard library takes ~5 s of CPU to initialise before the bind.
	db.addr = db.proc.waitLog(listeningHTTP, 3*time.Minute)[1]
	eventually(t, 30*time.Second, "influxd /ping", func() (bool, string) {
		resp, err := http.Get(db.url() + "/ping")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNoContent, resp.Status
	})
	resp, err := http.PostForm(db.url()+"/query", url.Values{"q": {"CREATE DATABASE " + database}})
	if err != nil {
		t.Fatalf("create database: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create database: %s", resp.Status)
	}
}

// stop stops influxd with SIGTERM.
func (db *influxDB) stop() { db.proc.stop() }

// restart starts a stopped influxd again, on the same data and port.
func (db *influxDB) restart() { db.start(db.addr) }

// rows returns the points of the measurements, one string each in
// line-protocol order (tags sorted, fields sorted, then the time in ns),
// sorted. Tags are the string columns, fields the numeric ones (integers get
// an "i").
func (db *influxDB) rows(measurements ...string) []string { return db.rowsIn(bucket, measurements...) }

// rowsIn is rows in another bucket ("db/rp").
func (db *influxDB) rowsIn(bucket string, measurements ...string) []string {
	match := make([]string, len(measurements))
	for i, m := range measurements {
		match[i] = fmt.Sprintf("r._measurement == %q", m)
	}
	flux := fmt.Sprintf(`from(bucket: %q)
  |> range(start: 0)
  |> filter(fn: (r) => %s)
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")`, bucket, strings.Join(match, " or "))
	var out []string
	db.query(flux, func(r *query.FluxRecord) { out = append(out, lineOf(r)) })
	sort.Strings(out)
	return out
}

// lineOf formats a pivoted record as a line of line protocol.
func lineOf(r *query.FluxRecord) string {
	var tags, fields []string
	for k, v := range r.Values() {
		if strings.HasPrefix(k, "_") || k == "result" || k == "table" {
			continue
		}
		switch v := v.(type) {
		case string:
			tags = append(tags, k+"="+v)
		case int64:
			fields = append(fields, k+"="+strconv.FormatInt(v, 10)+"i")
		case float64:
			fields = append(fields, k+"="+strconv.FormatFloat(v, 'g', -1, 64))
		case nil:
		default:
			fields = append(fields, fmt.Sprintf("%s=%v", k, v))
		}
	}
	sort.Strings(tags)
	sort.Strings(fields)
	head := r.Measurement()
	if len(tags) > 0 {
		head += "," + strings.Join(tags, ",")
	}
	return fmt.Sprintf("%s %s %d", head, strings.Join(fields, ","), r.Time().UnixNano())
}

// seqs returns, for each value of the ockam_identity tag, the set of the
// integer field seq of measurement.
func (db *influxDB) seqs(measurement string) map[string]map[int64]bool {
	flux := fmt.Sprintf(`from(bucket: %q)
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == %q and r._field == "seq")
  |> keep(columns: ["_time", "_value", "ockam_identity"])`, bucket, measurement)
	out := map[string]map[int64]bool{}
	db.query(flux, func(r *query.FluxRecord) {
		id, _ := r.ValueByKey("ockam_identity").(string)
		if out[id] == nil {
			out[id] = map[int64]bool{}
		}
		seq, ok := r.Value().(int64)
		if !ok {
			db.t.Fatalf("seq of %s is %T, not an integer", id, r.Value())
		}
		out[id][seq] = true
	})
	return out
}

// query runs a Flux query and calls each for every record. A failed query is
// tried twice more (a restarted influxd leaves stale pooled connections
// behind), then fails t.
func (db *influxDB) query(flux string, each func(*query.FluxRecord)) {
	db.t.Helper()
	var err error
	for range 3 {
		var records []*query.FluxRecord
		if records, err = db.tryQuery(flux); err == nil {
			for _, r := range records {
				each(r)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	db.t.Fatalf("flux query: %v\n%s", err, flux)
}

// tryQuery runs a Flux query and returns its records.
func (db *influxDB) tryQuery(flux string) ([]*query.FluxRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := db.client.QueryAPI("").Query(ctx, flux)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []*query.FluxRecord
	for res.Next() {
		out = append(out, res.Record())
	}
	return out, res.Err()
}
