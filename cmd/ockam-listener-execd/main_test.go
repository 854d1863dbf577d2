package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
)

func TestMain(m *testing.M) {
	code := m.Run()
	ockamtest.RemoveBuilds()
	os.Exit(code)
}

func TestUsage(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 2, run(nil, &stderr))
	require.Contains(t, stderr.String(), "usage")
	stderr.Reset()
	require.Equal(t, 1, run([]string{"--config", filepath.Join(t.TempDir(), "nope.conf")}, &stderr))
	require.Contains(t, stderr.String(), "nope.conf")
}

// TestShim runs the shim with a listener config and sends to it from an
// in-process outputs.ockam: the metrics come out on stdout, stamped with
// the device's identity, and SIGTERM stops the shim.
func TestShim(t *testing.T) {
	bin := ockamtest.Build(t, ".")
	fleet := ockamtest.NewFleet(t)
	device := fleet.Enroll(t, "device", nil)
	listener := fleet.Enroll(t, "listener", nil)
	addr := ockamtest.FreeAddr(t)
	conf := filepath.Join(fleet.Dir, "listener.conf")
	ockamtest.WriteFile(t, conf, fmt.Appendf(nil, `
[[inputs.ockam_listener]]
  service_address = "tcp://%s"
  vault_path = %q
  credential_path = %q
  authority_paths = [%q]
`, addr, listener.VaultPath, listener.CredentialPath, fleet.AuthorityFile))
	// stdin stays open, as inputs.execd keeps it.
	shim := ockamtest.Start(t, filepath.Join(bin, "ockam-listener-execd"), "--config", conf)

	o := outputs.Outputs["ockam"]().(*ockam.Output)
	o.Address = "tcp://" + addr
	o.VaultPath, o.CredentialPath, o.AuthorityPath = device.VaultPath, device.CredentialPath, fleet.AuthorityFile
	o.Timeout = config.Duration(2 * time.Second)
	o.Log = testutil.Logger{}
	require.NoError(t, o.Init())
	require.NoError(t, o.Connect())
	defer o.Close()
	ms := []telegraf.Metric{
		metric.New("weather", map[string]string{"city": "paris"}, map[string]any{"temp": 21.5}, time.Unix(1700000000, 0)),
		metric.New("weather", map[string]string{"city": "oslo"}, map[string]any{"temp": -3.0}, time.Unix(1700000000, 0)),
	}
	// The shim may still be starting: Write fails until it listens.
	require.Eventually(t, func() bool { return o.Write(ms) == nil }, 20*time.Second, 100*time.Millisecond)

	tag := "ockam_identity=" + device.Identity.Identifier().String()
	require.ElementsMatch(t, []string{
		"weather,city=paris," + tag + " temp=21.5 1700000000000000000",
		"weather,city=oslo," + tag + " temp=-3 1700000000000000000",
	}, []string{shim.NextLine(t, 10*time.Second), shim.NextLine(t, 10*time.Second)})

	shim.Signal(t, syscall.SIGTERM)
	require.NoError(t, shim.Wait(t, 15*time.Second), shim.Stderr())
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(ockamtest.Build(t, "."), "ockam-listener-execd"), "--version").Output()
	require.NoError(t, err)
	require.Regexp(t, `^ockam-listener-execd v\d+\.\d+\.\d+\S* \(telegraf-ockam, Telegraf 1\.39\.3, go\S+\)\n$`, string(out))
}
