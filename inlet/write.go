package inlet

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

// writeAPI is what differs between the two write endpoints.
type writeAPI struct {
	version    apiVersion
	precisions map[string]string // the API's precision → influxd's code
	want       string            // the precisions, for an error message
	noBucket   string            // the error message without a bucket
}

var (
	v2Write = writeAPI{
		version:    v2API,
		precisions: map[string]string{"": "n", "ns": "n", "us": "u", "ms": "ms", "s": "s"},
		want:       "ns, us, ms or s",
		noBucket:   "bucket is required",
	}
	v1Write = writeAPI{
		version: v1API,
		precisions: map[string]string{
			"": "n", "n": "n", "ns": "n", "u": "u", "us": "u", "ms": "ms", "s": "s", "m": "m", "h": "h",
		},
		want:     "n, ns, u, us, ms, s, m or h",
		noBucket: "database is required",
	}
)

// writeRequest is a write as both API versions describe it.
type writeRequest struct {
	api       apiVersion
	bucket    string
	precision string // influxd's code: n, u, ms, s, m or h
}

// outcome is the answer to a write, and what to count and log about it.
type outcome struct {
	status  int
	msg     string // the error message, for a status other than 204
	metrics int    // metrics parsed
	res     sender.Result
}

// serveV2Write serves POST /api/v2/write?bucket=…&precision=… (org is
// accepted and ignored: the gateway's outputs choose the organization).
func (h *Handler) serveV2Write(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	h.serveWrite(w, r, v2Write, q.Get("bucket"), q.Get("precision"))
}

// serveV1Write serves POST /write?db=…&rp=…&precision=… (InfluxDB 1.x).
func (h *Handler) serveV1Write(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bucket := q.Get("db")
	if rp := q.Get("rp"); rp != "" && bucket != "" {
		bucket += "/" + rp
	}
	h.serveWrite(w, r, v1Write, bucket, q.Get("precision"))
}

// serveWrite answers a write to bucket in precision, through api.
func (h *Handler) serveWrite(w http.ResponseWriter, r *http.Request, api writeAPI, bucket, precision string) {
	start := time.Now()
	req := writeRequest{api: api.version, bucket: bucket}
	var ok bool
	req.precision, ok = api.precisions[precision]
	var out outcome
	switch {
	case !h.checkToken(r, req.api):
		out = outcome{status: http.StatusUnauthorized, msg: "unauthorized access"}
	case !ok:
		out = outcome{status: http.StatusBadRequest, msg: fmt.Sprintf("precision %q: want %s", precision, api.want)}
	case bucket == "":
		out = outcome{status: http.StatusBadRequest, msg: api.noBucket}
	case len(bucket) > maxBucketLength:
		out = outcome{status: http.StatusBadRequest, msg: fmt.Sprintf("bucket name longer than %d bytes", maxBucketLength)}
	default:
		out = h.write(w, r, req)
	}
	h.account(r, req, out, time.Since(start))
	if out.status == http.StatusNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if out.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeError(w, req.api, out.status, out.msg)
}

// write reads, parses and sends one write, and returns the answer.
func (h *Handler) write(w http.ResponseWriter, r *http.Request, req writeRequest) outcome {
	if r.ContentLength > h.maxBodySize {
		return outcome{status: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("body of %d bytes is larger than %d", r.ContentLength, h.maxBodySize)}
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	case <-r.Context().Done():
		return outcome{status: http.StatusServiceUnavailable, msg: "request ended while waiting for a write slot"}
	}
	body, out := h.readBody(w, r)
	if out.status != 0 {
		return out
	}
	parsed := parseLines(body, h.now(), req.precision, req.bucket)
	var refused []sender.Refusal
	if parsed.unserializable > 0 {
		// Not expected: what influxd's parser accepts, Telegraf's
		// serializer writes. Dropped, as outputs.ockam drops it.
		refused = []sender.Refusal{{Metrics: parsed.unserializable, Reason: parsed.unserializableReason}}
	}
	if parsed.count == 0 && refused == nil {
		// As influxd: nothing to store is a success, unless a line was bad.
		switch {
		case parsed.dropped > 0:
			return outcome{status: http.StatusBadRequest, msg: partialWrite(parsed)}
		case parsed.parseErr != "":
			return outcome{status: http.StatusBadRequest, msg: parsed.parseErr}
		}
		return outcome{status: http.StatusNoContent}
	}
	n := parsed.count + parsed.unserializable
	out = outcome{metrics: n}
	var err error
	out.res, err = h.sender.Send(r.Context(), []sender.Payload{{Lines: parsed.payload, Metrics: parsed.count}})
	out.res.Refused = append(refused, out.res.Refused...)
	var refusal *secure.RefusedError
	switch refused := out.res.RefusedMetrics(); {
	case errors.As(err, &refusal) && refusal.Code == secure.RefusedRevoked:
		// The listener refuses this device for good (a revocation list
		// never goes back): as a point InfluxDB refuses, not as an outage
		// the client should wait out. Every other refusal can end (a
		// renewed credential, a freed channel slot): retry later.
		out.status, out.msg = http.StatusBadRequest, "refused, dropped: "+err.Error()
	case err != nil:
		out.status, out.msg = http.StatusServiceUnavailable, "not delivered, retry later: "+err.Error()
	case refused > 0:
		out.status = http.StatusBadRequest
		out.msg = fmt.Sprintf("%d of %d points refused, dropped: %s", refused, n, reasons(out.res.Refused))
		if parsed.parseErr != "" || parsed.dropped > 0 {
			out.msg = partialWrite(parsed) + "; " + out.msg
		}
	case parsed.parseErr != "" || parsed.dropped > 0:
		out.status, out.msg = http.StatusBadRequest, partialWrite(parsed)
	default:
		out.status = http.StatusNoContent
	}
	return out
}

// partialWrite is influxd's message for a write whose good points were
// stored (tsdb.PartialWriteError): the points dropped when they were stored
// take precedence over the lines that did not parse, whose count influxd
// gives as 0.
func partialWrite(p lines) string {
	if p.dropped > 0 {
		return fmt.Sprintf("partial write: %s dropped=%d", p.dropReason, p.dropped)
	}
	return fmt.Sprintf("partial write: %s dropped=0", p.parseErr)
}

// reasons lists the distinct reasons of refused; those of the listener are
// marked as such, and quoted.
func reasons(refused []sender.Refusal) string {
	var list []string
	seen := map[string]bool{}
	for _, f := range refused {
		r := f.Reason
		if f.Listener {
			r = "listener: " + strconv.Quote(r) // peer text
		}
		if !seen[r] {
			seen[r] = true
			list = append(list, r)
		}
	}
	return strings.Join(list, "; ")
}

// readBody reads the body, gunzipping it if needed, within the size limit
// (on both the compressed and the uncompressed bytes: a small gzip body can
// expand a thousandfold).
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, outcome) {
	tooLarge := outcome{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("body is larger than %d bytes", h.maxBodySize)}
	var body io.Reader = http.MaxBytesReader(w, r.Body, h.maxBodySize)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			if isMaxBytes(err) {
				return nil, tooLarge
			}
			return nil, outcome{status: http.StatusBadRequest, msg: "gzip body: " + err.Error()}
		}
		defer zr.Close()
		body = zr
	default:
		return nil, outcome{status: http.StatusUnsupportedMediaType, msg: fmt.Sprintf("Content-Encoding %q: want gzip or none", enc)}
	}
	b, err := io.ReadAll(io.LimitReader(body, h.maxBodySize+1))
	switch {
	case isMaxBytes(err) || int64(len(b)) > h.maxBodySize:
		return nil, tooLarge
	case err != nil:
		return nil, outcome{status: http.StatusBadRequest, msg: "reading the body: " + err.Error()}
	}
	return b, outcome{}
}

func isMaxBytes(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

// account counts the outcome and logs it: every write at debug level; a
// failure as a warning when its reason differs from the last one of its
// kind, so that a client retrying every second does not flood the log.
func (h *Handler) account(r *http.Request, req writeRequest, out outcome, took time.Duration) {
	h.stats.writes.Incr(1)
	h.stats.metricsReceived.Incr(int64(out.metrics))
	h.stats.metricsAcked.Incr(int64(out.res.Acked))
	h.stats.metricsRefused.Incr(int64(out.res.RefusedMetrics()))
	h.stats.byStatus(out.status).Incr(1)
	if out.status == http.StatusNoContent {
		h.log.Debugf("%s %s bucket %q: %d points acknowledged in %v", r.Method, r.URL.Path, req.bucket, out.metrics,
			took.Round(time.Millisecond))
		h.unavailable.reset()
		return
	}
	msg := cut(out.msg)
	if strings.ContainsFunc(msg, unicode.IsControl) { // the client's bad lines, or the listener's words
		msg = strconv.Quote(msg)
	}
	line := fmt.Sprintf("%s %s bucket %q from %s: %d %s: %s", r.Method, r.URL.Path, req.bucket, r.RemoteAddr,
		out.status, http.StatusText(out.status), msg)
	if out.status == http.StatusServiceUnavailable && !h.unavailable.changed(out.msg) {
		h.log.Debugf("%s", line)
		return
	}
	h.log.Warnf("%s", line)
}

// errorOnce remembers the last message of a recurring failure.
type errorOnce struct {
	mu   sync.Mutex
	last string
}

// changed reports whether msg differs from the last one, and records it.
func (e *errorOnce) changed(msg string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if msg == e.last {
		return false
	}
	e.last = msg
	return true
}

// reset forgets the last message: the failure ended.
func (e *errorOnce) reset() {
	e.mu.Lock()
	e.last = ""
	e.mu.Unlock()
}
