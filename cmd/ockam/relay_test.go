package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// TestRelayServe runs "ockam relay serve" in process: a listener registers
// with a credential of the --authority, a device reaches it through the
// relay, and SIGINT stops the relay with exit code 0.
func TestRelayServe(t *testing.T) {
	dir := t.TempDir()
	authority, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(dir, "auth.identity")
	if err := os.WriteFile(authFile, authority.Public().MarshalFile(), 0o644); err != nil {
		t.Fatal(err)
	}
	gateway, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := secure.IssueCredential(authority.Signer(), gateway.Identifier(),
		map[string]string{"relay": "plant-7-gateway"}, time.Now().Add(-time.Minute), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}

	stdoutR, stdoutW := io.Pipe()
	var stderr syncBuffer // authority_test.go
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"relay", "serve", "--listen", "tcp://127.0.0.1:0", "--authority", authFile,
			"--log-level", "debug"}, stdoutW, &stderr)
		stdoutW.Close()
	}()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil {
		t.Fatalf("no listening line: %v; stderr:\n%s", err, stderr.String())
	}
	go io.Copy(io.Discard, stdoutR)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "relay listening on ")
	if !ok || strings.HasSuffix(addr, ":0") {
		t.Fatalf("stdout %q, want relay listening on tcp://127.0.0.1:PORT", line)
	}

	l, err := relay.Listen(relay.ListenConfig{Relay: addr, Name: "plant-7-gateway",
		Credentials: func() (*secure.LocalIdentity, *secure.Credential, error) { return gateway, cred, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for deadline := time.Now().Add(10 * time.Second); !l.Registered(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not registered; stderr:\n%s", stderr.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := relay.Dial(ctx, []string{addr, "plant-7-gateway"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	lis, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(lis, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("listener read %q, %v", buf, err)
	}
	if _, err := lis.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(dev, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("device read %q, %v", buf, err)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != exitOK {
			t.Fatalf("exit %d; stderr:\n%s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not stop on SIGINT")
	}
	for _, want := range []string{"I! [relay] Listening on " + addr, `I! [relay] Registered "plant-7-gateway" for ` +
		gateway.Identifier().Short(), "I! [relay] Stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}
