package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/parsers"
	"github.com/influxdata/telegraf/plugins/serializers"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam/ockamtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	ockamtest.RemoveBuilds()
	os.Exit(code)
}

// binary builds the command (once) and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	return filepath.Join(ockamtest.Build(t, "."), "telegraf")
}

// telegraf runs the binary to its end and returns stdout and stderr.
func telegraf(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestPluginsRegistered(t *testing.T) {
	for _, name := range []string{"ockam_listener", "internal", "cpu", "mem", "disk", "system", "net", "file", "exec"} {
		require.Contains(t, inputs.Inputs, name)
	}
	for _, name := range []string{"ockam", "influxdb", "influxdb_v2", "file"} {
		require.Contains(t, outputs.Outputs, name)
	}
	require.Contains(t, parsers.Parsers, "influx")
	require.Contains(t, serializers.Serializers, "influx")
}

func TestParseFlags(t *testing.T) {
	opts, err := parseFlags([]string{"--config", "a.conf", "--config=b.conf", "--config-directory", "d",
		"--once", "--debug", "--quiet", "--test-wait", "2s"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"a.conf", "b.conf"}, opts.configs)
	require.Equal(t, []string{"d"}, opts.configDirs)
	require.True(t, opts.once && opts.debug && opts.quiet)
	require.Equal(t, 2*time.Second, opts.testWait)

	_, err = parseFlags([]string{"config"}, &bytes.Buffer{})
	require.ErrorContains(t, err, `unexpected argument "config"`)
	_, err = parseFlags([]string{"--nope"}, &bytes.Buffer{})
	require.Error(t, err)
}

func TestVersion(t *testing.T) {
	stdout, _, err := telegraf(t, "--version")
	require.NoError(t, err)
	require.Regexp(t, `^telegraf-ockam v\d+\.\d+\.\d+\S* \(Telegraf 1\.39\.3, go\S+\)\n$`, stdout)
	fi, err := os.Stat(binary(t))
	require.NoError(t, err)
	t.Logf("binary: %.1f MB", float64(fi.Size())/1e6)
}

const lineProtocol = "weather,city=paris temp=21.5 1700000000000000000\n"

func TestTestMode(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "in.lp", lineProtocol)
	conf := writeFile(t, dir, "telegraf.conf", fmt.Sprintf(`
[agent]
  omit_hostname = true
[[inputs.file]]
  files = [%q]
  data_format = "influx"
`, in))
	stdout, stderr, err := telegraf(t, "--config", conf, "--test")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "> weather,city=paris temp=21.5 1700000000000000000")
}

func TestOnceWithConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "in.lp", lineProtocol)
	out := filepath.Join(dir, "out.lp")
	confDir := filepath.Join(dir, "telegraf.d")
	require.NoError(t, os.Mkdir(confDir, 0o700))
	writeFile(t, confDir, "inputs.conf", fmt.Sprintf(`
[[inputs.file]]
  files = [%q]
  data_format = "influx"
[[inputs.internal]]
`, in))
	conf := writeFile(t, dir, "telegraf.conf", fmt.Sprintf(`
[agent]
  omit_hostname = true
[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, out))
	_, stderr, err := telegraf(t, "--config", conf, "--config-directory", confDir, "--once")
	require.NoError(t, err, stderr)
	written, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Contains(t, string(written), strings.TrimSpace(lineProtocol))
	require.Contains(t, string(written), "internal_memstats ", "our inputs.internal ran")
}

func TestBadConfig(t *testing.T) {
	conf := writeFile(t, t.TempDir(), "telegraf.conf", "[[outputs.nope]]\n")
	_, stderr, err := telegraf(t, "--config", conf, "--once")
	require.Error(t, err)
	require.Contains(t, stderr, "nope")
}

// TestEndToEnd runs a listener Telegraf and a device Telegraf: the device's
// metrics reach the listener's output over the secure channel, stamped with
// the device's identity, and SIGTERM stops the listener cleanly.
func TestEndToEnd(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	dir := fleet.Dir
	device := fleet.Enroll(t, "device", map[string]string{"role": "device"})
	listener := fleet.Enroll(t, "listener", map[string]string{"role": "listener"})
	addr := ockamtest.FreeAddr(t)

	received := filepath.Join(dir, "received.lp")
	listenerConf := writeFile(t, dir, "listener.conf", fmt.Sprintf(`
[agent]
  interval = "1s"
  flush_interval = "100ms"
  omit_hostname = true
[[inputs.ockam_listener]]
  service_address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_paths = [%q]
[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, addr, listener.VaultPath, listener.CredentialPath, fleet.AuthorityFile, received))
	proc := ockamtest.Start(t, binary(t), "--config", listenerConf)

	in := writeFile(t, dir, "in.lp", lineProtocol)
	deviceConf := writeFile(t, dir, "device.conf", fmt.Sprintf(`
[agent]
  omit_hostname = true
[[inputs.file]]
  files = [%q]
  data_format = "influx"
[[inputs.internal]]
  collect_memstats = false
[[outputs.ockam]]
  address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_path = %q
  listener_identity = %q
`, in, addr, device.VaultPath, device.CredentialPath, fleet.AuthorityFile, listener.Identity.Identifier()))
	// --once returns an error unless the listener acknowledged the batch; the
	// listener may still be starting, so try a few times.
	var stderr string
	var err error
	require.Eventually(t, func() bool {
		_, stderr, err = telegraf(t, "--config", deviceConf, "--once")
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "device: %s", stderr)

	got, err := os.ReadFile(received)
	require.NoError(t, err, "listener: %s", proc.Stderr())
	require.Contains(t, string(got), "weather,city=paris,ockam_identity="+device.Identity.Identifier().String()+" temp=21.5 1700000000000000000")
	// The agent gave outputs.ockam its statistics collector.
	require.Regexp(t, `(?m)^internal_ockam,ockam_identity=I[0-9a-f]{64},output=ockam,version=\S+ .*messages_sent=`, string(got))

	proc.Signal(t, syscall.SIGTERM)
	require.NoError(t, proc.Wait(t, 20*time.Second), "listener: %s", proc.Stderr())
}
