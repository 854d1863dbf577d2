package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	ockamlistener "github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	ockamout "github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"

	// The other plugins the demo's configurations use, as cmd/telegraf
	// compiles them in.
	_ "github.com/influxdata/telegraf/plugins/inputs/cpu"
	_ "github.com/influxdata/telegraf/plugins/inputs/mem"
	_ "github.com/influxdata/telegraf/plugins/inputs/system"
	_ "github.com/influxdata/telegraf/plugins/outputs/influxdb_v2"
	_ "github.com/influxdata/telegraf/plugins/serializers/influx"
)

// internalStandIn takes the place of inputs.internal, which lives in
// cmd/telegraf/internal where Go's internal rule keeps it from this package.
// It has the real plugin's options (cmd/telegraf/internal/sample.conf), so
// the loader still refuses an unknown one; cmd/telegraf's
// TestPluginsRegistered checks that the real one is compiled in, and the
// loopback test runs these files with the real binary.
type internalStandIn struct {
	CollectMemstats bool `toml:"collect_memstats"`
	CollectGostats  bool `toml:"collect_gostats"`
	PerInstance     bool `toml:"per_instance"`
}

func (*internalStandIn) SampleConfig() string              { return "" }
func (*internalStandIn) Gather(telegraf.Accumulator) error { return nil }

func init() {
	if _, ok := inputs.Inputs["internal"]; !ok {
		inputs.Add("internal", func() telegraf.Input { return &internalStandIn{} })
	}
}

// TestComposeTelegrafConfigs loads the gateway's and the devices' Telegraf
// configurations, as mounted by docker-compose.yml, with Telegraf's loader
// (which refuses unknown plugins and options) and initializes every plugin
// against a fleet laid out as init.sh lays it out, so that every path, file
// and option is checked the way Telegraf checks them at start.
func TestComposeTelegrafConfigs(t *testing.T) {
	p := loadProject(t)
	root := t.TempDir()
	gatewayID := makeFleet(t, root)
	r := &replacer{t: t, pairs: []string{"/ockam", root}}

	gw := service(t, p, gatewayService)
	c := loadTelegraf(t, r, configFile(t, p, gw, "/etc/telegraf/telegraf.conf"), nil)
	require.Equal(t, []string{"internal", "ockam_listener"}, sorted(c.InputNames()))
	require.Equal(t, []string{"influxdb_v2"}, c.OutputNames())
	// A device waits for its ack for outputs.ockam's timeout (10 s): the
	// gateway must flush well within it.
	require.LessOrEqual(t, time.Duration(c.Agent.FlushInterval), 2*time.Second, "gateway flush_interval")
	// Both paths in: its port and its name at the relay.
	for _, in := range c.Inputs {
		if l, ok := in.Input.(*ockamlistener.Listener); ok {
			require.Equal(t, "tcp://:4000", l.ServiceAddress)
			require.Equal(t, []string{relayAddress, relayName}, []string{l.RelayAddress, l.RelayName})
		}
	}

	for name, d := range deviceServices {
		s := service(t, p, name)
		envs := map[string]string{"GATEWAY_IDENTITY": gatewayID.String()}
		for k, v := range s.Environment {
			envs[k] = *v
		}
		require.Equal(t, d.member, envs["DEVICE"], "service %s: DEVICE", name)
		c := loadTelegraf(t, r, configFile(t, p, s, "/etc/telegraf/telegraf.conf"), envs)
		require.Equal(t, []string{"cpu", "mem", "system"}, sorted(c.InputNames()), "service %s", name)
		require.Equal(t, []string{"ockam"}, c.OutputNames(), "service %s", name)
		out := c.Outputs[0].Output.(*ockamout.Output)
		if d.relayed {
			require.Equal(t, []string{relayAddress, relayName}, out.Route, "service %s: route", name)
			require.Empty(t, out.Address, "service %s: address", name)
		} else {
			require.Equal(t, "tcp://"+gatewayService+":4000", out.Address, "service %s: address", name)
			require.Empty(t, out.Route, "service %s: route", name)
		}
	}
}

// loadTelegraf loads the configuration file (rewritten by r) with envs set,
// and runs every plugin's Init.
func loadTelegraf(t *testing.T, r *replacer, file string, envs map[string]string) *config.Config {
	t.Helper()
	for k, v := range envs {
		t.Setenv(k, v)
	}
	c := config.NewConfig()
	text := r.apply(readFile(t, file), "/ockam")
	require.NoError(t, c.LoadConfigData([]byte(text), file), "%s", file)
	for _, in := range c.Inputs {
		require.NoError(t, in.Init(), "%s: inputs.%s", file, in.Config.Name)
	}
	for _, out := range c.Outputs {
		require.NoError(t, out.Init(), "%s: outputs.%s", file, out.Config.Name)
	}
	return c
}

// makeFleet lays out under root what init.sh makes (with an in-memory
// authority instead of the ockam command) and returns the gateway's
// identifier.
func makeFleet(t *testing.T, root string) secure.Identifier {
	t.Helper()
	now := time.Now()
	f := ockamtest.NewFleet(t)
	public := filepath.Join(root, "public")
	require.NoError(t, os.MkdirAll(public, 0o700))
	ockamtest.WriteFile(t, filepath.Join(public, "authority.identity"), f.Authority.Public().MarshalFile())
	members := map[string]map[string]string{"gateway": {"role": "listener", "relay": relayName}}
	for _, d := range deviceServices {
		members[d.member] = map[string]string{"role": "sensor", "site": d.site}
	}
	var gateway secure.Identifier
	for name, attrs := range members {
		v, err := vault.OpenFile(filepath.Join(root, name, "vault"), nil)
		require.NoError(t, err)
		id, err := secure.CreateIdentity(v, now)
		require.NoError(t, err)
		cred := f.Issue(t, f.Authority, id.Identifier(), attrs, now, time.Hour)
		ockamtest.WriteFile(t, filepath.Join(root, name, name+".cred"), cred.MarshalFile())
		if name == "gateway" {
			gateway = id.Identifier()
		}
	}
	return gateway
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// TestComposeTelegrafConfigsRefuseTypos guards the test above: the loader
// it relies on does refuse an unknown option.
func TestComposeTelegrafConfigsRefuseTypos(t *testing.T) {
	c := config.NewConfig()
	err := c.LoadConfigData([]byte(strings.Join([]string{
		"[[inputs.ockam_listener]]", `  service_adress = "tcp://:4000"`,
	}, "\n")), "typo.conf")
	require.ErrorContains(t, err, "service_adress")
}
