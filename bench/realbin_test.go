package bench

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/influxdata/telegraf/plugins/serializers/influx"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
)

// realMetrics is how many metrics BenchmarkRealBinaries sends through each
// pipeline: 40 batches of realBatch.
const (
	realMetrics = 200_000
	realBatch   = 5000
)

// realPipe is one pipeline of BenchmarkRealBinaries.
type realPipe struct {
	name string // the metric is name+"-metrics/s"
	kind string // pipeOckam, pipeV2, pipeOckamd or "influxd-direct"
	// batch is the device's metric_batch_size; gatewayBatch the gateway
	// Telegraf's.
	batch, gatewayBatch int
	// delay is added each way between device and gateway by a proxy
	// (delayProxy): half a round trip.
	delay time.Duration
	// maxMessage is outputs.ockam's max_message_size; "" for its default.
	maxMessage string
	// tagged: the influxdb_v2 gateway stamps a tag the size of the one
	// the ockam gateways stamp (ockam_identity and the identifier) on every
	// metric, with processors.override: what the verified identity costs
	// the gateway's write and influxd, without the guarantee.
	tagged bool
	// untagged: the ockam gateway stamps no tag (identity_tag = ""): what
	// the guarantee and the channel cost without the tag.
	untagged bool
}

// pipeOckamd: the device's outputs.ockam into ockamd, which writes each
// message to influxd itself, several at once.
const pipeOckamd = "ockamd"

// realPipes are the pipelines of BenchmarkRealBinaries, in the order each
// iteration runs them. The ockam rows with a delay are compared with the
// row of the same batch size without one.
var realPipes = []realPipe{
	{name: pipeOckam, kind: pipeOckam, batch: realBatch, gatewayBatch: realGatewayBatch},
	{name: pipeV2, kind: pipeV2, batch: realBatch, gatewayBatch: realBatch},
	{name: pipeOckamd, kind: pipeOckamd, batch: realBatch},
	{name: "influxd-direct", kind: "influxd-direct", batch: realBatch},
	{name: pipeOckam + "-50ms", kind: pipeOckam, batch: realBatch, gatewayBatch: realGatewayBatch, delay: 50 * time.Millisecond},
	{name: pipeOckam + "-batch50000", kind: pipeOckam, batch: 50000, gatewayBatch: realGatewayBatch},
	{name: pipeOckam + "-batch50000-50ms", kind: pipeOckam, batch: 50000, gatewayBatch: realGatewayBatch, delay: 50 * time.Millisecond},
	{name: pipeV2 + "-tagged", kind: pipeV2, batch: realBatch, gatewayBatch: realBatch, tagged: true},
	{name: pipeOckam + "-untagged", kind: pipeOckam, batch: realBatch, gatewayBatch: realGatewayBatch, untagged: true},
	{name: pipeV2 + "-batch50000", kind: pipeV2, batch: 50000, gatewayBatch: realBatch},
	{name: pipeV2 + "-tagged-batch50000", kind: pipeV2, batch: 50000, gatewayBatch: realBatch, tagged: true},
	{name: pipeOckam + "-untagged-batch50000", kind: pipeOckam, batch: 50000, gatewayBatch: realGatewayBatch, untagged: true},
	{name: pipeOckamd + "-batch50000", kind: pipeOckamd, batch: 50000},
	{name: pipeOckamd + "-batch50000-1MiB", kind: pipeOckamd, batch: 50000, maxMessage: "1MiB"},
	{name: pipeOckamd + "-batch50000-50ms", kind: pipeOckamd, batch: 50000, delay: 50 * time.Millisecond},
}

// realGatewayBatch is the ockam gateways' metric_batch_size: the device's
// (5000), as for influxdb_v2. Smaller gateway batches, to write a message to
// influxd while the next is parsed, were slower on this machine
// (docs/BENCHMARKS.md, "Real binaries").
const realGatewayBatch = realBatch

// realGatewayFlush is both gateway Telegrafs' flush_interval. A device's
// ack waits until the gateway wrote its metrics, and the gateway writes a
// batch when metric_batch_size metrics are in, or when flush_interval
// ticks. A tick also writes a partial batch, after which the gateway's
// batches no longer end where a device's does, and the tail of a device's
// batch waits for the next tick: at 1 s, a device at batch 50000 ran at
// 81k metrics/s, at 100 ms at 106k (3 runs each, 2026-12-05);
// influxdb_v2's rate did not change (124k and 128k). BENCH_GATEWAY_FLUSH
// sets another.
const realGatewayFlush = "100ms"

// BenchmarkRealBinaries runs each pipeline through real processes: a device
// Telegraf (bin/telegraf --once, reading the workload with inputs.file)
// sends to a gateway (a Telegraf, or ockamd), which writes to influxd 1.8.
// "influxd-direct" posts the same batches to influxd from this process, one
// at a time: the ceiling of a single writer. The figure is the rate at
// which points are written into influxd (its httpd pointsWrittenOK counter,
// polled), from the first point to the last. Each iteration runs the
// pipelines of realPipes in turn, on one influxd; each reports the median
// of its runs. BENCH_REAL_PIPES (names, comma-separated) runs only some;
// BENCH_KEEP_LOGS=DIR keeps the processes' logs there, at debug level (each
// Telegraf output logs how long each batch's Write took).
//
// outputs.ockam waits for each batch's ack, which the listener (or ockamd)
// sends after the gateway wrote the batch's messages to influxd;
// inputs.influxdb_v2_listener answers as soon as it parsed a batch, so the
// device's next batch overlaps the gateway's write. Telegraf calls an
// output's Write serially: an ockam device has at most one batch in flight,
// so a round trip added by the network (the -50ms rows: 50 ms each way)
// costs each batch that much. It needs OCKAM_BIN (the directory of the
// custom telegraf and ockamd) and INFLUXD; make bench sets both.
func BenchmarkRealBinaries(b *testing.B) {
	binDir, influxd := os.Getenv("OCKAM_BIN"), os.Getenv("INFLUXD")
	if binDir == "" || influxd == "" {
		b.Skip("set OCKAM_BIN and INFLUXD (make bench does)")
	}
	binDir, err := filepath.Abs(binDir)
	must(b, err)
	db := startInfluxd(b, influxd)
	input := filepath.Join(b.TempDir(), "workload.lp")
	writeLineProtocol(b, input, realMetrics)

	pipes := realPipes
	if only := os.Getenv("BENCH_REAL_PIPES"); only != "" {
		pipes = slices.DeleteFunc(slices.Clone(pipes), func(p realPipe) bool {
			return !slices.Contains(strings.Split(only, ","), p.name)
		})
	}
	rates := make([][]float64, len(pipes))
	cpus := make([][3][]float64, len(pipes)) // device, gateway, influxd
	for b.Loop() {
		for i, p := range pipes {
			database := fmt.Sprintf("bench_%d", collectors.Add(1))
			db.query(b, "CREATE DATABASE "+database)
			base, err := db.pointsWritten()
			must(b, err)
			watch := db.watch(base, realMetrics)
			influxdCPU := processCPU(b, db.process)
			var device, gateway time.Duration
			if p.kind == "influxd-direct" {
				db.postFile(b, database, input)
			} else {
				device, gateway = runPipeline(b, p, binDir, input, db, database)
			}
			elapsed, err := (<-watch)()
			must(b, err)
			influxdCPU = processCPU(b, db.process) - influxdCPU
			for j, t := range []time.Duration{device, gateway, influxdCPU} {
				cpus[i][j] = append(cpus[i][j], t.Seconds()*1e6/realMetrics)
			}
			if got := db.count(b, database); got != realMetrics {
				b.Fatalf("%s: influxd holds %d points, want %d", p.name, got, realMetrics)
			}
			// Its snapshots and compactions would run during the next
			// pipeline and count as its CPU: drop it, and wait until
			// influxd is idle.
			db.query(b, "DROP DATABASE "+database)
			db.settle(b)
			rates[i] = append(rates[i], float64(realMetrics)/elapsed.Seconds())
		}
	}
	b.ReportMetric(0, "ns/op") // the setup, mostly
	for i, p := range pipes {
		b.ReportMetric(median(rates[i]), p.name+"-metrics/s")
		for j, unit := range []string{"-device-cpu-s/1M", "-gateway-cpu-s/1M", "-influxd-cpu-s/1M"} {
			if p.kind == "influxd-direct" && j < 2 {
				continue
			}
			b.ReportMetric(median(cpus[i][j]), p.name+unit)
		}
	}
}

// median sorts xs and returns its middle value (the upper one of an even
// count).
func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// runPipeline runs the gateway and then the device, and waits until the
// device has written everything. It returns the CPU time each spent: the
// device in its whole run (reading and parsing the workload included, the
// same in every pipeline), the gateway from the moment it listened until
// it stopped.
func runPipeline(b *testing.B, p realPipe, binDir, input string, db *influxdb, database string) (device, gateway time.Duration) {
	telegraf := filepath.Join(binDir, "telegraf")
	addr := ockamtest.FreeAddr(b)
	conf := map[string]string{
		"Addr": addr, "DeviceAddr": addr, "Input": input, "Influx": db.url, "Database": database,
		"Batch": fmt.Sprint(p.batch), "GatewayBatch": fmt.Sprint(p.gatewayBatch),
		"Buffer": fmt.Sprint(2 * realMetrics), "MaxMessage": cmp.Or(p.maxMessage, "256KiB"),
		"Debug":        fmt.Sprint(os.Getenv("BENCH_KEEP_LOGS") != ""),
		"GatewayFlush": cmp.Or(os.Getenv("BENCH_GATEWAY_FLUSH"), realGatewayFlush),
		"IdentityTag":  "ockam_identity",
	}
	if p.untagged {
		conf["IdentityTag"] = ""
	}
	gatewayTmpl, deviceTmpl := v2Gateway, v2Device
	if p.kind != pipeV2 {
		fleet := ockamtest.NewFleet(b)
		gateway := fleet.Enroll(b, "gateway", map[string]string{"role": "listener"})
		device := fleet.Enroll(b, "device", map[string]string{"role": "sensor"})
		conf["Authority"] = fleet.AuthorityFile
		conf["GatewayVault"], conf["GatewayCred"] = gateway.VaultPath, gateway.CredentialPath
		conf["DeviceVault"], conf["DeviceCred"] = device.VaultPath, device.CredentialPath
		gatewayTmpl, deviceTmpl = ockamGateway, ockamDevice
	}
	if p.tagged {
		gatewayTmpl += identitySizedTag
	}
	var gw *process
	if p.kind == pipeOckamd {
		gw = startProcess(b, "ockamd", filepath.Join(binDir, "ockamd"), "--config", render(b, ockamdGateway, conf))
	} else {
		gw = startProcess(b, "gateway", telegraf, "--config", render(b, gatewayTmpl, conf))
	}
	waitListening(b, gw, addr)
	gatewayCPU := processCPU(b, gw)
	if p.delay > 0 {
		conf["DeviceAddr"] = startDelayProxy(b, addr, p.delay)
	}
	dev := startProcess(b, "device", telegraf, "--once", "--config", render(b, deviceTmpl, conf))
	if err := dev.wait(3 * time.Minute); err != nil {
		b.Fatalf("device: %v\n%s", err, dev.tail())
	}
	if d := os.Getenv("BENCH_KEEP_LOGS"); d != "" {
		data, _ := os.ReadFile(dev.log)
		_ = os.WriteFile(filepath.Join(d, fmt.Sprintf("device-%s.log", p.name)), data, 0o644)
	}
	gatewayCPU = processCPU(b, gw) - gatewayCPU
	gw.stop(b)
	return dev.cmd.ProcessState.UserTime() + dev.cmd.ProcessState.SystemTime(), gatewayCPU
}

// The configurations. Both gateway Telegrafs write to influxd with
// outputs.influxdb_v2's defaults (gzip), in batches of GatewayBatch.
const agentConf = `[agent]
  interval = "1h"
  flush_interval = "1s"
  flush_jitter = "0s"
  metric_batch_size = {{.Batch}}
  metric_buffer_limit = {{.Buffer}}
  omit_hostname = true
  debug = {{.Debug}}
`

const gatewayAgentConf = `[agent]
  interval = "1h"
  flush_interval = "{{.GatewayFlush}}"
  flush_jitter = "0s"
  metric_batch_size = {{.GatewayBatch}}
  metric_buffer_limit = {{.Buffer}}
  omit_hostname = true
  debug = {{.Debug}}
`

const toInfluxd = `
[[outputs.influxdb_v2]]
  urls = ["{{.Influx}}"]
  token = ""
  organization = ""
  bucket = "{{.Database}}/autogen"
  timeout = "30s"
`

const fileInput = `
[[inputs.file]]
  files = ["{{.Input}}"]
  data_format = "influx"
`

var (
	ockamGateway = gatewayAgentConf + `
[[inputs.ockam_listener]]
  service_address = "tcp://{{.Addr}}"
  vault_path = "{{.GatewayVault}}"
  credential_path = "{{.GatewayCred}}"
  authority_paths = ["{{.Authority}}"]
  identity_tag = "{{.IdentityTag}}"
` + toInfluxd
	ockamDevice = agentConf + fileInput + `
[[outputs.ockam]]
  address = "tcp://{{.DeviceAddr}}"
  vault_path = "{{.DeviceVault}}"
  credential_path = "{{.DeviceCred}}"
  authority_path = "{{.Authority}}"
  max_message_size = "{{.MaxMessage}}"
  timeout = "30s"
`
	v2Gateway = gatewayAgentConf + `
[[inputs.influxdb_v2_listener]]
  service_address = "{{.Addr}}"
` + toInfluxd
	v2Device = agentConf + fileInput + `
[[outputs.influxdb_v2]]
  urls = ["http://{{.DeviceAddr}}"]
  token = ""
  organization = ""
  bucket = "device"
  timeout = "30s"
`
)

// identitySizedTag stamps, on the influxdb_v2 gateway, a tag as long as
// the verified identity tag of the ockam gateways (an identifier is "I"
// and 64 hex digits).
const identitySizedTag = `
[[processors.override]]
  [processors.override.tags]
    ockam_identity = "I0000000000000000000000000000000000000000000000000000000000000000"
`

// ockamdGateway is ockamd with its defaults (max_parallel_writes 4).
const ockamdGateway = `quiet = true

[listener]
  service_address = "tcp://{{.Addr}}"
  vault_path = "{{.GatewayVault}}"
  credential_path = "{{.GatewayCred}}"
  authority_paths = ["{{.Authority}}"]

[influxdb]
  url = "{{.Influx}}"
  bucket = "{{.Database}}/autogen"
  timeout = "30s"
`

// render writes a configuration and returns its path.
func render(b testing.TB, text string, data map[string]string) string {
	var out bytes.Buffer
	must(b, template.Must(template.New("conf").Option("missingkey=error").Parse(text)).Execute(&out, data))
	path := filepath.Join(b.TempDir(), "telegraf.conf")
	ockamtest.WriteFile(b, path, out.Bytes())
	return path
}

// writeLineProtocol writes n metrics of the workload to path.
func writeLineProtocol(b testing.TB, path string, n int) {
	s := &influx.Serializer{}
	must(b, s.Init())
	out, err := s.SerializeBatch(workload(n))
	must(b, err)
	ockamtest.WriteFile(b, path, out)
}

// waitListening waits until addr accepts connections.
func waitListening(b testing.TB, p *process, addr string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if p.exited() || time.Now().After(deadline) {
			b.Fatalf("%s does not listen on %s:\n%s", p.name, addr, p.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// process is a child process with its output in a file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when it exited
	err  error         // its exit, once done is closed
}

func startProcess(b testing.TB, name, bin string, args ...string) *process {
	p := &process{name: name, log: filepath.Join(b.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	must(b, err)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	must(b, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	b.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit.
func (p *process) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

// stop sends SIGTERM and waits.
func (p *process) stop(b testing.TB) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(30 * time.Second); err != nil {
		b.Errorf("%s: %v\n%s", p.name, err, p.tail())
	}
	if d := os.Getenv("BENCH_KEEP_LOGS"); d != "" {
		data, _ := os.ReadFile(p.log)
		_ = os.WriteFile(filepath.Join(d, fmt.Sprintf("%s-%d.log", p.name, time.Now().UnixNano())), data, 0o644)
	}
}

// tail returns the end of the process's log.
func (p *process) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// influxdb is an influxd 1.8 on loopback, with its data in a temporary
// directory.
type influxdb struct {
	url     string
	process *process
}

var listeningHTTP = regexp.MustCompile(`msg="Listening on HTTP".* addr=(\S+)`)

// startInfluxd starts influxd with deploy/influxdb.conf.tmpl.
func startInfluxd(b testing.TB, bin string) *influxdb {
	dir := b.TempDir()
	tmpl, err := os.ReadFile("../deploy/influxdb.conf.tmpl")
	must(b, err)
	conf := filepath.Join(dir, "influxdb.conf")
	ockamtest.WriteFile(b, conf, []byte(strings.NewReplacer("{{.Dir}}", dir, "{{.HTTPBind}}", "127.0.0.1:0").Replace(string(tmpl))))
	p := startProcess(b, "influxd", bin, "-config", conf)
	deadline := time.Now().Add(60 * time.Second) // Flux takes seconds to start
	for {
		data, _ := os.ReadFile(p.log)
		if m := listeningHTTP.FindSubmatch(data); m != nil {
			db := &influxdb{url: "http://" + string(m[1]), process: p}
			for time.Now().Before(deadline) {
				if resp, err := http.Get(db.url + "/ping"); err == nil {
					resp.Body.Close()
					return db
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		if p.exited() || time.Now().After(deadline) {
			b.Fatalf("influxd did not start:\n%s", p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// queryResult is the part of an InfluxQL response read here.
type queryResult struct {
	Results []struct {
		Error  string
		Series []struct {
			Columns []string
			Values  [][]any
		}
	}
}

// query runs an InfluxQL statement; params are more form fields, in pairs.
func (db *influxdb) query(b testing.TB, q string, params ...string) queryResult {
	r, err := db.tryQuery(q, params...)
	must(b, err)
	return r
}

func (db *influxdb) tryQuery(q string, params ...string) (queryResult, error) {
	form := url.Values{"q": {q}}
	for i := 0; i+1 < len(params); i += 2 {
		form.Set(params[i], params[i+1])
	}
	var r queryResult
	resp, err := http.PostForm(db.url+"/query", form)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("%s: %w", q, err)
	}
	for _, res := range r.Results {
		if res.Error != "" {
			return r, fmt.Errorf("%s: %s", q, res.Error)
		}
	}
	return r, nil
}

// pointsWritten returns influxd's count of points written over HTTP.
func (db *influxdb) pointsWritten() (int64, error) {
	r, err := db.tryQuery("SHOW STATS FOR 'httpd'")
	if err != nil {
		return 0, err
	}
	for _, res := range r.Results {
		for _, s := range res.Series {
			for i, c := range s.Columns {
				if n, ok := s.Values[0][i].(float64); c == "pointsWrittenOK" && ok {
					return int64(n), nil
				}
			}
		}
	}
	return 0, errors.New("influxd reports no pointsWrittenOK")
}

// watch polls pointsWritten and sends the time from the first point above
// base to base+n, or an error.
func (db *influxdb) watch(base, n int64) <-chan func() (time.Duration, error) {
	out := make(chan func() (time.Duration, error), 1)
	go func() {
		var first time.Time
		for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
			now := time.Now()
			got, err := db.pointsWritten()
			if err != nil {
				out <- func() (time.Duration, error) { return 0, err }
				return
			}
			if got -= base; got > 0 && first.IsZero() {
				first = now
			}
			if got >= n {
				out <- func() (time.Duration, error) { return now.Sub(first), nil }
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		out <- func() (time.Duration, error) { return 0, fmt.Errorf("fewer than %d points written in 5 minutes", n) }
	}()
	return out
}

// settle waits until influxd spends less than 2 % of a CPU, over 500 ms,
// for at most 30 s.
func (db *influxdb) settle(b testing.TB) {
	const window = 500 * time.Millisecond
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		before := processCPU(b, db.process)
		time.Sleep(window)
		if processCPU(b, db.process)-before <= window/50 {
			return
		}
	}
}

// count returns the number of points in database.
func (db *influxdb) count(b testing.TB, database string) int64 {
	r := db.query(b, `SELECT count("uptime") FROM /.*/`, "db", database)
	var n int64
	for _, res := range r.Results {
		for _, s := range res.Series {
			for _, v := range s.Values {
				n += int64(v[1].(float64))
			}
		}
	}
	return n
}

// postFile posts the line protocol in path to database in batches of
// realBatch lines, one at a time.
func (db *influxdb) postFile(b testing.TB, database, path string) {
	data, err := os.ReadFile(path)
	must(b, err)
	lines := bytes.SplitAfter(data, []byte("\n"))
	for i := 0; i < len(lines); i += realBatch {
		body := bytes.Join(lines[i:min(i+realBatch, len(lines))], nil)
		resp, err := http.Post(db.url+"/write?db="+database, "text/plain", bytes.NewReader(body))
		must(b, err)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			b.Fatalf("influxd write: %s", resp.Status)
		}
	}
}
