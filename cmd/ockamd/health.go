package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/cmd/ockamd/internal/sink"
)

// healthServer serves health_address:
//
//	GET /health   JSON: "status" pass (200), warn (200: the last write to
//	              InfluxDB failed, see "influxdb"), or fail (503: stopping)
//	GET /metrics  the internal metrics as line protocol: internal_ockam_listener
//	              (the plugin's), internal_ockamd (the writes)
type healthServer struct {
	srv      *http.Server
	addr     net.Addr
	writer   interface{ Status() sink.Status }
	draining atomic.Bool
	done     chan struct{}
}

// startHealth listens on addr and serves in the background.
func startHealth(addr string, w interface{ Status() sink.Status }, log telegraf.Logger) (*healthServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	h := &healthServer{addr: ln.Addr(), writer: w, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", h.health)
	mux.HandleFunc("GET /metrics", h.metrics)
	h.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(h.done)
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorf("health_address %s: %v", addr, err)
		}
	}()
	log.Infof("Serving /health and /metrics on http://%s", h.addr)
	return h, nil
}

// close stops the server.
func (h *healthServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = h.srv.Shutdown(ctx)
	<-h.done
}

// healthAnswer is the JSON of /health.
type healthAnswer struct {
	Status   string       `json:"status"` // pass, warn, fail
	Message  string       `json:"message,omitempty"`
	InfluxDB influxHealth `json:"influxdb"`
}

type influxHealth struct {
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastFailure *time.Time `json:"last_failure,omitempty"`
	Failing     string     `json:"failing,omitempty"`
}

func (h *healthServer) health(w http.ResponseWriter, _ *http.Request) {
	s := h.writer.Status()
	a := healthAnswer{Status: "pass", InfluxDB: influxHealth{Failing: s.Failing}}
	if !s.LastSuccess.IsZero() {
		a.InfluxDB.LastSuccess = &s.LastSuccess
	}
	if !s.LastFailure.IsZero() {
		a.InfluxDB.LastFailure = &s.LastFailure
	}
	code := http.StatusOK
	switch {
	case h.draining.Load():
		a.Status, a.Message, code = "fail", "stopping", http.StatusServiceUnavailable
	case s.Failing != "":
		a.Status, a.Message = "warn", "the last write to InfluxDB failed; senders retry"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}

func (h *healthServer) metrics(w http.ResponseWriter, _ *http.Request) {
	ms := selfstat.Metrics()
	var lines []string
	s := &influx.Serializer{SortFields: true}
	if err := s.Init(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, m := range ms {
		b, err := s.Serialize(m)
		if err == nil {
			lines = append(lines, string(b))
		}
	}
	slices.Sort(lines)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(strings.Join(lines, "")))
}
