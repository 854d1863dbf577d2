package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/testutil"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// idleChannels is how many channels BenchmarkIdleChannels opens, if the
// file descriptor limit allows.
const idleChannels = 10_000

// childEnv makes the test binary the listener process of
// BenchmarkIdleChannels (TestIdleListenerChild); its value is the
// listener's configuration as JSON.
const childEnv = "OCKAM_BENCH_IDLE_LISTENER"

// idleConfig is what the child needs to run the listener.
type idleConfig struct {
	Address, VaultPath, CredentialPath, AuthorityFile string
	MaxConnections                                    int
}

// memory is what the child reports: its resident set and what the Go
// runtime holds, all in bytes.
type memory struct {
	RSS, Heap, Stacks, Goroutines uint64
}

// BenchmarkIdleChannels measures the memory an idle channel costs the
// listener: a child process runs inputs.ockam_listener alone; this process
// opens idleChannels channels to it, sends one message of idleMessage bytes
// on each (a device's channel between two flushes has carried data, so its
// buffers have seen a full-size frame) and leaves them idle. The child
// reports its resident set (after a garbage collection that returns what
// it freed to the OS) before and after; the difference per channel is the
// figure, with the Go heap and goroutine stacks beside it.
func BenchmarkIdleChannels(b *testing.B) {
	limit := raiseFileLimit(b)
	n := min(idleChannels, int(limit)-200)
	fleet := ockamtest.NewFleet(b)
	gateway := fleet.Enroll(b, "listener", map[string]string{"role": "listener"})
	device := fleet.Enroll(b, "device", map[string]string{"role": "sensor"})
	verifier, err := secure.NewVerifier(fleet.Authority.Public())
	must(b, err)
	cfg, err := json.Marshal(idleConfig{
		Address: ockamtest.FreeAddr(b), VaultPath: gateway.VaultPath, CredentialPath: gateway.CredentialPath,
		AuthorityFile: fleet.AuthorityFile, MaxConnections: n + 10,
	})
	must(b, err)
	var c idleConfig
	must(b, json.Unmarshal(cfg, &c))

	child := startChild(b, string(cfg))
	before := child.measure(b)
	for b.Loop() {
		chans := dialIdle(b, c.Address, n, secure.HandshakeConfig{
			Identity: device.Identity, Credential: device.Credential, Verifier: verifier,
		})
		time.Sleep(time.Second) // every serve goroutine is parked in Receive
		after := child.measure(b)
		per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
		b.ReportMetric(per(after.RSS, before.RSS), "rss-B/channel")
		b.ReportMetric(per(after.Heap, before.Heap), "heap-B/channel")
		b.ReportMetric(per(after.Stacks, before.Stacks), "stack-B/channel")
		b.ReportMetric(per(after.Goroutines, before.Goroutines), "goroutines/channel")
		b.ReportMetric(float64(n), "channels")
		for _, ch := range chans {
			ch.Close("done")
		}
	}
	child.stop(b)
}

// idleMessage is the line protocol each channel of BenchmarkIdleChannels
// sends before it goes idle: one metric whose line fills a frame.
var idleMessage = []byte(`bulk,host=device payload="` + strings.Repeat("x", 60_000) + `" 1767225600000000000` + "\n")

// dialIdle opens n channels to addr, a few at a time, and has each send
// idleMessage and wait for the ack.
func dialIdle(b *testing.B, addr string, n int, cfg secure.HandshakeConfig) []*secure.Channel {
	chans := make([]*secure.Channel, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					errs <- err
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				chans[i], err = secure.Dial(ctx, secure.NewStreamTransport(nc), cfg)
				cancel()
				if err == nil {
					err = sendOne(chans[i], uint64(i))
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("dial: %v", err)
	}
	return chans
}

// sendOne sends idleMessage as batch and waits for its ack.
func sendOne(ch *secure.Channel, batch uint64) error {
	if err := ch.Send(secure.Message{Type: secure.TypeData, Batch: batch, Payload: idleMessage}); err != nil {
		return err
	}
	m, err := ch.Receive()
	if err == nil && (m.Type != secure.TypeAck || m.Batch != batch) {
		err = fmt.Errorf("answer %+v to batch %d", m, batch)
	}
	return err
}

// child is the listener process.
type child struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines *bufio.Scanner
}

func startChild(b *testing.B, cfg string) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleListenerChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+cfg)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	must(b, err)
	out, err := cmd.StdoutPipe()
	must(b, err)
	must(b, cmd.Start())
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return &child{cmd: cmd, in: in, lines: bufio.NewScanner(out)}
}

// measure asks the child for its memory figures.
func (c *child) measure(b *testing.B) memory {
	b.Helper()
	if _, err := io.WriteString(c.in, "measure\n"); err != nil {
		b.Fatal(err)
	}
	for c.lines.Scan() {
		if line, ok := strings.CutPrefix(c.lines.Text(), "memory "); ok {
			var m memory
			must(b, json.Unmarshal([]byte(line), &m))
			return m
		}
	}
	b.Fatalf("the listener process ended: %v", c.lines.Err())
	return memory{}
}

func (c *child) stop(b *testing.B) {
	c.in.Close()
	if err := c.cmd.Wait(); err != nil {
		b.Errorf("listener process: %v", err)
	}
}

// TestIdleListenerChild is the listener process of BenchmarkIdleChannels;
// it does nothing unless run by it. It answers each "measure" line on stdin
// with a "memory {json}" line, and stops the listener at the end of stdin.
func TestIdleListenerChild(t *testing.T) {
	cfg := os.Getenv(childEnv)
	if cfg == "" {
		t.Skip("only run by BenchmarkIdleChannels")
	}
	raiseFileLimit(t)
	var c idleConfig
	must(t, json.Unmarshal([]byte(cfg), &c))
	l := inputs.Inputs["ockam_listener"]().(*ockam_listener.Listener)
	l.ServiceAddress = "tcp://" + c.Address
	l.VaultPath = c.VaultPath
	l.CredentialPath = c.CredentialPath
	l.AuthorityPaths = []string{c.AuthorityFile}
	l.MaxConnections = c.MaxConnections
	// One device identity opens every channel here: the figure is memory
	// per channel, not the per-identity bound (max_channels_per_identity).
	l.MaxChannelsPerIdentity = c.MaxConnections
	l.Log = testutil.Logger{Name: "inputs.ockam_listener", Quiet: true}
	l.Statistics = statistics()
	must(t, l.Init())
	must(t, l.Start(&countingAcc{}))
	defer l.Stop()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		m, err := json.Marshal(measureSelf(t))
		must(t, err)
		fmt.Printf("memory %s\n", m)
	}
}

// measureSelf collects garbage, returns freed memory to the OS, and reads
// the resident set and the runtime's figures.
func measureSelf(t testing.TB) memory {
	for range 4 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	statm, err := os.ReadFile("/proc/self/statm")
	must(t, err)
	var size, resident uint64
	if _, err := fmt.Sscan(string(statm), &size, &resident); err != nil {
		t.Fatal(err)
	}
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(samples)
	return memory{
		RSS:        resident * uint64(os.Getpagesize()),
		Heap:       samples[0].Value.Uint64(),
		Stacks:     samples[1].Value.Uint64(),
		Goroutines: samples[2].Value.Uint64(),
	}
}

// raiseFileLimit raises the soft limit on open files to the hard one, and
// returns it: each channel is a file descriptor on both sides.
func raiseFileLimit(t testing.TB) uint64 {
	var lim syscall.Rlimit
	must(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		must(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	}
	return lim.Cur
}
