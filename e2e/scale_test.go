package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
)

// The scaled-out topology of docs/SCALING.md, on loopback: devices →
// HAProxy (TCP) → three gateways (inputs.ockam_listener → outputs.nats) →
// a JetStream stream replicated on three nats-server nodes → consumers
// (inputs.nats_consumer → outputs.influxdb_v2) → influxd. The configurations
// are deploy/scale/*.tmpl, shared with scripts/scale-demo.sh.

const (
	// scaleStream and scaleSubject are the stream and subject of
	// deploy/scale/gateway.conf.tmpl and consumer.conf.tmpl.
	scaleStream  = "OCKAM_METRICS"
	scaleSubject = "ockam.metrics"
	// scaleConsumer is the durable consumer inputs.nats_consumer creates:
	// named after its queue_group.
	scaleConsumer = "influxdb_writers"
)

var (
	// natsReady: nats-server is bound and serving clients.
	natsReady = regexp.MustCompile(`Server is ready`)
	// deviceChannelOpen: outputs.ockam opened a channel to a gateway.
	deviceChannelOpen = regexp.MustCompile(`\[outputs\.ockam\] Channel open to listener (I[0-9a-f]{8}…)`)
	// deviceWrites: a batch the device's gateway acknowledged.
	deviceWrites = regexp.MustCompile(`\[outputs\.ockam\] Wrote batch of (\d+) metrics`)
	// consumerWrites: a batch a consumer wrote to InfluxDB.
	consumerWrites = regexp.MustCompile(`\[outputs\.influxdb_v2\] Wrote batch of (\d+) metrics`)
)

// scaleTools are the third-party engines of the topology.
type scaleTools struct {
	haproxy    string
	natsServer string
}

// requireScaleTools finds HAProxy (HAPROXY, else haproxy in PATH or
// /usr/sbin) and nats-server (NATS_SERVER, else ../.tools/bin/nats-server,
// where make puts it). Call it after requireBinaries.
func requireScaleTools(t *testing.T) scaleTools {
	t.Helper()
	haproxy := os.Getenv("HAPROXY")
	if haproxy == "" {
		if p, err := exec.LookPath("haproxy"); err == nil {
			haproxy = p
		} else {
			haproxy = "/usr/sbin/haproxy"
		}
	}
	return scaleTools{
		haproxy:    executable(t, haproxy),
		natsServer: executable(t, envOr("NATS_SERVER", filepath.Join("..", ".tools", "bin", "nats-server"))),
	}
}

// natsNode is one nats-server of the cluster. It can be killed and started
// again on the same ports and store.
type natsNode struct {
	t      *testing.T
	bin    string
	name   string
	data   map[string]string
	proc   *process
	starts int
}

// start runs the node until it is ready.
func (n *natsNode) start() {
	n.t.Helper()
	n.launch()
	n.proc.waitLog(natsReady, 30*time.Second)
}

// launch renders the node's configuration and runs it.
func (n *natsNode) launch() {
	n.t.Helper()
	n.starts++
	conf := filepath.Join(n.t.TempDir(), n.name+".conf")
	renderTemplate(n.t, "scale/nats.conf.tmpl", conf, n.data)
	n.proc = startProcess(n.t, fmt.Sprintf("%s-%d", n.name, n.starts), n.bin, "-c", conf)
}

// url is the node's client URL.
func (n *natsNode) url() string { return "nats://" + n.data["ClientAddr"] }

// gatewayProc is a gateway's Telegraf. It can be killed and started again
// on the same port.
type gatewayProc struct {
	t      *testing.T
	bin    string
	index  int // 1, 2, 3: gateway-N in haproxy.cfg.tmpl
	member *member
	data   map[string]string
	proc   *process
	starts int
}

// start renders the configuration, runs Telegraf and waits until the
// listener is bound as the gateway's identity.
func (g *gatewayProc) start() {
	g.t.Helper()
	g.starts++
	conf := filepath.Join(g.t.TempDir(), "gateway.conf")
	renderTemplate(g.t, "scale/gateway.conf.tmpl", conf, g.data)
	g.proc = startProcess(g.t, fmt.Sprintf("gateway-%d-%d", g.index, g.starts), g.bin, "--config", conf)
	m := g.proc.waitLog(listeningOckam, 30*time.Second)
	if m[2] != g.member.id {
		g.t.Fatalf("gateway-%d runs as %s, want %s", g.index, m[2], g.member.id)
	}
}

// addr is host:port of the gateway's listener.
func (g *gatewayProc) addr() string { return g.data["ListenAddress"] }

// scaleTopology is everything but the devices.
type scaleTopology struct {
	t         *testing.T
	bin       binaries
	tools     scaleTools
	cli       *ockamCLI
	authority *member
	authDB    string // the authority service's store
	db        *influxDB
	nats      []*natsNode
	natsURLs  string // TOML array of the nodes' client URLs
	js        jetstream.JetStream
	gateways  []*gatewayProc
	proxy     *process
	proxyConf string
	proxyAddr string
	consumers []*process
	proxyRuns int // HAProxy starts, to name their logs
}

// startScaleTopology starts influxd, the authority service, three NATS
// nodes with the stream, three gateways with credentials from the
// authority, HAProxy in front of them and the given number of consumer
// Telegrafs.
func startScaleTopology(t *testing.T, consumers int) *scaleTopology {
	t.Helper()
	s := &scaleTopology{t: t, bin: requireBinaries(t)}
	s.tools = requireScaleTools(t)
	s.db = startInfluxDB(t, s.bin.influxd)
	s.cli = newOckamCLI(t, s.bin.ockam)
	s.authority = s.cli.identity("authority", "")

	// The authority service: the gateways' one revocation source.
	var authAddr string
	_, s.authDB, authAddr = s.cli.serveAuthority(s.authority)

	s.startNATS()
	var urls []string
	for _, n := range s.nats {
		urls = append(urls, strconv.Quote(n.url()))
	}
	s.natsURLs = "[" + strings.Join(urls, ", ") + "]"

	for i := 1; i <= 3; i++ {
		m := s.cli.identity(fmt.Sprintf("gateway-%d", i), "")
		s.cli.issue(s.authority, m, "720h", "role=listener")
		g := &gatewayProc{t: t, bin: s.bin.telegraf, index: i, member: m, data: map[string]string{
			"ListenAddress":     freeport.Addr(t),
			"VaultPath":         m.vault,
			"VaultPassphrase":   "",
			"CredentialPath":    m.credential,
			"AuthorityPath":     s.authority.identity,
			"RevocationSource":  authAddr,
			"AllowMeasurements": `["e2e_*"]`,
			"NatsServers":       s.natsURLs,
			"FlushInterval":     "1s",
		}}
		g.start()
		s.gateways = append(s.gateways, g)
	}
	s.proxyAddr = freeport.Addr(t)
	s.proxyConf = filepath.Join(t.TempDir(), "haproxy.cfg")
	renderTemplate(t, "scale/haproxy.cfg.tmpl", s.proxyConf, map[string]string{
		"Bind":     s.proxyAddr,
		"Gateway1": s.gateways[0].addr(),
		"Gateway2": s.gateways[1].addr(),
		"Gateway3": s.gateways[2].addr(),
	})
	s.startProxy()

	conf := filepath.Join(t.TempDir(), "consumer.conf")
	renderTemplate(t, "scale/consumer.conf.tmpl", conf, map[string]string{
		"NatsServers": s.natsURLs,
		"InfluxURL":   s.db.url(),
		"Bucket":      bucket,
	})
	for i := 1; i <= consumers; i++ {
		c := startProcess(t, fmt.Sprintf("consumer-%d", i), s.bin.telegraf, "--config", conf)
		c.waitLog(regexp.MustCompile(`\[inputs\.nats_consumer\] Started the NATS consumer service`), 60*time.Second)
		s.consumers = append(s.consumers, c)
	}
	return s
}

// startNATS starts the three nodes, waits until they elected a JetStream
// metadata leader, and creates the stream as the gateways' outputs.nats
// would (they create or update it too; creating it here first means no
// gateway races the election).
func (s *scaleTopology) startNATS() {
	t := s.t
	t.Helper()
	client, cluster := make([]string, 3), make([]string, 3)
	var routes []string
	for i := range 3 {
		client[i], cluster[i] = freeport.Addr(t), freeport.Addr(t)
		routes = append(routes, strconv.Quote("nats-route://"+cluster[i]))
	}
	for i := range 3 {
		n := &natsNode{t: t, bin: s.tools.natsServer, name: fmt.Sprintf("nats-%d", i+1), data: map[string]string{
			"Name":        fmt.Sprintf("nats-%d", i+1),
			"ClientAddr":  client[i],
			"ClusterAddr": cluster[i],
			"Routes":      strings.Join(routes, ", "),
			"StoreDir":    t.TempDir(),
		}}
		s.nats = append(s.nats, n)
	}
	for _, n := range s.nats { // all at once: each waits for the others' routes
		n.launch()
	}
	for _, n := range s.nats {
		n.proc.waitLog(natsReady, 30*time.Second)
	}

	var urls []string
	for _, n := range s.nats {
		urls = append(urls, n.url())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the stream "+scaleStream+" with 3 replicas", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:      scaleStream,
			Subjects:  []string{scaleSubject},
			Replicas:  3,
			Storage:   jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy,
			Discard:   jetstream.DiscardOld,
		})
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

// startProxy runs HAProxy and waits until it reports every gateway up.
func (s *scaleTopology) startProxy() {
	s.t.Helper()
	s.proxyRuns++
	s.proxy = startProcess(s.t, fmt.Sprintf("haproxy-%d", s.proxyRuns), s.tools.haproxy, "-db", "-f", s.proxyConf)
	s.waitProxyAlive()
}

// waitProxyAlive waits until HAProxy accepts connections.
func (s *scaleTopology) waitProxyAlive() {
	s.t.Helper()
	eventually(s.t, 30*time.Second, "HAProxy at "+s.proxyAddr, func() (bool, string) {
		c, err := dialTCP(s.proxyAddr)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

// dialTCP opens a TCP connection to addr.
func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }

// streamInfo returns the stream's state and cluster information.
func (s *scaleTopology) streamInfo() (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, scaleStream)
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

// backlog is what a consumer has yet to get acked.
type backlog struct{ msgs, bytes uint64 }

// consumerBacklog returns how many messages of the stream the consumers'
// durable consumer (queue_group of consumer.conf.tmpl) has not had acked
// yet: not delivered, or delivered and awaiting the ack. Bytes are the
// stream's, as an order of magnitude.
func (s *scaleTopology) consumerBacklog() backlog {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.js.PushConsumer(ctx, scaleStream, scaleConsumer)
	if err != nil {
		s.t.Fatalf("consumer %s: %v", scaleConsumer, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		s.t.Fatalf("consumer %s: %v", scaleConsumer, err)
	}
	st, err := s.streamInfo()
	if err != nil {
		s.t.Fatalf("stream %s: %v", scaleStream, err)
	}
	msgs := info.NumPending + uint64(info.NumAckPending)
	var bytes uint64
	if st.State.Msgs > 0 {
		bytes = st.State.Bytes * msgs / st.State.Msgs
	}
	return backlog{msgs: msgs, bytes: bytes}
}

// gatewayOf returns the gateway whose short identifier is short.
func (s *scaleTopology) gatewayOf(short string) *gatewayProc {
	for _, g := range s.gateways {
		if strings.HasPrefix(g.member.id, strings.TrimSuffix(short, "…")) {
			return g
		}
	}
	s.t.Fatalf("no gateway is %s", short)
	return nil
}

// scaleDevice is a device's Telegraf behind HAProxy with a controllable
// stream: points handed out perRun at a time until stopped.
type scaleDevice struct {
	member *member
	pts    []point
	stream *controlledStream
	proc   *process
}

// startDevice starts a device for m sending pts through HAProxy, perRun
// points every 500 ms.
func (s *scaleTopology) startDevice(m *member, pts []point, perRun int) *scaleDevice {
	s.t.Helper()
	d := &scaleDevice{member: m, pts: pts, stream: newControlledStream(s.t, pts, perRun)}
	conf := filepath.Join(s.t.TempDir(), m.name+".conf")
	renderTemplate(s.t, "scale/device.conf.tmpl", conf, map[string]string{
		"Interval":        "500ms",
		"Inputs":          d.stream.inputs,
		"ProxyAddress":    s.proxyAddr,
		"VaultPath":       m.vault,
		"VaultPassphrase": m.passphrase,
		"CredentialPath":  m.credential,
		"AuthorityPath":   s.authority.identity,
	})
	d.proc = startProcess(s.t, m.name, s.bin.telegraf, "--config", conf)
	return d
}

// gateway returns the short identifier of the gateway the device's channel
// was last opened to, or "" if none yet.
func (d *scaleDevice) gateway() string {
	all := deviceChannelOpen.FindAllStringSubmatch(d.proc.text(), -1)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1][1]
}

// acked returns how many metrics the device's gateways acknowledged.
func (d *scaleDevice) acked() int { return sumMatches(deviceWrites, d.proc) }

// sumMatches adds up the first submatch (an integer) of every match of re
// in the logs of procs.
func sumMatches(re *regexp.Regexp, procs ...*process) int {
	n := 0
	for _, p := range procs {
		for _, m := range re.FindAllStringSubmatch(p.text(), -1) {
			k, _ := strconv.Atoi(m[1])
			n += k
		}
	}
	return n
}

// controlScript is execScript with a rate the test controls: each run
// prints the next K lines, K read from a file, and appends the K it used to
// a log, so the test knows when a change of K took effect.
const controlScript = `#!/bin/sh
# usage: next.sh DATA STATE KFILE RUNS
set -e
pos=$(cat "$2" 2>/dev/null || echo 0)
k=$(cat "$3")
tail -n "+$((pos + 1))" "$1" | head -n "$k"
echo $((pos + k)) >"$2.tmp" && mv "$2.tmp" "$2"
echo "$k" >>"$4"
`

// controlledStream hands a device's inputs.exec the next points of a
// sequence, perRun at each run, until stopped.
type controlledStream struct {
	t      *testing.T
	n      int
	dir    string
	inputs string // the [[inputs.exec]] section
}

func newControlledStream(t *testing.T, pts []point, perRun int) *controlledStream {
	t.Helper()
	c := &controlledStream{t: t, n: len(pts), dir: t.TempDir()}
	lines := make([]string, len(pts))
	for i, p := range pts {
		lines[i] = p.sent()
	}
	files := map[string]string{
		"next.sh":   controlScript,
		"points.lp": strings.Join(lines, "\n") + "\n",
		"k":         strconv.Itoa(perRun) + "\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), []byte(text), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	c.inputs = fmt.Sprintf(`[[inputs.exec]]
  commands = [["/bin/sh", %q, %q, %q, %q, %q]]
  timeout = "5s"
  data_format = "influx"`, c.path("next.sh"), c.path("points.lp"), c.path("position"), c.path("k"), c.path("runs"))
	return c
}

func (c *controlledStream) path(name string) string { return filepath.Join(c.dir, name) }

// stop hands out nothing more and returns how many points were handed out,
// once a run has seen the change (the runs before it have ended: Telegraf
// runs one gather of an input at a time).
func (c *controlledStream) stop() int {
	c.t.Helper()
	if err := os.WriteFile(c.path("k"), []byte("0\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	eventually(c.t, 30*time.Second, "the device's stream to stop", func() (bool, string) {
		b, _ := os.ReadFile(c.path("runs"))
		lines := strings.Fields(string(b))
		return len(lines) > 0 && lines[len(lines)-1] == "0", ""
	})
	b, err := os.ReadFile(c.path("position"))
	if err != nil {
		c.t.Fatal(err)
	}
	pos, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		c.t.Fatal(err)
	}
	return min(pos, c.n)
}
