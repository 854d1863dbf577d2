package deploy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"

	// The stock plugins of the scaled-out topology, as cmd/telegraf
	// compiles them in.
	_ "github.com/influxdata/telegraf/plugins/inputs/nats_consumer"
	_ "github.com/influxdata/telegraf/plugins/outputs/nats"
	_ "github.com/influxdata/telegraf/plugins/parsers/influx"
)

// The services of the `scale` profile of docker-compose.yml.
var (
	scaleGateways  = []string{"scale-gateway-1", "scale-gateway-2", "scale-gateway-3"}
	scaleNATS      = []string{"nats-1", "nats-2", "nats-3"}
	scaleConsumers = []string{"scale-consumer-1", "scale-consumer-2"}
)

// The values the compose configurations give the placeholders of
// deploy/scale/*.tmpl.
var (
	composeNATS    = `["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"]`
	composeScaleTT = map[string]map[string]string{
		"gateway.conf": {
			"ListenAddress": ":4000", "VaultPath": "/ockam/${GATEWAY}/vault", "VaultPassphrase": "",
			"CredentialPath": "/ockam/${GATEWAY}/${GATEWAY}.cred", "AuthorityPath": "/ockam/public/authority.identity",
			"RevocationSource": "tcp://authority:4100", "AllowMeasurements": `["cpu", "mem", "system"]`,
			"NatsServers": composeNATS, "FlushInterval": "1s",
		},
		"consumer.conf": {"NatsServers": composeNATS, "InfluxURL": "http://influxdb:8086", "Bucket": "telegraf/autogen"},
		"device.conf": {
			"Interval": "5s", "Inputs": "[[inputs.cpu]]\n  percpu = false\n  totalcpu = true\n\n[[inputs.mem]]\n\n[[inputs.system]]",
			"ProxyAddress": "haproxy:4000", "VaultPath": "/ockam/${DEVICE}/vault", "VaultPassphrase": "",
			"CredentialPath": "/ockam/${DEVICE}/${DEVICE}.cred", "AuthorityPath": "/ockam/public/authority.identity",
		},
		"haproxy.cfg": {
			"Bind": ":4000", "Gateway1": "scale-gateway-1:4000", "Gateway2": "scale-gateway-2:4000",
			"Gateway3": "scale-gateway-3:4000",
		},
	}
)

// loadScaleProject loads docker-compose.yml with the `scale` profile.
func loadScaleProject(t *testing.T) *types.Project {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(nil), cli.WithProfiles([]string{"scale"}))
	require.NoError(t, err)
	p, err := opts.LoadProject(context.Background())
	require.NoError(t, err, "docker-compose.yml --profile scale")
	return p
}

// TestComposeScaleServices: the profile adds exactly the topology of
// docs/SCALING.md, and the default set stays without it.
func TestComposeScaleServices(t *testing.T) {
	p := loadScaleProject(t)
	var scale []string
	for name, s := range p.Services {
		if slices.Contains(s.Profiles, "scale") {
			scale = append(scale, name)
		}
	}
	want := slices.Concat([]string{"scale-init", "authority", "haproxy", "scale-device"}, scaleGateways, scaleNATS, scaleConsumers)
	slices.Sort(want)
	slices.Sort(scale)
	require.Equal(t, want, scale)
	for _, name := range want {
		_, ok := loadProject(t).Services[name]
		require.False(t, ok, "service %s runs without --profile scale", name)
	}
	require.Equal(t, "haproxy:2.6", service(t, p, "haproxy").Image, "HAProxy: the version the tests run (Debian 12's)")
	for _, n := range scaleNATS {
		require.True(t, strings.HasPrefix(service(t, p, n).Image, "nats:2"), "service %s: image", n)
	}
}

// TestComposeScaleConfigs: each configuration file of the profile is its
// template of deploy/scale/ rendered with the compose names, comments
// aside, so that the compose topology is the one the e2e tests fault; and
// Telegraf's loader accepts the Telegraf ones.
func TestComposeScaleConfigs(t *testing.T) {
	p := loadScaleProject(t)
	files := map[string]string{ // compose file → its template
		configFile(t, p, service(t, p, "scale-gateway-1"), "/etc/telegraf/telegraf.conf"):  "gateway.conf.tmpl",
		configFile(t, p, service(t, p, "scale-consumer-1"), "/etc/telegraf/telegraf.conf"): "consumer.conf.tmpl",
		configFile(t, p, service(t, p, "scale-device"), "/etc/telegraf/telegraf.conf"):     "device.conf.tmpl",
		configFile(t, p, service(t, p, "haproxy"), "/usr/local/etc/haproxy/haproxy.cfg"):   "haproxy.cfg.tmpl",
	}
	for file, tmpl := range files {
		data := composeScaleTT[filepath.Base(file)]
		require.NotNil(t, data, "%s: no placeholder values", file)
		want := settings(renderScale(t, tmpl, data))
		require.Equal(t, want, settings(readFile(t, file)), "%s differs from deploy/scale/%s", file, tmpl)
		if strings.HasSuffix(file, ".conf") {
			t.Setenv("GATEWAY", "scale-gateway-1")
			t.Setenv("DEVICE", "scale-device")
			require.NoError(t, config.NewConfig().LoadConfigData([]byte(readFile(t, file)), file), "%s", file)
		}
	}
	// Every service of a kind mounts the same file.
	for _, names := range [][]string{scaleGateways, scaleConsumers} {
		for _, n := range names {
			require.Equal(t, configFile(t, p, service(t, p, names[0]), "/etc/telegraf/telegraf.conf"),
				configFile(t, p, service(t, p, n), "/etc/telegraf/telegraf.conf"), "service %s", n)
		}
	}
}

// TestComposeScaleWiring: who talks to whom, on which ports, with which
// vault, and who waits for whom.
func TestComposeScaleWiring(t *testing.T) {
	p := loadScaleProject(t)
	// The gateways share the authority service, on the port it listens on.
	auth := strings.Join(service(t, p, "authority").Command, " ")
	require.Contains(t, auth, "--listen tcp://0.0.0.0:4100")
	require.Contains(t, auth, "--vault /ockam/authority/vault")
	// The NATS nodes: each names itself, JetStream on, routes to all three,
	// and the port the configurations name.
	for _, n := range scaleNATS {
		cmd := strings.Join(service(t, p, n).Command, " ")
		require.Contains(t, cmd, "--name "+n)
		require.Contains(t, cmd, "--jetstream")
		require.Contains(t, cmd, "--cluster nats://0.0.0.0:6222")
		require.Contains(t, cmd, "--routes nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222")
		require.Equal(t, n, service(t, p, n).Hostname)
		require.Contains(t, composeNATS, `"nats://`+n+`:4222"`)
	}
	// The consumers write to the database InfluxDB creates.
	require.Equal(t, "telegraf", envValue(service(t, p, "influxdb"), "INFLUXDB_DB"))
	require.Equal(t, "telegraf/autogen", composeScaleTT["consumer.conf"]["Bucket"])

	// Each gateway: its own vault, named by GATEWAY, and the public files.
	for _, g := range scaleGateways {
		s := service(t, p, g)
		require.Equal(t, g, envValue(s, "GATEWAY"))
		require.ElementsMatch(t, []string{g + ":/ockam/" + g, "ockam-public:/ockam/public:ro"}, mountList(s), "service %s", g)
		require.Equal(t, "ockam-"+g, mountSource(s, "/ockam/"+g))
	}
	dev := service(t, p, "scale-device")
	require.Equal(t, "scale-device", envValue(dev, "DEVICE"))
	require.Equal(t, "ockam-scale-device", mountSource(dev, "/ockam/scale-device"))

	// scale-init enrolls exactly the gateways and the device, with the
	// attributes the gateways' policy and the devices' check need.
	script := readFile(t, configFile(t, p, service(t, p, "scale-init"), "/usr/local/share/telegraf-ockam/scale-init.sh"))
	var enrolled []string
	for _, m := range regexp.MustCompile(`(?m)^enroll (\S+) (.*)$`).FindAllStringSubmatch(script, -1) {
		enrolled = append(enrolled, m[1]+" "+m[2])
	}
	want := []string{"scale-device role=sensor site=plant-11"}
	for _, g := range scaleGateways {
		want = append(want, g+" role=listener")
	}
	require.ElementsMatch(t, want, enrolled)

	deps := map[string][]string{
		"scale-init":   {"init"},
		"authority":    {"init"},
		"haproxy":      scaleGateways,
		"scale-device": {"scale-init", "haproxy"},
	}
	for _, g := range scaleGateways {
		deps[g] = slices.Concat([]string{"scale-init", "authority"}, scaleNATS)
	}
	deps["scale-consumer-1"] = slices.Concat([]string{"influxdb"}, scaleNATS)
	// The first consumer creates the durable consumer; two at once can
	// fail one of them at start.
	deps["scale-consumer-2"] = slices.Concat([]string{"influxdb", "scale-consumer-1"}, scaleNATS)
	for name, want := range deps {
		got := sortedKeys(service(t, p, name).DependsOn)
		slices.Sort(want)
		require.Equal(t, want, got, "service %s: depends_on", name)
	}
}

// renderScale renders deploy/scale/name with data.
func renderScale(t *testing.T, name string, data map[string]string) string {
	t.Helper()
	tmpl, err := template.New(name).Option("missingkey=error").ParseFiles(filepath.Join(repoRoot, "deploy", "scale", name))
	require.NoError(t, err)
	var b strings.Builder
	require.NoError(t, tmpl.Execute(&b, data), "deploy/scale/%s", name)
	return b.String()
}

// settings returns the lines of a configuration that are neither comments
// nor blank.
func settings(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "#") {
			out = append(out, l)
		}
	}
	return out
}

// mountList returns a service's volumes as "source:target[:ro]".
func mountList(s types.ServiceConfig) []string {
	var out []string
	for _, v := range s.Volumes {
		m := fmt.Sprintf("%s:%s", strings.TrimPrefix(v.Source, "ockam-"), v.Target)
		if strings.HasPrefix(v.Source, "ockam-public") {
			m = v.Source + ":" + v.Target
		}
		if v.ReadOnly {
			m += ":ro"
		}
		out = append(out, m)
	}
	return out
}

// mountSource returns the volume mounted at target, or "".
func mountSource(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Target == target {
			return v.Source
		}
	}
	return ""
}
