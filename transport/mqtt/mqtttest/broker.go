// Package mqtttest runs a real MQTT broker (mosquitto) for tests, and a spy
// that records what the broker sees.
package mqtttest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
)

// startTimeout bounds the wait for a started broker to accept connections.
const startTimeout = 10 * time.Second

// B is a mosquitto process on 127.0.0.1 for one test.
type B struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd has exited
}

// Broker starts mosquitto on 127.0.0.1 on a free port, with a configuration
// of its own (anonymous access, no persistence, a log file in t.TempDir(),
// which the test log shows if the test fails), and stops it at cleanup.
// It finds mosquitto through $OCKAM_MOSQUITTO, then PATH, then
// /usr/sbin/mosquitto; without one it skips the test, or fails it when
// OCKAM_E2E=1 (as make test sets).
func Broker(t testing.TB) *B {
	t.Helper()
	bin, err := findMosquitto()
	if err != nil {
		if os.Getenv("OCKAM_E2E") == "1" {
			t.Fatalf("mqtttest: %v (OCKAM_E2E=1)", err)
		}
		t.Skipf("mqtttest: %v", err)
	}
	b := &B{t: t, bin: bin, dir: t.TempDir(), port: freeport.Port(t)}
	if err := b.writeConfig(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			if log, err := os.ReadFile(b.logPath()); err == nil {
				t.Logf("mosquitto log:\n%s", log)
			}
		}
	})
	b.Start()
	return b
}

// URL returns the broker's address without a topic: "mqtt://127.0.0.1:PORT".
func (b *B) URL() string { return "mqtt://127.0.0.1:" + strconv.Itoa(b.port) }

// Start starts the broker again on the same port after Stop (Broker starts
// it the first time), and waits until it accepts connections.
func (b *B) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		b.t.Fatal("mqtttest: the broker is running already")
	}
	cmd := exec.Command(b.bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("mqtttest: start %s: %v", b.bin, err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exit)
	}()
	b.cmd, b.exit = cmd, exit
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", b.addr(), time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exit:
			log, _ := os.ReadFile(b.logPath())
			b.cmd = nil
			b.t.Fatalf("mqtttest: mosquitto exited at start:\n%s", log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mqtttest: mosquitto does not accept connections on %s after %v: %v", b.addr(), startTimeout, err)
		}
	}
}

// Stop stops the broker (SIGTERM, then SIGKILL after 5 s) and waits for it
// to exit. Stopping a stopped broker does nothing.
func (b *B) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exit:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exit
	}
	b.cmd = nil
}

func (b *B) addr() string    { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }
func (b *B) logPath() string { return filepath.Join(b.dir, "mosquitto.log") }

func (b *B) writeConfig() error {
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"+
		"log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"+
		"connection_messages true\n", b.port, b.logPath())
	if u, err := user.Current(); err == nil {
		// mosquitto started as root drops to user "mosquitto", which
		// could not write the log in our temporary directory.
		conf += "user " + u.Username + "\n"
	}
	return os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf), 0o600)
}

// findMosquitto returns the mosquitto binary to run.
func findMosquitto() (string, error) {
	if p := os.Getenv("OCKAM_MOSQUITTO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("OCKAM_MOSQUITTO: %v", err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/mosquitto"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	return "", errors.New("no mosquitto: set OCKAM_MOSQUITTO, or install it (make mosquitto)")
}
