package ockamtest

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Process is a command started for a test: its stdin is a pipe, its stdout
// is read line by line, its stderr is kept. It is killed when the test ends.
type Process struct {
	Stdin io.WriteCloser

	cmd    *exec.Cmd
	lines  chan string
	stderr syncBuffer
	done   chan struct{}
	err    error // the exit; set before done is closed
}

// Start runs name with args.
func Start(t testing.TB, name string, args ...string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(name, args...), lines: make(chan string, 1000), done: make(chan struct{})}
	var err error
	if p.Stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.lines <- s.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// NextLine returns the next line of stdout, failing the test after timeout.
func (p *Process) NextLine(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case l := <-p.lines:
		return l
	case <-time.After(timeout):
		t.Fatalf("%s wrote no line within %v; stderr:\n%s", p.cmd.Path, timeout, p.Stderr())
		return ""
	}
}

// Stderr returns what the process wrote on stderr so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Wait waits for the process to exit, failing the test after timeout, and
// returns its exit error.
func (p *Process) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v; stderr:\n%s", p.cmd.Path, timeout, p.Stderr())
		return nil
	}
}

// syncBuffer is a bytes.Buffer that a child's output is copied to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
