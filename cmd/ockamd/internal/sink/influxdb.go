package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	http2 "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
	"github.com/influxdata/telegraf/selfstat"
)

// WriterConfig is what a Writer needs: the [influxdb] settings of ockamd.
type WriterConfig struct {
	URL    string        // base URL of InfluxDB, http:// or https://
	Token  config.Secret // API token; InfluxDB 1.x: "user:password", or empty without auth
	Org    string        // InfluxDB 2.x organization; ignored by 1.x
	Bucket string        // InfluxDB 2.x bucket, or 1.x "database" or "database/retention-policy"
	// BucketAttribute routes each sender to a bucket of its own by this tag
	// (a credential attribute the listener stamps); BucketTemplate names that
	// bucket, with {{<BucketAttribute>}} where the value goes.
	BucketAttribute string
	BucketTemplate  string
	// CreateDatabase: on "database not found" (InfluxDB 1.x), create the
	// database and write again.
	CreateDatabase bool
	Timeout        time.Duration // bounds each HTTP request
	// ParallelWrites is how many writes may run at once (ockamd's
	// max_parallel_writes): the Writer keeps as many idle connections to
	// InfluxDB open for the next ones.
	ParallelWrites int
	UintSupport    bool        // write unsigned integers as such (InfluxDB 2.x)
	TLS            *tls.Config // nil for the defaults
	Log            telegraf.Logger
	Statistics     *selfstat.Collector
}

// Writer writes groups of metrics (the messages of devices) to InfluxDB,
// one blocking write per bucket for the groups it is given together, and
// maps the answer to an Outcome:
//
//	2xx                                  delivered
//	400 and other 4xx (bad points,       permanent, with InfluxDB's message
//	    field type conflict, partial
//	    write, 413 too large)
//	401, 403                             transient, and an error log naming the token
//	404 (database or bucket not found)   transient, and an error log; with
//	                                     CreateDatabase, the database is created
//	                                     (InfluxDB 1.x) and the write tried once more
//	408, 429, 5xx, no connection,        transient
//	    no answer within Timeout
//
// A partial write (400) stored the good points of the group; the sender drops
// the group, and those points stay. Writes may run concurrently.
type Writer struct {
	client    influxdb2.Client
	transport *http.Transport
	url       string
	org       string
	route     route
	create    bool
	timeout   time.Duration
	uint      bool
	log       telegraf.Logger
	stats     *stats

	alarms rateLimits
	mu     sync.Mutex
	status Status
}

var _ GroupWriter = (*Writer)(nil)

// Status is what the writes did lately, for a health check.
type Status struct {
	LastSuccess time.Time // of the last delivered write
	LastFailure time.Time // of the last write that failed (not refused)
	// Failing is the reason of the last failed write, as long as no write
	// succeeded since: InfluxDB is down, or refuses the token, or lacks the
	// database.
	Failing string
}

// alarmPeriod: each kind of failure is logged at most this often.
const alarmPeriod = time.Minute

// NewWriter checks cfg and returns a Writer. It does not connect.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return nil, errors.New("url is required")
	case err != nil:
		return nil, fmt.Errorf("url %q: %w", cfg.URL, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.User != nil, u.RawQuery != "", u.Fragment != "":
		return nil, fmt.Errorf("url %q: want http(s)://host:port[/path]", cfg.URL)
	case cfg.Bucket == "":
		return nil, errors.New("bucket is required")
	case cfg.Timeout <= 0:
		return nil, fmt.Errorf("timeout must be positive, got %v", cfg.Timeout)
	}
	r, err := newRoute(cfg.Bucket, cfg.BucketAttribute, cfg.BucketTemplate)
	if err != nil {
		return nil, err
	}
	token, err := cfg.Token.Get()
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	defer token.Destroy()

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = cfg.TLS
	// net/http keeps 2 idle connections per host by default: with more
	// writes at once, each round of writes closed the connections of all
	// but 2 and opened new ones (a TCP handshake, and a TLS one with
	// https, per write).
	transport.MaxIdleConnsPerHost = max(cfg.ParallelWrites, http.DefaultMaxIdleConnsPerHost)
	opts := influxdb2.DefaultOptions().
		SetHTTPClient(&http.Client{Transport: transport, Timeout: cfg.Timeout}).
		SetApplicationName("ockamd").
		SetPrecision(time.Nanosecond).
		SetLogLevel(0) // errors only: at info the client logs every request URL
	w := &Writer{
		client:    influxdb2.NewClientWithOptions(cfg.URL, token.String(), opts),
		transport: transport,
		url:       cfg.URL,
		org:       cfg.Org,
		route:     r,
		create:    cfg.CreateDatabase,
		timeout:   cfg.Timeout,
		uint:      cfg.UintSupport,
		log:       cfg.Log,
		stats:     newStats(cfg.Statistics),
	}
	return w, nil
}

// Ping checks that InfluxDB answers (/ping, in InfluxDB 1.x and 2.x).
func (w *Writer) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	_, err := w.client.Ping(ctx)
	return err
}

// Close releases the client's idle connections.
func (w *Writer) Close() {
	w.client.Close()
	w.transport.CloseIdleConnections()
}

// Status returns what the writes did lately.
func (w *Writer) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// WriteGroups writes groups, the metrics of one or more messages, together:
// one write per bucket. It returns each group's outcome, the same for all,
// unless InfluxDB refused the write for good: then each group is written
// again alone, so that only a group that holds a refused point is refused.
// (A partial write stored the other points already; InfluxDB keeps one
// point per series and time, so writing them again changes nothing.) A
// metric that cannot be written as line protocol is logged and skipped, as
// Telegraf's InfluxDB outputs do.
func (w *Writer) WriteGroups(ctx context.Context, groups [][]telegraf.Metric) []Outcome {
	out := make([]Outcome, len(groups))
	if len(groups) > 1 {
		f := w.write(ctx, slices.Concat(groups...), false)
		if !f.outcome.Permanent {
			for i := range out {
				out[i] = f.outcome
			}
			w.count(f, len(groups))
			return out
		}
		w.log.Debugf("InfluxDB refused the write of %d messages together for good (%v): writing each alone", len(groups), f.err)
	}
	for i, g := range groups {
		f := w.write(ctx, g, true)
		out[i] = f.outcome
		w.count(f, 1)
	}
	return out
}

// Write writes the metrics of one message: WriteGroups of one group.
func (w *Writer) Write(ctx context.Context, metrics []telegraf.Metric) Outcome {
	return w.WriteGroups(ctx, [][]telegraf.Metric{metrics})[0]
}

// count counts groups that one write ended with f.
func (w *Writer) count(f failure, groups int) {
	switch {
	case f.outcome.Delivered:
		w.stats.groupsWritten.Incr(int64(groups))
	case f.outcome.Permanent:
		w.stats.groupsRefused.Incr(int64(groups))
	default:
		w.stats.groupsFailed[f.kind].Incr(int64(groups))
	}
}

// write writes metrics, split by bucket, and returns how the first write
// that fails failed, or delivered. alone: metrics are one message's, and a
// refusal is that message's (logged); else a refusal is only logged at
// debug level, and each message written again.
func (w *Writer) write(ctx context.Context, metrics []telegraf.Metric, alone bool) failure {
	buckets, byBucket, err := w.route.split(metrics)
	if err != nil {
		if alone && w.alarms.allow("route", time.Now(), alarmPeriod) {
			w.log.Warnf("Refused %d metrics for good: %v; further refusals are logged at most once a minute", len(metrics), err)
		}
		return failure{Outcome{Permanent: true, Reason: err.Error()}, kindRefused, err}
	}
	for _, b := range buckets {
		if f := w.writeBucket(ctx, b, byBucket[b], alone); !f.outcome.Delivered {
			return f
		}
	}
	return failure{outcome: Outcome{Delivered: true}}
}

// writeBucket writes metrics to bucket, creating its database if allowed.
func (w *Writer) writeBucket(ctx context.Context, bucket string, metrics []telegraf.Metric, alone bool) failure {
	body, n := w.serialize(metrics)
	if n == 0 {
		return failure{outcome: Outcome{Delivered: true}}
	}
	start := time.Now()
	err := w.post(ctx, bucket, body)
	if w.create && isDatabaseNotFound(err) {
		if cerr := w.createDatabase(ctx, bucket); cerr != nil {
			// The write stays a 404; explain says to look here.
			if w.alarms.allow("create_database", time.Now(), alarmPeriod) {
				w.log.Errorf("create_database: %v", cerr)
			}
		} else {
			err = w.post(ctx, bucket, body)
		}
	}
	w.stats.writeTime.Incr(time.Since(start).Nanoseconds())
	w.stats.writes.Incr(1)
	f := classify(err, w.timeout)
	if f.kind == kindNotFound {
		f.outcome.Reason += notFoundFix(bucket, w.create)
	}
	w.record(bucket, n, f, alone)
	return f
}

// serialize returns metrics as line protocol, and how many it holds.
func (w *Writer) serialize(metrics []telegraf.Metric) ([]byte, int) {
	s := &influx.Serializer{UintSupport: w.uint}
	if err := s.Init(); err != nil {
		panic("sink: line protocol serializer: " + err.Error()) // default settings: cannot fail
	}
	// The lines are joined once their length is known: appending each to
	// a growing body copied the body over and over (a sixth of ockamd's CPU
	// with messages of 256 KiB).
	lines := make([][]byte, 0, len(metrics))
	for _, m := range metrics {
		line, err := s.Serialize(m)
		if err != nil {
			w.log.Debugf("Skipping a metric of %q that cannot be written as line protocol: %v", m.Name(), err)
			continue
		}
		lines = append(lines, line)
	}
	return bytes.Join(lines, nil), len(lines)
}

// post runs one blocking write within the timeout.
func (w *Writer) post(ctx context.Context, bucket string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	return w.client.WriteAPIBlocking(w.org, bucket).WriteRecord(ctx, string(body))
}

// notFoundFix is what the nack of a write to a missing database or bucket
// adds to InfluxDB's answer, for the device's log: which bucket, and the fix
// (on the gateway: the device can only wait).
func notFoundFix(bucket string, create bool) string {
	if create {
		return fmt.Sprintf(" (the gateway's InfluxDB has no database or bucket %q and create_database failed: "+
			"its operator must create it; see ockamd's log)", bucket)
	}
	return fmt.Sprintf(" (the gateway's InfluxDB has no database or bucket %q: its operator must create it, "+
		"or set create_database = true in ockamd's [influxdb] for InfluxDB 1.x)", bucket)
}

// isDatabaseNotFound reports whether err is InfluxDB 1.x's answer to a
// write to a database that does not exist.
func isDatabaseNotFound(err error) bool {
	var he *http2.Error
	return errors.As(err, &he) && he.StatusCode == http.StatusNotFound && strings.Contains(he.Message, "database not found")
}

// createDatabase runs CREATE DATABASE (InfluxDB 1.x) for the database of
// bucket ("db" or "db/rp"). It succeeds if the database exists.
func (w *Writer) createDatabase(ctx context.Context, bucket string) error {
	db, _, _ := strings.Cut(bucket, "/")
	q := url.Values{"q": {`CREATE DATABASE "` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(db) + `"`}}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	svc := w.client.HTTPService()
	var stmtErr error
	if herr := svc.DoPostRequest(ctx, svc.ServerURL()+"query", strings.NewReader(q.Encode()),
		func(req *http.Request) { req.Header.Set("Content-Type", "application/x-www-form-urlencoded") },
		func(resp *http.Response) error {
			defer resp.Body.Close()
			stmtErr = queryError(resp.Body)
			return nil
		}); herr != nil {
		return fmt.Errorf("create database %q: %w", db, herr)
	}
	if stmtErr != nil {
		return fmt.Errorf("create database %q: %w", db, stmtErr)
	}
	w.stats.databasesCreated.Incr(1)
	w.log.Infof("Created database %q (create_database = true)", db)
	return nil
}

// queryError returns the error an InfluxQL answer holds, if any: a 1.x
// /query answers 200 even when a statement failed.
func queryError(r io.Reader) error {
	var answer struct {
		Error   string `json:"error"`
		Results []struct {
			Error string `json:"error"`
		} `json:"results"`
	}
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(bytes.TrimSpace(b), &answer); err != nil {
		return fmt.Errorf("unexpected answer %q", truncate(string(b), 200))
	}
	if answer.Error != "" {
		return errors.New(answer.Error)
	}
	for _, r := range answer.Results {
		if r.Error != "" {
			return errors.New(r.Error)
		}
	}
	return nil
}

// record counts the metrics of a write, keeps the status and logs failures,
// each kind at most once per alarmPeriod (a refusal only when the write
// was one message's: alone).
func (w *Writer) record(bucket string, n int, f failure, alone bool) {
	now := time.Now()
	if f.outcome.Delivered {
		w.stats.metricsWritten.Incr(int64(n))
		w.mu.Lock()
		recovered := w.status.Failing != ""
		w.status.LastSuccess, w.status.Failing = now, ""
		w.mu.Unlock()
		if recovered {
			w.log.Infof("InfluxDB accepts writes again (bucket %q)", bucket)
		}
		return
	}
	if f.outcome.Permanent {
		if alone && w.alarms.allow(f.kind, now, alarmPeriod) {
			w.log.Warnf("InfluxDB refused %d metrics for bucket %q for good, the sender drops them: %v; "+
				"further refusals are logged at most once a minute", n, bucket, f.err)
		}
		return
	}
	if f.kind == kindCanceled {
		return // shutting down: nothing is wrong with InfluxDB
	}
	w.mu.Lock()
	w.status.LastFailure, w.status.Failing = now, f.outcome.Reason
	w.mu.Unlock()
	if w.alarms.allow(f.kind, now, alarmPeriod) {
		w.log.Errorf("%s; senders keep their metrics and retry. Further %s failures are logged at most once a minute",
			w.explain(bucket, f), f.kind)
	}
}

// explain is the log line of a failed write: what happened and the fix.
func (w *Writer) explain(bucket string, f failure) string {
	switch f.kind {
	case kindUnauthorized:
		return fmt.Sprintf("InfluxDB at %s REFUSED THE TOKEN (%v): set [influxdb] token_file, or OCKAMD_INFLUXDB_TOKEN, "+
			"to a token allowed to write to bucket %q (InfluxDB 1.x with authentication: \"user:password\")", w.url, f.err, bucket)
	case kindNotFound:
		fix := "create it, or set create_database = true (InfluxDB 1.x)"
		if w.create {
			fix = "create it (create_database failed, see above)"
		}
		return fmt.Sprintf("InfluxDB at %s has no bucket or database %q (%v): %s", w.url, bucket, f.err, fix)
	case kindTimeout:
		return fmt.Sprintf("InfluxDB at %s did not answer a write to %q within %v (timeout)", w.url, bucket, w.timeout)
	case kindUnreachable:
		return fmt.Sprintf("InfluxDB at %s is unreachable: %v", w.url, f.err)
	}
	return fmt.Sprintf("InfluxDB at %s could not write to %q: %v", w.url, bucket, f.err)
}

// Kinds of failed writes: the log's rate limit and the reason tag of
// groups_failed.
const (
	kindRefused      = "refused" // permanent
	kindUnauthorized = "unauthorized"
	kindNotFound     = "not_found"
	kindUnavailable  = "unavailable" // 408, 429, 5xx, other statuses
	kindTimeout      = "timeout"
	kindUnreachable  = "unreachable"
	kindCanceled     = "canceled"
)

var failureKinds = []string{kindUnauthorized, kindNotFound, kindUnavailable, kindTimeout, kindUnreachable, kindCanceled}

// failure is a classified write result.
type failure struct {
	outcome Outcome
	kind    string
	err     error
}

// classify maps the error of a write (nil: success) to the Outcome the
// sender gets. The reasons name no URL: they go to devices.
func classify(err error, timeout time.Duration) failure {
	if err == nil {
		return failure{outcome: Outcome{Delivered: true}}
	}
	var he *http2.Error
	if errors.As(err, &he) && he.StatusCode != 0 {
		msg := he.Message
		if msg == "" {
			msg = http.StatusText(he.StatusCode)
		}
		reason := fmt.Sprintf("influxdb %d: %s", he.StatusCode, msg)
		switch code := he.StatusCode; {
		case code == http.StatusUnauthorized, code == http.StatusForbidden:
			return failure{Outcome{Reason: fmt.Sprintf("influxdb %d: the gateway is not allowed to write", code)}, kindUnauthorized, err}
		case code == http.StatusNotFound:
			return failure{Outcome{Reason: reason}, kindNotFound, err}
		case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
			return failure{Outcome{Reason: reason}, kindUnavailable, err}
		case code >= 400 && code < 500:
			return failure{Outcome{Permanent: true, Reason: reason}, kindRefused, err}
		}
		return failure{Outcome{Reason: reason}, kindUnavailable, err}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return failure{Outcome{Reason: fmt.Sprintf("influxdb: no answer within %v", timeout)}, kindTimeout, err}
	case errors.Is(err, context.Canceled):
		return failure{Outcome{Reason: ReasonShuttingDown}, kindCanceled, err}
	}
	return failure{Outcome{Reason: "influxdb unreachable"}, kindUnreachable, err}
}

// isTimeout reports whether err is a network timeout (http.Client.Timeout).
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// rateLimits allows one event per key and period.
type rateLimits struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (r *rateLimits) allow(key string, now time.Time, period time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.last[key]; ok && now.Sub(t) < period {
		return false
	}
	if r.last == nil {
		r.last = make(map[string]time.Time)
	}
	r.last[key] = now
	return true
}
