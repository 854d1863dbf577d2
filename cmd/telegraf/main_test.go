package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf/plugins/aggregators"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/parsers"
	"github.com/influxdata/telegraf/plugins/processors"
	"github.com/influxdata/telegraf/plugins/secretstores"
	"github.com/influxdata/telegraf/plugins/serializers"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
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

// runBinary runs the binary to its end and returns stdout and stderr.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, err error) {
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

// TestPluginsRegistered: every plugin of plugins.txt, and ours, is in the
// binary (pluginsgen's test checks that plugins.go is plugins.txt).
func TestPluginsRegistered(t *testing.T) {
	list, err := os.ReadFile("plugins.txt")
	require.NoError(t, err)
	registered := map[string]func(string) bool{
		"inputs":       func(n string) bool { _, ok := inputs.Inputs[n]; return ok },
		"outputs":      func(n string) bool { _, ok := outputs.Outputs[n]; return ok },
		"processors":   func(n string) bool { _, ok := processors.Processors[n]; return ok },
		"aggregators":  func(n string) bool { _, ok := aggregators.Aggregators[n]; return ok },
		"secretstores": func(n string) bool { _, ok := secretstores.SecretStores[n]; return ok },
		"parsers":      func(n string) bool { _, ok := parsers.Parsers[n]; return ok },
		"serializers":  func(n string) bool { _, ok := serializers.Serializers[n]; return ok },
	}
	ids := []string{"inputs.ockam_listener", "inputs.internal", "outputs.ockam"}
	for _, line := range strings.Split(string(list), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			ids = append(ids, strings.Fields(line)[0])
		}
	}
	require.Greater(t, len(ids), 50)
	for _, id := range ids {
		kind, name, _ := strings.Cut(id, ".")
		require.True(t, registered[kind](name), "%s is not registered", id)
	}
}

func TestParseFlags(t *testing.T) {
	opts, err := parseFlags([]string{"--config", "a.conf", "--config=b.conf", "--config-directory", "d",
		"--once", "--debug", "--quiet", "--test-wait", "2s"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"a.conf", "b.conf"}, opts.configs)
	require.Equal(t, []string{"d"}, opts.configDirs)
	require.True(t, opts.once && opts.debug && opts.quiet)
	require.Equal(t, 2*time.Second, opts.testWait)
	require.Empty(t, opts.command)

	// Filters before and after the command add up, as in Telegraf.
	opts, err = parseFlags([]string{"--debug", "--input-filter", "cpu:mem", "config", "--input-filter", "modbus",
		"--output-filter=ockam", "check", "--config", "x.conf"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"config", "check"}, opts.command)
	require.Equal(t, []string{"cpu", "mem", "modbus"}, opts.filters.input)
	require.Equal(t, []string{"ockam"}, opts.filters.output)
	require.Equal(t, []string{"x.conf"}, opts.configs)
	require.True(t, opts.debug, "a command's flags keep --debug given before it")

	opts, err = parseFlags([]string{"secrets", "set", "--config", "s.conf", "store", "key", "value"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"secrets", "set"}, opts.command)
	require.Equal(t, []string{"store", "key", "value"}, opts.args)

	opts, err = parseFlags([]string{"plugins", "--deprecated"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []string{"plugins", "--deprecated"}, opts.command)

	_, err = parseFlags([]string{"nope"}, &bytes.Buffer{})
	require.ErrorContains(t, err, `unknown command "nope"`)
	_, err = parseFlags([]string{"version", "extra"}, &bytes.Buffer{})
	require.ErrorContains(t, err, `unexpected argument "extra" after "version"`)
	_, err = parseFlags([]string{"--nope"}, &bytes.Buffer{})
	require.Error(t, err)
}

// TestAgentConf: the [agent] section of our sample configuration is
// Telegraf's.
func TestAgentConf(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/influxdata/telegraf").Output()
	require.NoError(t, err)
	theirs, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "cmd", "telegraf", "agent.conf"))
	require.NoError(t, err)
	require.Equal(t, string(theirs), agentConfig)
}

func TestSampleConfig(t *testing.T) {
	var b bytes.Buffer
	printSampleConfig(&b, filters{section: []string{"inputs", "outputs"}, input: []string{"modbus", "ockam_listener"},
		output: []string{"ockam"}})
	got := b.String()
	require.True(t, strings.HasPrefix(got, sampleHeader), got)
	require.NotContains(t, got, "[agent]")
	require.NotContains(t, got, "[global_tags]")
	require.Contains(t, got, "\n[[inputs.modbus]]\n")
	require.Contains(t, got, "\n[[outputs.ockam]]\n")
	require.Contains(t, got, "\n[[inputs.ockam_listener]]\n")
	require.NotContains(t, got, "inputs.cpu")
	require.Contains(t, got, "\n###############################################################################\n"+
		"#                            SERVICE INPUT PLUGINS                            #\n")
	// modbus is polled, ockam_listener a service input: printed after it.
	require.Less(t, strings.Index(got, "[[inputs.modbus]]"), strings.Index(got, "SERVICE INPUT PLUGINS"))
	require.Less(t, strings.Index(got, "SERVICE INPUT PLUGINS"), strings.Index(got, "[[inputs.ockam_listener]]"))

	// Without filters: every plugin, the default inputs uncommented.
	b.Reset()
	printSampleConfig(&b, filters{})
	got = b.String()
	require.Contains(t, got, "\n[agent]\n")
	require.Contains(t, got, "\n[[inputs.cpu]]\n")
	require.Contains(t, got, "\n# [[inputs.modbus]]\n")
	require.Contains(t, got, "\n# [[processors.rename]]\n")
	require.Contains(t, got, "\n# [[aggregators.basicstats]]\n")
	require.Contains(t, got, "\n# [[secretstores.jose]]\n")
	require.Contains(t, got, "\n# [[outputs.ockam]]\n")
}

// TestCommands runs the binary's commands that print: Telegraf's flags and
// the config, plugins and version commands.
func TestCommands(t *testing.T) {
	stdout, stderr, err := runBinary(t, "--usage", "modbus")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "\n[[inputs.modbus]]\n")

	_, stderr, err = runBinary(t, "--usage", "nope")
	require.Error(t, err)
	require.Contains(t, stderr, `no input or output "nope" in this build`)

	stdout, stderr, err = runBinary(t, "--input-filter", "opcua", "config", "--output-filter", "ockam", "--section-filter", "inputs:outputs")
	require.NoError(t, err, stderr)
	require.Contains(t, stdout, "\n[[inputs.opcua]]\n")
	require.Contains(t, stdout, "\n[[outputs.ockam]]\n")
	require.NotContains(t, stdout, "[agent]")

	sample, stderr, err := runBinary(t, "--sample-config", "--input-filter", "opcua", "--output-filter", "ockam", "--section-filter", "inputs:outputs")
	require.NoError(t, err, stderr)
	require.Equal(t, stdout, sample, "--sample-config is the config command")

	stdout, stderr, err = runBinary(t, "plugins")
	require.NoError(t, err, stderr)
	for _, id := range []string{"inputs.modbus", "inputs.ockam_listener", "outputs.ockam", "processors.rename",
		"aggregators.basicstats", "secretstores.jose", "parsers.json_v2", "serializers.influx"} {
		require.Contains(t, stdout, id+"\n")
	}

	stdout, stderr, err = runBinary(t, "version")
	require.NoError(t, err, stderr)
	require.Regexp(t, `^telegraf-ockam v\d+\.\d+\.\d+\S* \(Telegraf 1\.39\.3, go\S+\)\n$`, stdout)
}

func TestVersion(t *testing.T) {
	stdout, _, err := runBinary(t, "--version")
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
	stdout, stderr, err := runBinary(t, "--config", conf, "--test")
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
	_, stderr, err := runBinary(t, "--config", conf, "--config-directory", confDir, "--once")
	require.NoError(t, err, stderr)
	written, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Contains(t, string(written), strings.TrimSpace(lineProtocol))
	require.Contains(t, string(written), "internal_memstats ", "our inputs.internal ran")
}

func TestBadConfig(t *testing.T) {
	conf := writeFile(t, t.TempDir(), "telegraf.conf", "[[outputs.nope]]\n")
	_, stderr, err := runBinary(t, "--config", conf, "--once")
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
		_, stderr, err = runBinary(t, "--config", deviceConf, "--once")
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

// TestProcessorAggregatorSecretStore is the configuration of an operator
// who keeps this Telegraf: an API token in a secret store (secretstores.jose,
// an encrypted directory, filled with the secrets command), an input that
// sends it (inputs.http), a processor (processors.rename) and an aggregator
// (aggregators.basicstats). The HTTP server answers only with the token.
func TestProcessorAggregatorSecretStore(t *testing.T) {
	const token = "s3cret-api-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		fmt.Fprintln(w, "weather,city=paris temp=21.5")
	}))
	defer srv.Close()

	dir := t.TempDir()
	out := filepath.Join(dir, "out.lp")
	conf := writeFile(t, dir, "telegraf.conf", fmt.Sprintf(`
[agent]
  omit_hostname = true

[[secretstores.jose]]
  id = "local"
  path = %q
  password = "store-password"

[[inputs.http]]
  urls = [%q]
  token = "@{local:api_token}"
  data_format = "influx"

[[processors.rename]]
  [[processors.rename.replace]]
    measurement = "weather"
    dest = "climate"

## The window must hold the one gather whatever the clock says: grace and
## delay take any time of day (a period ending mid-run would pass it through).
[[aggregators.basicstats]]
  period = "1h"
  grace = "2h"
  delay = "2h"
  drop_original = true
  stats = ["count", "max"]

[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, filepath.Join(dir, "secrets"), srv.URL, out))

	_, stderr, err := runBinary(t, "secrets", "set", "--config", conf, "local", "api_token", token)
	require.NoError(t, err, stderr)
	stdout, stderr, err := runBinary(t, "secrets", "list", "--config", conf)
	require.NoError(t, err, stderr)
	require.Equal(t, "Known secrets for store \"local\":\n    api_token\n", stdout)

	_, stderr, err = runBinary(t, "config", "check", "--config", conf)
	require.NoError(t, err, stderr)

	_, stderr, err = runBinary(t, "--config", conf, "--once")
	require.NoError(t, err, stderr)
	written, err := os.ReadFile(out)
	require.NoError(t, err, stderr)
	// basicstats adds its fields in map order: either order is the same point.
	require.Regexp(t, `^climate,city=paris,url=`+regexp.QuoteMeta(srv.URL)+
		` (temp_count=1,temp_max=21\.5|temp_max=21\.5,temp_count=1) \d+\n$`, string(written), stderr)
}

// TestConfigCheck: config check names what is wrong, and starts nothing.
func TestConfigCheck(t *testing.T) {
	conf := writeFile(t, t.TempDir(), "telegraf.conf", `
[[processors.rename]]
  [[processors.rename.replace]]
    measurement = "a"
    dest = "b"
[[inputs.modbus]]
  name = "meter"
  controller = "tcp://127.0.0.1:1"
  configuration_type = "nope"
[[outputs.discard]]
`)
	_, stderr, err := runBinary(t, "config", "check", "--config", conf)
	require.Error(t, err)
	require.Contains(t, stderr, "nope")
}
