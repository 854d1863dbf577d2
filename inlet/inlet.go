// Package inlet serves the write endpoints of the InfluxDB HTTP API on a
// local address, so that any InfluxDB client (stock Telegraf's
// outputs.influxdb_v2 included) can send through an ockam channel. Each
// write is checked as line protocol, sent with package sender (the
// engine of outputs.ockam: the same messages, docs/PROTOCOL.md "Transport
// messages"), and answered only once the listener answered:
//
//	listener acked every message          204 No Content
//	permanent nack, or a point no         400 {"code":"invalid","message":"…"}
//	listener could ever accept
//	lines influxd would refuse (the       400 influxd's "partial write: …",
//	good ones are sent first)             after the listener acked the rest
//	no channel, transient nack, timeout   503 with Retry-After
//	body over the size limit              413 (Telegraf then splits the batch)
//	a request made by a web page          403, on every path (browser.go)
//
// A body is parsed with influxd 1.8's own parser, so that the inlet accepts
// what InfluxDB accepts and answers with its messages (lineprotocol.go,
// README.md).
//
// Every metric carries the bucket of its request (the 1.x "db/rp") in the
// reserved tag BucketTag, which a gateway can route by (docs/PROTOCOL.md,
// "Reserved tags").
package inlet

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

// BucketTag is the reserved tag that carries, on every metric of a write,
// the bucket the client named: the v2 bucket parameter, or "db/rp" (or "db")
// of a 1.x write. A tag of that name sent by the client is replaced.
const BucketTag = "_ockam_bucket"

const (
	// DefaultMaxBodySize is InfluxDB's own limit on a write body (its
	// max-body-size, 25 MB), in binary units.
	DefaultMaxBodySize = 25 << 20
	// maxBucketLength bounds the bucket name copied onto every metric.
	maxBucketLength = 256
	// maxConcurrentWrites bounds the writes read, parsed and in flight at
	// once: each may hold a whole body and its parsed metrics in memory.
	// More wait for a slot (they still share one channel).
	maxConcurrentWrites = 8
	// retryAfter is the Retry-After of a 503, in seconds. Telegraf waits the
	// longer of it and its own backoff, which grows with each failure.
	retryAfter = "1"
	// maxErrorMessage bounds the message of an error response.
	maxErrorMessage = 4096
)

// Sender sends line protocol through a channel and says what the listener
// made of it. *sender.Sender is one, after Start.
type Sender interface {
	// Send has the contract of sender.Sender.Send: an error means "retry
	// all of them later"; otherwise each metric was acked or refused for
	// good.
	Send(ctx context.Context, payloads []sender.Payload) (sender.Result, error)
	// Peer returns the listener the channel is open to, or why there is
	// none.
	Peer() (secure.Identifier, error)
}

var _ Sender = (*sender.Sender)(nil)

// Config configures a Handler.
type Config struct {
	Sender Sender
	// Token, when not empty, is required in every write, as
	// "Authorization: Token …" (or, on the 1.x endpoint, as the password of
	// basic authentication or the p parameter). New keeps only its SHA-256
	// hash, which requests are compared with in constant time.
	Token []byte
	// MaxBodySize bounds a write body, compressed and uncompressed;
	// DefaultMaxBodySize when zero.
	MaxBodySize int64
	// Version is sent in the X-Influxdb-Version header and in /health.
	Version string
	Log     logger.Logger
	// Statistics, when not nil, receives the counters of measurement
	// internal_ockam_inlet; /health also reports those of internal_ockam
	// registered there for the sender (sender.StatFields).
	Statistics *selfstat.Collector
	// Now is the clock for points without a timestamp; time.Now when nil.
	Now func() time.Time
	// AllowedHosts are host names (without a port) accepted in the Host
	// header besides loopback addresses, "localhost" and the address a
	// connection arrived at: the names clients use for an inlet listening
	// on another interface. Any other Host is refused as DNS rebinding.
	AllowedHosts []string
}

// Handler serves the InfluxDB write API. It is safe for concurrent use.
type Handler struct {
	sender      Sender
	tokenHash   *[sha256.Size]byte // nil: no token required
	maxBodySize int64
	version     string
	log         logger.Logger
	collector   *selfstat.Collector
	stats       stats
	now         func() time.Time
	slots       chan struct{}
	mux         *http.ServeMux
	unavailable errorOnce // the last reason for a 503, logged once
	// allowedHosts are Config.AllowedHosts, lower case.
	allowedHosts map[string]bool
	browserLog   logLimiter
}

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Sender == nil || cfg.Log == nil {
		return nil, errors.New("inlet: Config.Sender and Config.Log are required")
	}
	if cfg.MaxBodySize < 0 {
		return nil, fmt.Errorf("inlet: max body size %d: must be positive", cfg.MaxBodySize)
	}
	h := &Handler{
		sender:      cfg.Sender,
		maxBodySize: cfg.MaxBodySize,
		version:     cfg.Version,
		log:         cfg.Log,
		collector:   cfg.Statistics,
		stats:       newStats(cfg.Statistics),
		now:         cfg.Now,
		slots:       make(chan struct{}, maxConcurrentWrites),
		mux:         http.NewServeMux(),
	}
	h.allowedHosts = make(map[string]bool, len(cfg.AllowedHosts))
	for _, name := range cfg.AllowedHosts {
		h.allowedHosts[strings.ToLower(strings.TrimSuffix(name, "."))] = true
	}
	if len(cfg.Token) > 0 {
		sum := sha256.Sum256(cfg.Token)
		h.tokenHash = &sum
	}
	if h.maxBodySize == 0 {
		h.maxBodySize = DefaultMaxBodySize
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.version == "" {
		h.version = "unknown"
	}
	h.mux.HandleFunc("/api/v2/write", h.method(http.MethodPost, v2API, h.serveV2Write))
	h.mux.HandleFunc("/write", h.method(http.MethodPost, v1API, h.serveV1Write))
	h.mux.HandleFunc("/ping", h.method(http.MethodGet, v2API, h.servePing))
	h.mux.HandleFunc("/health", h.method(http.MethodGet, v2API, h.serveHealth))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, v2API, http.StatusNotFound, "path not found")
	})
	return h, nil
}

// ServeHTTP serves one request. A request that a web page made (an Origin
// header, Sec-Fetch-Site, or a Host that is not this inlet's) is answered
// 403 before anything else, on every path.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Influxdb-Build", "ockam-inlet")
	w.Header().Set("X-Influxdb-Version", h.version)
	if h.refuseBrowser(w, r) {
		return
	}
	h.mux.ServeHTTP(w, r)
}

// method wraps next so that it answers only method (and HEAD, for GET).
func (h *Handler) method(method string, api apiVersion, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, api, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		next(w, r)
	}
}

// servePing answers 204, as InfluxDB does; clients use it to probe.
func (h *Handler) servePing(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}

// health is the body of /health: InfluxDB's fields, and the counters.
type health struct {
	Name     string           `json:"name"`
	Message  string           `json:"message"`
	Status   string           `json:"status"`
	Version  string           `json:"version"`
	Checks   []struct{}       `json:"checks"`
	Counters map[string]int64 `json:"counters,omitempty"`
}

// serveHealth answers 200 "pass" while a channel to the listener is open,
// and 503 "fail" with the reason while there is none.
func (h *Handler) serveHealth(w http.ResponseWriter, _ *http.Request) {
	body := health{Name: "ockam-inlet", Status: "pass", Version: h.version, Checks: []struct{}{}, Counters: h.Counters()}
	status := http.StatusOK
	if peer, err := h.sender.Peer(); err != nil {
		status = http.StatusServiceUnavailable
		body.Status, body.Message = "fail", "no channel to the listener: "+err.Error()
	} else {
		body.Message = "ready for writes: channel open to listener " + peer.String()
	}
	writeJSON(w, status, body)
}

// checkToken reports whether r carries the token, when one is required.
// The comparison is of SHA-256 hashes, in constant time.
func (h *Handler) checkToken(r *http.Request, api apiVersion) bool {
	if h.tokenHash == nil {
		return true
	}
	var candidates []string
	if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Token") {
		candidates = append(candidates, strings.TrimSpace(cred))
	}
	if api == v1API {
		if _, pass, ok := r.BasicAuth(); ok {
			candidates = append(candidates, pass)
		}
		if p := r.URL.Query().Get("p"); p != "" {
			candidates = append(candidates, p)
		}
	}
	match := 0
	for _, c := range candidates {
		sum := sha256.Sum256([]byte(c))
		match |= subtle.ConstantTimeCompare(sum[:], h.tokenHash[:])
	}
	return match == 1
}

// apiVersion selects the shape of error bodies.
type apiVersion int

const (
	v2API apiVersion = iota // {"code": "…", "message": "…"}
	v1API                   // {"error": "…"}
)

// codes are InfluxDB v2's error codes for the statuses the inlet answers.
var codes = map[int]string{
	http.StatusBadRequest:            "invalid",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not found",
	http.StatusMethodNotAllowed:      "method not allowed",
	http.StatusRequestEntityTooLarge: "request too large",
	http.StatusUnsupportedMediaType:  "unsupported media type",
	http.StatusServiceUnavailable:    "unavailable",
}

// writeError answers status with msg in the error shape of api.
func writeError(w http.ResponseWriter, api apiVersion, status int, msg string) {
	msg = cut(msg)
	if api == v1API {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	writeJSON(w, status, map[string]string{"code": codes[status], "message": msg})
}

// cut bounds an error message to maxErrorMessage bytes: a partial write
// names every bad line of a body of up to 25 MiB.
func cut(msg string) string {
	if len(msg) > maxErrorMessage {
		return strings.ToValidUTF8(msg[:maxErrorMessage], "") + "…"
	}
	return msg
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("inlet: internal error: " + err.Error()) // only our own types
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
