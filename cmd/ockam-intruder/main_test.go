package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	_ "github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
)

// startListener runs inputs.ockam_listener, configured as in the compose
// demo, on a free loopback port, and returns its address and the
// authority's identity file.
func startListener(t *testing.T) (addr, authorityFile string) {
	t.Helper()
	f := ockamtest.NewFleet(t)
	m := f.Enroll(t, "listener", map[string]string{"role": "listener"})
	addr = ockamtest.FreeAddr(t)
	c := config.NewConfig()
	conf := fmt.Sprintf(`
[[inputs.ockam_listener]]
  service_address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_paths = [%q]
`, addr, m.VaultPath, m.CredentialPath, f.AuthorityFile)
	require.NoError(t, c.LoadConfigData([]byte(conf), "listener.conf"))
	in := c.Inputs[0]
	require.NoError(t, in.Init())
	var acc testutil.Accumulator
	svc := in.Input.(telegraf.ServiceInput)
	require.NoError(t, svc.Start(&acc))
	t.Cleanup(svc.Stop)
	return addr, f.AuthorityFile
}

// handshakesFailed returns the listener's internal handshakes_failed
// counters by reason.
func handshakesFailed() map[string]int64 {
	got := map[string]int64{}
	for _, m := range selfstat.Metrics() {
		if m.Name() != "internal_ockam_listener" {
			continue
		}
		if v, ok := m.GetField("handshakes_failed"); ok {
			reason, _ := m.GetTag("reason")
			got[reason] += v.(int64)
		}
	}
	return got
}

func TestEveryAttemptRefused(t *testing.T) {
	addr, authority := startListener(t)
	before := handshakesFailed()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--address", addr, "--authority", authority}, &stdout, &stderr)
	require.Equal(t, exitRefused, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	for _, name := range []string{"plaintext", "forged-hello", "rogue-authority", "forged-signature"} {
		require.Regexp(t, `ockam-intruder: `+name+` +refused: `, stdout.String())
	}
	// Each attempt is counted under its own reason.
	want := map[string]int64{"malformed": 1, "unsupported_version": 1, "unknown_issuer": 1, "bad_signature": 1}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := handshakesFailed()
		for reason, n := range got {
			if got[reason] = n - before[reason]; got[reason] == 0 {
				delete(got, reason)
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshakes_failed went up by %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWithoutAuthoritySkipsCredentialAttempts(t *testing.T) {
	addr, _ := startListener(t)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--address", addr, "--rounds", "2", "--every", "10ms"}, &stdout, &stderr)
	require.Equal(t, exitRefused, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	require.Equal(t, 4, strings.Count(stdout.String(), " refused: "), stdout.String())
	require.Contains(t, stderr.String(), "credential attempts are skipped")
}

// TestNotRefused: a server that keeps every connection open, as a plain
// TCP sink would, fails the run.
func TestNotRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--address", ln.Addr().String(), "--timeout", "200ms"}, &stdout, &stderr)
	require.Equal(t, exitAccepted, code, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	require.Contains(t, stdout.String(), "plaintext        NOT REFUSED: the listener kept the connection open")
}

func TestUnreachable(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--address", ockamtest.FreeAddr(t)}, &stdout, &stderr)
	require.Equal(t, exitError, code)
	require.Contains(t, stderr.String(), "plaintext        error: ")
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--address", "127.0.0.1:1", "extra"},
		{"--address", "127.0.0.1:1", "--rounds", "-1"},
		{"--address", "127.0.0.1:1", "--every", "0s"},
		{"--address", "127.0.0.1:1", "--authority", "/nonexistent"},
		{"--nope"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, exitError, run(context.Background(), args, &stdout, &stderr), "%q", args)
		require.NotEmpty(t, stderr.String(), "%q", args)
	}
}
