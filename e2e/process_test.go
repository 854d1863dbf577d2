package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logTail is how many lines of a process log a failed test prints.
const logTail = 150

// process is a program a test started, with stdout and stderr in a log file
// under t.TempDir(). It is stopped in t.Cleanup, and its log is printed
// when the test failed (or always, with E2E_LOGS=1).
type process struct {
	t    *testing.T
	name string
	log  string // path of the log file
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited
	err  error         // what Wait returned, once done is closed
}

// startProcess runs bin with args; name labels it in the test output.
func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{t: t, name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("E2E_LOGS") == "1" {
			p.printLog()
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to 15 s, then kills. Safe to call twice.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Errorf("%s did not stop within 15 s of SIGTERM; killing it", p.name)
		p.kill()
	}
}

// kill sends SIGKILL and waits for the process to end.
func (p *process) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// text returns the whole log so far.
func (p *process) text() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		p.t.Errorf("%s: %v", p.name, err)
	}
	return string(b)
}

// count returns how many lines of the log match re.
func (p *process) count(re *regexp.Regexp) int {
	n := 0
	for _, line := range strings.Split(p.text(), "\n") {
		if re.MatchString(line) {
			n++
		}
	}
	return n
}

// waitLog waits up to timeout for a log line matching re and returns the
// submatches of the first one. It fails t if none comes or the process exits.
func (p *process) waitLog(re *regexp.Regexp, timeout time.Duration) []string {
	p.t.Helper()
	var m []string
	eventually(p.t, timeout, fmt.Sprintf("%s logs %q", p.name, re), func() (bool, string) {
		// Whether it had exited, then the log: a process that logs the
		// line and exits between a read of the log and the check would
		// otherwise count as exiting without it (a Telegraf refusing its
		// credential does exactly that, in milliseconds).
		exited := p.exited()
		m = re.FindStringSubmatch(p.text())
		if m == nil && exited {
			p.t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, re)
		}
		return m != nil, ""
	})
	return m
}

// printLog prints the last logTail lines of the log.
func (p *process) printLog() {
	b, _ := os.ReadFile(p.log)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	skipped := 0
	if len(lines) > logTail {
		skipped, lines = len(lines)-logTail, lines[len(lines)-logTail:]
	}
	state := "running"
	if p.exited() {
		state = fmt.Sprintf("exit: %v", p.err)
	}
	p.t.Logf("---- %s (%s), log %s, %d earlier lines skipped ----\n%s\n---- end of %s ----",
		p.name, state, p.log, skipped, bytes.Join(lines, []byte("\n")), p.name)
}

// errTimeout marks a condition that did not come true in time.
var errTimeout = errors.New("timed out")

// eventually polls cond every 200 ms until it returns true, and fails t after
// timeout with what and the last detail cond returned.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	// A bound is what a test gives up after, never what it measures: it
	// returns as soon as cond holds. make stress showed a process starved by
	// busy loops taking over a minute to log its first lines, so no wait is
	// shorter than waitFloor.
	timeout = max(timeout, waitFloor)
	if err := poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitFloor is the least time eventually waits for a condition.
const waitFloor = 2 * time.Minute

// poll is eventually without a test: it returns errTimeout, with cond's last
// detail, if cond did not come true within timeout.
func poll(timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if detail != "" {
				return fmt.Errorf("%w after %v (last: %s)", errTimeout, timeout, detail)
			}
			return fmt.Errorf("%w after %v", errTimeout, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
