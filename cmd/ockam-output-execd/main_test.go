package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
)

// flakyOutput fails its first failures writes.
type flakyOutput struct {
	failures int
	writes   int
}

func (*flakyOutput) SampleConfig() string { return "" }
func (*flakyOutput) Connect() error       { return nil }
func (*flakyOutput) Close() error         { return nil }
func (f *flakyOutput) Write([]telegraf.Metric) error {
	f.writes++
	if f.writes <= f.failures {
		return errors.New("listener down")
	}
	return nil
}

func TestRetryingOutput(t *testing.T) {
	f := &flakyOutput{failures: 3}
	log := &testutil.CaptureLogger{}
	r := &retryingOutput{Output: f, ctx: context.Background(), log: log, minDelay: time.Millisecond, maxDelay: 4 * time.Millisecond}
	require.NoError(t, r.Write(nil))
	require.Equal(t, 4, f.writes)
	require.Len(t, log.Errors(), 3)

	// After a signal it gives up, saying what is lost.
	ctx, cancel := context.WithCancel(context.Background())
	f = &flakyOutput{failures: 1 << 30}
	r = &retryingOutput{Output: f, ctx: ctx, log: log, minDelay: time.Hour, maxDelay: time.Hour}
	go func() {
		time.Sleep(10 * time.Millisecond)
		cancel()
	}()
	err := r.Write(make([]telegraf.Metric, 3))
	require.ErrorContains(t, err, "3 metrics not acknowledged are lost")
	require.Equal(t, 1, f.writes)
}

func TestUsage(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 2, run(nil, &stderr))
	require.Contains(t, stderr.String(), "usage")
	stderr.Reset()
	require.Equal(t, 2, run([]string{"--config", "x.conf", "--batch-size", "0"}, &stderr))
	stderr.Reset()
	require.Equal(t, 1, run([]string{"--config", filepath.Join(t.TempDir(), "nope.conf")}, &stderr))
	require.Contains(t, stderr.String(), "nope.conf")
}

func TestMain(m *testing.M) {
	code := m.Run()
	ockamtest.RemoveBuilds()
	os.Exit(code)
}

// TestShim feeds line protocol to the output shim while the listener is
// down, then starts the listener shim: the batch held by the retries
// arrives, and so does what was written after it, before the output shim
// exits at the end of its stdin.
func TestShim(t *testing.T) {
	bin := ockamtest.Build(t, ".", "../ockam-listener-execd")
	fleet := ockamtest.NewFleet(t)
	device := fleet.Enroll(t, "device", nil)
	listener := fleet.Enroll(t, "listener", nil)
	addr := ockamtest.FreeAddr(t)

	outputConf := filepath.Join(fleet.Dir, "output.conf")
	ockamtest.WriteFile(t, outputConf, fmt.Appendf(nil, `
[[outputs.ockam]]
  address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_path = %q
  timeout = "2s"
`, addr, device.VaultPath, device.CredentialPath, fleet.AuthorityFile))
	out := ockamtest.Start(t, filepath.Join(bin, "ockam-output-execd"), "--config", outputConf, "--batch-timeout", "100ms")
	_, err := io.WriteString(out.Stdin, "weather,city=paris temp=21.5 1700000000000000000\n")
	require.NoError(t, err)
	// Wait for a failed write: the retries hold the batch.
	require.Eventually(t, func() bool { return strings.Contains(out.Stderr(), "retrying") },
		10*time.Second, 50*time.Millisecond)

	listenerConf := filepath.Join(fleet.Dir, "listener.conf")
	ockamtest.WriteFile(t, listenerConf, fmt.Appendf(nil, `
[[inputs.ockam_listener]]
  service_address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_paths = [%q]
`, addr, listener.VaultPath, listener.CredentialPath, fleet.AuthorityFile))
	lis := ockamtest.Start(t, filepath.Join(bin, "ockam-listener-execd"), "--config", listenerConf)
	tag := "ockam_identity=" + device.Identity.Identifier().String()
	require.Equal(t, "weather,city=paris,"+tag+" temp=21.5 1700000000000000000", lis.NextLine(t, 45*time.Second),
		"output shim: %s", out.Stderr())

	// More input, then the end of stdin: written before the shim exits.
	_, err = io.WriteString(out.Stdin, "weather,city=oslo temp=-3 1700000000000000000\n")
	require.NoError(t, err)
	require.NoError(t, out.Stdin.Close())
	require.Equal(t, "weather,city=oslo,"+tag+" temp=-3 1700000000000000000", lis.NextLine(t, 15*time.Second))
	require.NoError(t, out.Wait(t, 15*time.Second), out.Stderr())

	lis.Signal(t, syscall.SIGTERM)
	require.NoError(t, lis.Wait(t, 15*time.Second), lis.Stderr())
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(ockamtest.Build(t, "."), "ockam-output-execd"), "--version").Output()
	require.NoError(t, err)
	require.Regexp(t, `^ockam-output-execd v\d+\.\d+\.\d+\S* \(telegraf-ockam, Telegraf 1\.39\.3, go\S+\)\n$`, string(out))
}
