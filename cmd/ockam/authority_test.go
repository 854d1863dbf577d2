package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The tests of this file run `ockam authority serve` as a real process: the
// test binary itself, which TestMain installs as "ockam" on $PATH, or the
// ockam of $OCKAM_BIN (make bench-enroll builds it).

// ockamBinary returns the ockam program to run as a process.
func ockamBinary(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("OCKAM_BIN"); dir != "" {
		return filepath.Join(dir, "ockam")
	}
	p, err := exec.LookPath("ockam")
	require.NoError(t, err, "TestMain puts ockam on $PATH")
	return p
}

// ockamRun runs ockam in-process and fails t unless it succeeds; it returns
// stdout.
func ockamRun(t testing.TB, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != exitOK {
		t.Fatalf("ockam %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// fleet is an authority's files in a temporary directory.
type fleet struct {
	t             testing.TB
	dir           string
	vault         string // the authority's vault
	db            string // its store
	authorityFile string
	authority     *secure.Identity
}

func newFleet(t testing.TB) *fleet {
	t.Helper()
	dir := t.TempDir()
	f := &fleet{t: t, dir: dir, vault: filepath.Join(dir, "authority"), db: filepath.Join(dir, "authority.db"),
		authorityFile: filepath.Join(dir, "authority.identity")}
	ockamRun(t, "identity", "create", "--vault", f.vault)
	ockamRun(t, "identity", "export", "--vault", f.vault, "--out", f.authorityFile)
	var err error
	f.authority, err = readIdentityFile(f.authorityFile)
	require.NoError(t, err)
	return f
}

// tokens mints n tokens granting attrs and returns them.
func (f *fleet) tokens(n int, attrs ...string) []enroll.Token {
	f.t.Helper()
	out := filepath.Join(f.t.TempDir(), "tokens")
	args := []string{"enroll", "token", "create", "--vault", f.vault, "--db", f.db, "--count", strconv.Itoa(n), "--out", out}
	for _, a := range attrs {
		args = append(args, "--attr", a)
	}
	ockamRun(f.t, args...)
	data, err := os.ReadFile(out)
	require.NoError(f.t, err)
	var toks []enroll.Token
	for _, line := range strings.Fields(string(data)) {
		tok, err := enroll.ParseToken(line)
		require.NoError(f.t, err)
		toks = append(toks, tok)
	}
	require.Len(f.t, toks, n)
	return toks
}

// server is a running `ockam authority serve`.
type server struct {
	t    testing.TB
	cmd  *exec.Cmd
	addr string // host:port
	log  *syncBuffer
	done chan struct{}
}

var listeningLine = regexp.MustCompile(`^listening on tcp://(\S+) as (I[0-9a-f]{64})$`)

// serve starts `ockam authority serve` on a free loopback port and waits
// until it listens. It is stopped (SIGTERM) at the end of the test.
func (f *fleet) serve() *server {
	f.t.Helper()
	return f.serveAt("127.0.0.1:0")
}

// serveAt starts `ockam authority serve` listening on addr.
func (f *fleet) serveAt(addr string) *server {
	f.t.Helper()
	cmd := exec.Command(ockamBinary(f.t), "authority", "serve", "--vault", f.vault, "--db", f.db, "--listen", "tcp://"+addr)
	cmd.Env = append(os.Environ(), "OCKAM_VAULT_PASSPHRASE=")
	stdout, err := cmd.StdoutPipe()
	require.NoError(f.t, err)
	s := &server{t: f.t, cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = s.log
	require.NoError(f.t, cmd.Start())
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	f.t.Cleanup(s.stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	m := listeningLine.FindStringSubmatch(strings.TrimSpace(line))
	if err != nil || m == nil {
		s.stop()
		f.t.Fatalf("ockam authority serve printed %q (%v); log:\n%s", line, err, s.log)
	}
	require.Equal(f.t, f.authority.Identifier().String(), m[2])
	s.addr = m[1]
	return s
}

// stop sends SIGTERM and waits; it is safe to call twice.
func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		s.t.Errorf("ockam authority serve did not stop on SIGTERM; log:\n%s", s.log)
		s.kill()
	}
}

// kill sends SIGKILL and waits for the process to end.
func (s *server) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// syncBuffer is the process's log: written by exec's copier, read by the
// test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newDeviceIdentity is a device identity in memory.
func newDeviceIdentity(t testing.TB) *secure.LocalIdentity {
	t.Helper()
	id, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	require.NoError(t, err)
	return id
}
