package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/common/tls"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/inputs/influxdb_v2_listener"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/outputs/influxdb_v2"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	"github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// The workload: series measurements × hosts, each metric with 3 tags and 5
// fields (3 floats, 2 integers), like Telegraf's system inputs produce.
const (
	hosts  = 40
	series = 5 * hosts // ≈ 200 series
)

var measurements = [...]string{"cpu", "mem", "disk", "net", "system"}

// workload returns n metrics cycling through the series, each series a
// point every 10 s from a fixed start, so every metric is a distinct point.
func workload(n int) []telegraf.Metric {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := make([]telegraf.Metric, n)
	for i := range ms {
		s := i % series
		ms[i] = metric.New(measurements[s%len(measurements)],
			map[string]string{
				"host":   fmt.Sprintf("host-%02d.example.net", s/len(measurements)),
				"region": fmt.Sprintf("eu-west-%d", s%3+1),
				"rack":   fmt.Sprintf("r%d", s%7),
			},
			map[string]any{
				"usage_user":   12.5 + float64(i%97)/7,
				"usage_system": 3.25 + float64(i%89)/11,
				"usage_idle":   84.125 - float64(i%83)/13,
				"uptime":       int64(1_000_000 + i),
				"errors":       int64(i % 5),
			},
			start.Add(time.Duration(i/series)*10*time.Second))
	}
	return ms
}

// countingAcc is the listener side's Telegraf: it counts the metrics it is
// given and accepts tracking metrics at once, as if every output had
// written them.
type countingAcc struct {
	metrics   atomic.Int64
	delivered chan telegraf.DeliveryInfo
}

var _ telegraf.TrackingAccumulator = (*countingAcc)(nil)

func (a *countingAcc) AddMetric(telegraf.Metric) { a.metrics.Add(1) }
func (a *countingAcc) AddFields(string, map[string]any, map[string]string, ...time.Time) {
	a.metrics.Add(1)
}
func (a *countingAcc) AddGauge(string, map[string]any, map[string]string, ...time.Time) {
	a.metrics.Add(1)
}
func (a *countingAcc) AddCounter(string, map[string]any, map[string]string, ...time.Time) {
	a.metrics.Add(1)
}
func (a *countingAcc) AddSummary(string, map[string]any, map[string]string, ...time.Time) {
	a.metrics.Add(1)
}
func (a *countingAcc) AddHistogram(string, map[string]any, map[string]string, ...time.Time) {
	a.metrics.Add(1)
}
func (*countingAcc) SetPrecision(time.Duration) {}
func (*countingAcc) AddError(err error)         { panic(err) }

func (a *countingAcc) WithTracking(maxTracked int) telegraf.TrackingAccumulator {
	a.delivered = make(chan telegraf.DeliveryInfo, maxTracked)
	return a
}

func (a *countingAcc) AddTrackingMetric(m telegraf.Metric) telegraf.TrackingID {
	return a.AddTrackingMetricGroup([]telegraf.Metric{m})
}

func (a *countingAcc) AddTrackingMetricGroup(group []telegraf.Metric) telegraf.TrackingID {
	tracked, id := metric.WithGroupTracking(group, a.notify)
	a.metrics.Add(int64(len(tracked)))
	for _, m := range tracked {
		m.Accept()
	}
	return id
}

func (a *countingAcc) notify(info telegraf.DeliveryInfo) {
	select {
	case a.delivered <- info:
	default:
		panic("countingAcc: more deliveries than WithTracking allowed")
	}
}

func (a *countingAcc) Delivered() <-chan telegraf.DeliveryInfo { return a.delivered }

// pipeline is an output and a listener in this process, connected over
// loopback TCP.
type pipeline struct {
	out telegraf.Output
	acc *countingAcc
}

// The pipelines compared. "gzip" is influxdb_v2's default content
// encoding; "identity" turns it off.
const (
	pipeOckam       = "ockam"
	pipeOckamRelay  = "ockam-relay" // the same through one relay (ockam relay serve), in this process
	pipeV2          = "influxdb_v2"
	pipeV2Identity  = "influxdb_v2-identity"
	pipeV2MTLS      = "influxdb_v2-mtls"
	pipeV2MTLSIdent = "influxdb_v2-mtls-identity"
)

// startPipeline starts the named pipeline; it stops when b ends.
func startPipeline(b testing.TB, name string) *pipeline {
	b.Helper()
	switch name {
	case pipeOckam:
		return startOckam(b)
	case pipeOckamRelay:
		return startOckamRelay(b)
	case pipeV2:
		return startV2(b, false, "gzip")
	case pipeV2Identity:
		return startV2(b, false, "identity")
	case pipeV2MTLS:
		return startV2(b, true, "gzip")
	case pipeV2MTLSIdent:
		return startV2(b, true, "identity")
	}
	b.Fatalf("no pipeline %q", name)
	return nil
}

var collectors atomic.Int64

// statistics returns a selfstat collector of its own (the registry is
// global, and every benchmark run starts new plugins).
func statistics() *selfstat.Collector {
	return selfstat.NewCollector(map[string]string{"bench": fmt.Sprint(collectors.Add(1))})
}

// startOckam starts inputs.ockam_listener and outputs.ockam with their
// default settings, and waits for the channel.
func startOckam(b testing.TB) *pipeline {
	b.Helper()
	fleet := ockamtest.NewFleet(b)
	addr, acc := startOckamListener(b, fleet)
	return connectOckam(b, fleet, acc, func(o *ockam.Output) { o.Address = "tcp://" + addr })
}

// startOckamRelay is startOckam through a relay on loopback: the listener
// opens no port and registers a name at the relay, the output's route is
// the relay and that name. The relay's CPU counts with the rest.
func startOckamRelay(b testing.TB) *pipeline {
	b.Helper()
	fleet := ockamtest.NewFleet(b)
	srv, err := relay.NewServer(relay.ServerConfig{
		Authorities: []*secure.Identity{fleet.Authority.Public()},
		Logger:      testutil.Logger{Name: "relay", Quiet: true},
	})
	must(b, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(b, err)
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	route := []string{"tcp://" + ln.Addr().String(), "bench-gateway"}
	acc := startOckamListenerWith(b, fleet, map[string]string{"role": "listener", "relay": route[1]},
		func(l *ockam_listener.Listener) {
			l.ServiceAddress, l.RelayAddress, l.RelayName = "", route[0], route[1]
		})
	// The registration runs in the background: the warm-up in connectOckam
	// retries until the first batch went through.
	return connectOckam(b, fleet, acc, func(o *ockam.Output) { o.Route = route })
}

// connectOckam starts outputs.ockam with its default settings for a new
// device of fleet, sending where to says, and waits until a first batch
// reached acc.
func connectOckam(b testing.TB, fleet *ockamtest.Fleet, acc *countingAcc, to func(*ockam.Output)) *pipeline {
	b.Helper()
	device := fleet.Enroll(b, "device", map[string]string{"role": "sensor"})
	o := outputs.Outputs["ockam"]().(*ockam.Output)
	to(o)
	o.VaultPath = device.VaultPath
	o.CredentialPath = device.CredentialPath
	o.AuthorityPath = fleet.AuthorityFile
	o.Log = testutil.Logger{Name: "outputs.ockam", Quiet: true}
	o.Statistics = statistics()
	must(b, o.Init())
	must(b, o.Connect())
	b.Cleanup(func() { o.Close() })
	p := &pipeline{out: o, acc: acc}
	p.warmUp(b)
	return p
}

// startOckamListener starts inputs.ockam_listener with its default
// settings, enrolled in fleet, on a loopback address.
func startOckamListener(b testing.TB, fleet *ockamtest.Fleet) (string, *countingAcc) {
	b.Helper()
	addr := ockamtest.FreeAddr(b)
	acc := startOckamListenerWith(b, fleet, map[string]string{"role": "listener"},
		func(l *ockam_listener.Listener) { l.ServiceAddress = "tcp://" + addr })
	return addr, acc
}

// startOckamListenerWith starts inputs.ockam_listener with its default
// settings for a new member of fleet with attrs; where sets where its
// channels come from.
func startOckamListenerWith(b testing.TB, fleet *ockamtest.Fleet, attrs map[string]string,
	where func(*ockam_listener.Listener)) *countingAcc {
	b.Helper()
	gateway := fleet.Enroll(b, "listener", attrs)
	l := inputs.Inputs["ockam_listener"]().(*ockam_listener.Listener)
	where(l)
	l.VaultPath = gateway.VaultPath
	l.CredentialPath = gateway.CredentialPath
	l.AuthorityPaths = []string{fleet.AuthorityFile}
	l.Log = testutil.Logger{Name: "inputs.ockam_listener", Quiet: true}
	l.Statistics = statistics()
	acc := &countingAcc{}
	must(b, l.Init())
	must(b, l.Start(acc))
	b.Cleanup(l.Stop)
	return acc
}

// startV2 starts inputs.influxdb_v2_listener and outputs.influxdb_v2 with
// their default settings but the content encoding, and with mutual TLS if
// mtls is set.
func startV2(b testing.TB, mtls bool, encoding string) *pipeline {
	b.Helper()
	addr := ockamtest.FreeAddr(b)
	l := inputs.Inputs["influxdb_v2_listener"]().(*influxdb_v2_listener.InfluxDBV2Listener)
	l.ServiceAddress = addr
	l.Log = testutil.Logger{Name: "inputs.influxdb_v2_listener", Quiet: true}
	l.UseInternalStatistics = true
	l.Statistics = statistics()

	o := outputs.Outputs["influxdb_v2"]().(*influxdb_v2.InfluxDB)
	o.URLs = []string{"http://" + addr}
	o.Bucket = "bench"
	o.ContentEncoding = encoding
	o.Log = testutil.Logger{Name: "outputs.influxdb_v2", Quiet: true}

	if mtls {
		pki := newTLSFiles(b)
		l.ServerConfig = tls.ServerConfig{TLSCert: pki.serverCert, TLSKey: pki.serverKey, TLSAllowedCACerts: []string{pki.ca}}
		o.URLs = []string{"https://" + addr}
		o.ClientConfig = tls.ClientConfig{TLSCA: pki.ca, TLSCert: pki.clientCert, TLSKey: pki.clientKey}
	}
	acc := &countingAcc{}
	must(b, l.Init())
	must(b, l.Start(acc))
	b.Cleanup(l.Stop)
	must(b, o.Init())
	must(b, o.Connect())
	b.Cleanup(func() { o.Close() })
	p := &pipeline{out: o, acc: acc}
	p.warmUp(b)
	return p
}

// warmUp writes one batch, so that the connection (and its handshake) is
// not part of the measurement, and checks that it arrived.
func (p *pipeline) warmUp(b testing.TB) {
	b.Helper()
	batch := workload(100)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := p.out.Write(batch)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("warm-up write: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := p.acc.metrics.Load(); n != int64(len(batch)) {
		b.Fatalf("warm-up: the listener got %d metrics, want %d", n, len(batch))
	}
	p.acc.metrics.Store(0)
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time this process used since start, per
// iteration, as cpu-ns/op. With -cpu 1 and one goroutine at work, that is
// the cost of an iteration on one core, which other processes on a busy
// machine inflate far less than they inflate the wall clock of ns/op.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}

func must(b testing.TB, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// tlsFiles are the PEM files of a CA, a server certificate for 127.0.0.1
// and a client certificate, all ECDSA P-256, as an operator would make for
// mutual TLS.
type tlsFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

func newTLSFiles(b testing.TB) tlsFiles {
	b.Helper()
	dir := b.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		ockamtest.WriteFile(b, path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
		return path
	}
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(b, err)
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(b, err)
	ca, err := x509.ParseCertificate(caDER)
	must(b, err)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (cert, keyFile string) {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		must(b, err)
		kder, err := x509.MarshalECPrivateKey(k)
		must(b, err)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kder)
	}
	f := tlsFiles{ca: write("ca.crt", "CERTIFICATE", caDER)}
	f.serverCert, f.serverKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	f.clientCert, f.clientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return f
}
