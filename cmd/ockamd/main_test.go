package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/cmd/ockamd/internal/sink"
	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// wait bounds every wait for something that should happen promptly.
const wait = 10 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	ockamtest.RemoveBuilds()
	os.Exit(code)
}

func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 2, run(nil, &stdout, &stderr))
	require.Contains(t, stderr.String(), "--config is required")
	stderr.Reset()
	require.Equal(t, 2, run([]string{"--config", "x", "extra"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), `unexpected argument "extra"`)
	stderr.Reset()
	require.Equal(t, 1, run([]string{"--config", filepath.Join(t.TempDir(), "nope.toml")}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "ockamd: error: ")
	require.Contains(t, stderr.String(), "nope.toml")

	require.Equal(t, 0, run([]string{"--version"}, &stdout, &stderr))
	require.Regexp(t, `^ockamd v\d+\.\d+\.\d+\S* \(telegraf-ockam, Telegraf 1\.39\.3, go\S+\)\n$`, stdout.String())
	stdout.Reset()
	require.Equal(t, 0, run([]string{"--sample-config"}, &stdout, &stderr))
	require.Equal(t, sampleConfig, stdout.String())
}

func TestCheck(t *testing.T) {
	f := newTestFleet(t)
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, run([]string{"--config", writeConfig(t, f.sampleFor()), "--check"}, &stdout, &stderr), stderr.String())
	require.Equal(t, fmt.Sprintf("ockamd: configuration OK: listener tcp://:4000 (vault %s); InfluxDB http://127.0.0.1:8086, bucket \"telemetry\"\n",
		f.listener.VaultPath), stdout.String())

	// A credential the authorities did not issue: the listener's Init says so.
	other := ockamtest.NewFleet(t)
	bad := strings.Replace(f.sampleFor(), fmt.Sprintf("%q", f.AuthorityFile), fmt.Sprintf("%q", other.AuthorityFile), 1)
	require.Equal(t, 1, run([]string{"--config", writeConfig(t, bad), "--check"}, &stdout, &stderr))
}

// influxDB is a fake InfluxDB 1.8 write endpoint: it stores each body, and
// answers a body with "conflict" in it as 1.8 answers a field type conflict.
// While hold is set, a write whose body contains "slow" waits for release.
type influxDB struct {
	srv     *httptest.Server
	mu      sync.Mutex
	bodies  []string
	buckets []string
	release chan struct{}
	slow    chan struct{} // a slow write arrived
}

func newInfluxDB(t *testing.T) *influxDB {
	db := &influxDB{release: make(chan struct{}), slow: make(chan struct{}, 10)}
	db.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		b, _ := io.ReadAll(r.Body)
		body := string(b)
		if strings.Contains(body, "slow") {
			db.slow <- struct{}{}
			<-db.release
		}
		if strings.Contains(body, "conflict") {
			msg := `partial write: field type conflict: input field "value" on measurement "conflict" is type string, already exists as type float dropped=1`
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Influxdb-Error", msg)
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":%q}`, msg)
			return
		}
		db.mu.Lock()
		db.bodies = append(db.bodies, body)
		db.buckets = append(db.buckets, r.URL.Query().Get("bucket"))
		db.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(db.srv.Close)
	t.Cleanup(func() {
		select {
		case <-db.release:
		default:
			close(db.release)
		}
	})
	return db
}

func (db *influxDB) stored() []string {
	db.mu.Lock()
	defer db.mu.Unlock()
	return append([]string(nil), db.bodies...)
}

// device is a channel from a device of the fleet to ockamd.
type device struct {
	t       *testing.T
	ch      *secure.Channel
	id      secure.Identifier
	replies chan secure.Message
	closed  chan error
}

func (f *testFleet) dial(t *testing.T, addr string, attrs map[string]string) *device {
	t.Helper()
	m := f.Enroll(t, fmt.Sprintf("device-%d", time.Now().UnixNano()), attrs)
	v, err := secure.NewVerifier(f.Authority.Public())
	require.NoError(t, err)
	var ch *secure.Channel
	require.Eventually(t, func() bool { // ockamd may still be starting
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		ch, err = secure.Dial(ctx, secure.NewStreamTransport(nc), secure.HandshakeConfig{
			Identity: m.Identity, Credential: m.Credential, Verifier: v,
		})
		return err == nil
	}, wait, 50*time.Millisecond)
	d := &device{t: t, ch: ch, id: m.Identity.Identifier(), replies: make(chan secure.Message, 100), closed: make(chan error, 1)}
	go func() {
		for {
			msg, err := ch.Receive()
			if err != nil {
				d.closed <- err
				return
			}
			d.replies <- msg
		}
	}()
	t.Cleanup(func() { ch.Close("test done") })
	return d
}

func (d *device) send(batch uint64, payload string) {
	d.t.Helper()
	require.NoError(d.t, d.ch.Send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: []byte(payload)}))
}

func (d *device) reply() secure.Message {
	d.t.Helper()
	select {
	case m := <-d.replies:
		return m
	case err := <-d.closed:
		d.t.Fatalf("channel closed while waiting for a reply: %v", err)
	case <-time.After(wait):
		d.t.Fatal("no reply")
	}
	return secure.Message{}
}

// daemonConfig writes a configuration for ockamd on a free port, writing
// to db, and returns it with the listener's address.
func (f *testFleet) config(t *testing.T, db *influxDB, extra string) (path, addr, health string) {
	addr, health = ockamtest.FreeAddr(t), ockamtest.FreeAddr(t)
	path = writeConfig(t, fmt.Sprintf(`
health_address = %q
shutdown_timeout = "10s"

[listener]
  service_address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_paths = [%q]
  attribute_tags = ["site"]
  max_undelivered_messages = 8
  [[listener.allow]]
    attributes = { role = "sensor" }
    measurements = ["temp", "conflict", "slow*"]

[influxdb]
  url = %q
  bucket = "telemetry"
  timeout = "5s"
%s
`, health, addr, f.listener.VaultPath, f.listener.CredentialPath, f.AuthorityFile, db.srv.URL, extra))
	return path, addr, health
}

// TestDaemon runs ockamd as a process: a device's messages are acked once
// the fake InfluxDB stored them, a field type conflict is a permanent nack
// with InfluxDB's message, the health endpoint reports, and SIGTERM lets a
// write under way finish and be acked, nacks what comes after, and exits 0.
func TestDaemon(t *testing.T) {
	bin := ockamtest.Build(t, ".")
	f := newTestFleet(t)
	db := newInfluxDB(t)
	conf, addr, health := f.config(t, db, `  bucket_attribute = "site"`)
	p := ockamtest.Start(t, filepath.Join(bin, "ockamd"), "--config", conf)

	d := f.dial(t, addr, map[string]string{"role": "sensor", "site": "plant-7"})
	d.send(1, "temp,site=forged,room=lab value=21.5 1700000000000000000\n")
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, d.reply())
	require.Equal(t, []string{fmt.Sprintf("temp,ockam_identity=%s,room=lab,site=plant-7 value=21.5 1700000000000000000\n", d.id)},
		db.stored())
	require.Equal(t, []string{"telemetry_plant-7"}, db.buckets)

	d.send(2, "conflict value=\"hot\" 1700000000000000000\n")
	m := d.reply()
	require.Equal(t, secure.TypeNack, m.Type)
	require.True(t, m.Permanent)
	require.Equal(t, `influxdb 400: partial write: field type conflict: input field "value" on measurement "conflict" is type string, already exists as type float dropped=1`, m.Reason)

	// The policy still applies: refused before any write.
	d.send(3, "cpu usage=1 1700000000000000000\n")
	m = d.reply()
	require.True(t, m.Permanent)
	require.Equal(t, `policy: measurement "cpu" is not allowed`, m.Reason)

	// Health and internal metrics.
	resp, err := http.Get("http://" + health + "/health")
	require.NoError(t, err)
	var h healthAnswer
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "pass", h.Status)
	require.NotNil(t, h.InfluxDB.LastSuccess)
	resp, err = http.Get("http://" + health + "/metrics")
	require.NoError(t, err)
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Regexp(t, `(?m)^internal_ockam_listener .*messages_accepted=2i`, string(metrics))
	require.Regexp(t, `(?m)^internal_ockam_listener .*messages_delivered=1i`, string(metrics))
	require.Regexp(t, `(?m)^internal_ockam_listener .*messages_undelivered=1i`, string(metrics))
	require.Regexp(t, `(?m)^internal_ockam_listener,reason=policy messages_refused=1i`, string(metrics))
	require.Regexp(t, `(?m)^internal_ockamd .*groups_refused=1i.*groups_written=1i,metrics_written=1i`, string(metrics))

	// SIGTERM while a write is under way: it finishes and is acked; a
	// message sent meanwhile is nacked; then the channel closes.
	d.send(4, "slow value=1 1700000000000000000\n")
	<-db.slow
	p.Signal(t, syscall.SIGTERM)
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + health + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	}, wait, 10*time.Millisecond)
	d.send(5, "temp value=2 1700000000000000000\n")
	require.Equal(t, secure.Message{Type: secure.TypeNack, Batch: 5, Reason: sink.ReasonShuttingDown}, d.reply())
	close(db.release)
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 4}, d.reply())
	select {
	case err := <-d.closed:
		require.ErrorIs(t, err, secure.ErrClosed)
		require.ErrorContains(t, err, "listener stopping")
	case <-time.After(wait):
		t.Fatal("the channel is still open")
	}
	require.NoError(t, p.Wait(t, wait), "exit status 0\n%s", p.Stderr())
	require.Len(t, db.stored(), 2)

	log := p.Stderr()
	require.Regexp(t, `I! \[inputs\.ockam_listener\] Listening on `+regexp.QuoteMeta(addr), log)
	require.Contains(t, log, `InfluxDB token: none`)
	require.Contains(t, log, `W! [ockamd.influxdb] InfluxDB refused 1 metrics for bucket "telemetry_plant-7" for good`)
	require.Contains(t, log, "I! [ockamd] Stopping: new messages are nacked (transient)")
	require.Contains(t, log, "I! [ockamd] Stopped")
}

// TestInfluxDBDown: with InfluxDB gone, messages are nacked (transient) and
// the error is logged once; health says "warn".
func TestInfluxDBDown(t *testing.T) {
	f := newTestFleet(t)
	db := newInfluxDB(t)
	conf, addr, health := f.config(t, db, "")
	db.srv.Close()
	cfg, err := loadConfig(conf)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg) }()

	d := f.dial(t, addr, map[string]string{"role": "sensor"})
	for batch := range uint64(3) {
		d.send(batch, "temp value=1 1700000000000000000\n")
		require.Equal(t, secure.Message{Type: secure.TypeNack, Batch: batch, Reason: "influxdb unreachable"}, d.reply())
	}
	resp, err := http.Get("http://" + health + "/health")
	require.NoError(t, err)
	var h healthAnswer
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	resp.Body.Close()
	require.Equal(t, "warn", h.Status)
	require.Equal(t, "influxdb unreachable", h.InfluxDB.Failing)

	cancel()
	require.NoError(t, <-done)
}
