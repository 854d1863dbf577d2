package deploy_test

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
)

// TestComposeServices: the services of the issue, each with its image or
// build, and nothing else.
func TestComposeServices(t *testing.T) {
	p := loadProject(t)
	want := []string{"chronograf", "influxdb", "init", "intruder", "kapacitor", gatewayService, relayService}
	for s := range deviceServices {
		want = append(want, s)
	}
	slices.Sort(want)
	require.Equal(t, want, sortedKeys(p.Services))

	// The TICK stack: official images, InfluxDB the version the tests run.
	require.Equal(t, "influxdb:1.8", service(t, p, "influxdb").Image)
	require.True(t, strings.HasPrefix(service(t, p, "chronograf").Image, "chronograf:1."))
	require.True(t, strings.HasPrefix(service(t, p, "kapacitor").Image, "kapacitor:1."))

	// Ours: built from the Dockerfile at the root, one image.
	for _, name := range ourServices() {
		s := service(t, p, name)
		require.NotNil(t, s.Build, "service %s has no build", name)
		ctx, err := filepath.Abs(repoRoot)
		require.NoError(t, err)
		require.Equal(t, ctx, s.Build.Context, "service %s: build context", name)
		dockerfile := s.Build.Dockerfile
		if !filepath.IsAbs(dockerfile) {
			dockerfile = filepath.Join(s.Build.Context, dockerfile)
		}
		require.FileExists(t, dockerfile, "service %s", name)
		require.Equal(t, "telegraf-ockam:demo", s.Image, "service %s: image", name)
	}
}

// ourServices are the services that run our image.
func ourServices() []string {
	s := []string{"init", "intruder", gatewayService, relayService}
	for d := range deviceServices {
		s = append(s, d)
	}
	slices.Sort(s)
	return s
}

// TestComposeWiring: who talks to whom, who waits for whom.
func TestComposeWiring(t *testing.T) {
	p := loadProject(t)
	envOf := func(name string) map[string]string {
		m := map[string]string{}
		for k, v := range service(t, p, name).Environment {
			if v != nil {
				m[k] = *v
			}
		}
		return m
	}
	require.Equal(t, "http://influxdb:8086", envOf("kapacitor")["KAPACITOR_INFLUXDB_0_URLS_0"])
	require.Equal(t, "http://influxdb:8086", envOf("chronograf")["INFLUXDB_URL"])
	require.Equal(t, "http://kapacitor:9092", envOf("chronograf")["KAPACITOR_URL"])

	// The database InfluxDB creates is the one the gateway writes to and the
	// Kapacitor task reads.
	db := envOf("influxdb")["INFLUXDB_DB"]
	require.NotEmpty(t, db)
	gw := service(t, p, gatewayService)
	gatewayConf := readFile(t, configFile(t, p, gw, "/etc/telegraf/telegraf.conf"))
	require.Contains(t, gatewayConf, `bucket = "`+db+`/autogen"`)
	require.Contains(t, gatewayConf, `urls = ["http://influxdb:8086"]`)
	tick := readFile(t, configFile(t, p, service(t, p, "kapacitor"), "/etc/kapacitor/load/tasks/ockam_refusals.tick"))
	require.Contains(t, tick, `dbrp "`+db+`"."autogen"`)
	// The credential-expiry alert reads the gauge both plugins report.
	expiry := readFile(t, configFile(t, p, service(t, p, "kapacitor"), "/etc/kapacitor/load/tasks/ockam_credential_expiry.tick"))
	require.Contains(t, expiry, `dbrp "`+db+`"."autogen"`)
	for _, want := range []string{`.measurement('internal_ockam_listener')`, `.measurement('internal_ockam')`,
		`"credential_expires_in_seconds" < week`, `"credential_expires_in_seconds" < day`} {
		require.Contains(t, expiry, want)
	}

	// The gateway listens on 4000, published; device-1 and the intruder dial
	// it. It also registers its name at the relay, which listens on the port
	// the gateway and device-2 dial and trusts the authority everyone trusts.
	require.Contains(t, gatewayConf, `service_address = "tcp://:4000"`)
	require.True(t, slices.ContainsFunc(gw.Ports, func(pc types.ServicePortConfig) bool {
		return pc.Target == 4000 && pc.Published == "4000"
	}), "telegraf-gateway does not publish port 4000: %+v", gw.Ports)
	require.Contains(t, gatewayConf, `relay_address = "`+relayAddress+`"`)
	require.Contains(t, gatewayConf, `relay_name = "`+relayName+`"`)
	require.Contains(t, gatewayConf, `authority_paths = ["/ockam/public/authority.identity"]`)
	relayURL, err := url.Parse(relayAddress)
	require.NoError(t, err)
	require.Equal(t, relayService, relayURL.Hostname(), "relay_address names the relay service")
	relayCmd := strings.Join(service(t, p, relayService).Command, " ")
	require.True(t, strings.HasPrefix(relayCmd, "ockam relay serve "), "relay command: %s", relayCmd)
	require.Contains(t, relayCmd, "--listen tcp://0.0.0.0:"+relayURL.Port())
	require.Contains(t, relayCmd, "--authority /ockam/public/authority.identity")
	for name, d := range deviceServices {
		conf := readFile(t, configFile(t, p, service(t, p, name), "/etc/telegraf/telegraf.conf"))
		if d.relayed {
			require.Contains(t, conf, `route = ["`+relayAddress+`", "`+relayName+`"]`, "service %s", name)
			require.NotRegexp(t, `(?m)^\s*address =`, conf, "service %s", name)
		} else {
			require.Contains(t, conf, `address = "tcp://`+gatewayService+`:4000"`, "service %s", name)
		}
	}
	require.Contains(t, strings.Join(service(t, p, "intruder").Command, " "), "--address "+gatewayService+":4000")

	// Start order.
	deps := map[string]map[string]string{
		"kapacitor":  {"influxdb": types.ServiceConditionHealthy},
		"chronograf": {"influxdb": types.ServiceConditionHealthy, "kapacitor": types.ServiceConditionStarted},
		"init":       {},
		relayService: {"init": types.ServiceConditionCompletedSuccessfully},
		gatewayService: {"init": types.ServiceConditionCompletedSuccessfully,
			"influxdb": types.ServiceConditionHealthy, relayService: types.ServiceConditionStarted},
		"intruder": {"init": types.ServiceConditionCompletedSuccessfully, gatewayService: types.ServiceConditionStarted},
	}
	for name, d := range deviceServices {
		deps[name] = map[string]string{"init": types.ServiceConditionCompletedSuccessfully,
			gatewayService: types.ServiceConditionStarted}
		if d.relayed {
			deps[name][relayService] = types.ServiceConditionStarted
		}
	}
	for name, want := range deps {
		got := map[string]string{}
		for dep, d := range service(t, p, name).DependsOn {
			got[dep] = d.Condition
		}
		require.Equal(t, want, got, "service %s: depends_on", name)
	}
	require.NotNil(t, service(t, p, "influxdb").HealthCheck, "influxdb needs a healthcheck for service_healthy")
}

// TestComposeVolumes: each member sees its own vault and the public files
// (read-only); only init sees the authority's keys.
func TestComposeVolumes(t *testing.T) {
	p := loadProject(t)
	mounts := func(name string) map[string]string { // target → "volume[:ro]"
		m := map[string]string{}
		for _, v := range service(t, p, name).Volumes {
			require.Equal(t, types.VolumeTypeVolume, v.Type, "service %s: %s is not a named volume", name, v.Target)
			src := v.Source
			if v.ReadOnly {
				src += ":ro"
			}
			m[v.Target] = src
		}
		return m
	}
	members := map[string]string{gatewayService: "gateway"}
	for s, d := range deviceServices {
		members[s] = d.member
	}
	initWant := map[string]string{"/ockam/authority": "ockam-authority", "/ockam/public": "ockam-public"}
	for svc, m := range members {
		initWant["/ockam/"+m] = "ockam-" + m
		require.Equal(t, map[string]string{"/ockam/" + m: "ockam-" + m, "/ockam/public": "ockam-public:ro"},
			mounts(svc), "service %s", svc)
	}
	require.Equal(t, initWant, mounts("init"))
	require.Equal(t, map[string]string{"/ockam/public": "ockam-public:ro"}, mounts("intruder"))
	require.Equal(t, map[string]string{"/ockam/public": "ockam-public:ro"}, mounts(relayService))
	require.Equal(t, map[string]string{"/var/lib/influxdb": "influxdb-data"}, mounts("influxdb"))

	// Every declared volume is used, by a service of the default set or of
	// a profile (scale); compose-go already refuses undeclared ones.
	used := map[string]bool{}
	for _, services := range []types.Services{p.Services, p.DisabledServices} {
		for _, s := range services {
			for _, v := range s.Volumes {
				used[v.Source] = true
			}
		}
	}
	for name := range p.Volumes {
		require.True(t, used[name], "volume %s is declared but not used", name)
	}

	// init enrolls exactly the members that run, with the paths they use.
	script := readFile(t, configFile(t, p, service(t, p, "init"), "/usr/local/share/telegraf-ockam/init.sh"))
	var enrolled []string
	for _, m := range regexp.MustCompile(`(?m)^enroll (\S+)`).FindAllStringSubmatch(script, -1) {
		enrolled = append(enrolled, m[1])
	}
	want := []string{"gateway"}
	for _, d := range deviceServices {
		want = append(want, d.member)
	}
	slices.Sort(want)
	slices.Sort(enrolled)
	require.Equal(t, want, enrolled, "members enrolled by init.sh")
	// The gateway's credential lets it register its relay_name, and each
	// device's carries the site the tests expect.
	require.Regexp(t, `(?m)^enroll gateway .*\brelay=`+regexp.QuoteMeta(relayName)+`(\s|$)`, script)
	for _, d := range deviceServices {
		require.Regexp(t, `(?m)^enroll `+d.member+` .*\bsite=`+d.site+`(\s|$)`, script)
	}
}

// TestComposeDeviceConfigs: a relayed device's configuration is a direct
// device's with the route through the relay for the gateway's address, and
// nothing else changed but the comments, so that the demo shows the two
// paths side by side.
func TestComposeDeviceConfigs(t *testing.T) {
	p := loadProject(t)
	const (
		address = `  address = "tcp://` + gatewayService + `:4000"`
		route   = `  route = ["` + relayAddress + `", "` + relayName + `"]`
	)
	settings := func(file string) []string { // the lines that are not comments
		var lines []string
		for _, l := range strings.Split(readFile(t, file), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "#") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	var direct, relayed []string
	for name, d := range deviceServices {
		lines := settings(configFile(t, p, service(t, p, name), "/etc/telegraf/telegraf.conf"))
		if d.relayed {
			require.Contains(t, lines, route, "service %s", name)
			relayed = lines
		} else {
			require.Contains(t, lines, address, "service %s", name)
			direct = lines
		}
	}
	require.NotNil(t, direct, "no device dials the gateway directly")
	require.NotNil(t, relayed, "no device goes through the relay")
	want := slices.Clone(direct)
	want[slices.Index(want, address)] = route
	require.Equal(t, want, relayed)
}

// TestComposeConfigFiles: every file the compose file names is in the
// repository, and every /ockam path a Telegraf configuration or command
// names lies in a volume that its service mounts.
func TestComposeConfigFiles(t *testing.T) {
	p := loadProject(t)
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	for name, c := range p.Configs {
		require.NotEmpty(t, c.File, "config %s has no file", name)
		require.True(t, strings.HasPrefix(c.File, root+string(filepath.Separator)), "config %s: %s is outside the repository", name, c.File)
		require.FileExists(t, c.File, "config %s", name)
	}
	for _, s := range p.Services {
		for _, c := range s.Configs {
			_, ok := p.Configs[c.Source]
			require.True(t, ok, "service %s: config %q is not defined", s.Name, c.Source)
		}
	}

	path := regexp.MustCompile(`/ockam/[A-Za-z0-9_.${}/-]+`)
	for _, name := range append(ourServices(), "kapacitor") {
		s := service(t, p, name)
		texts := []string{strings.Join(s.Command, " ")}
		for _, c := range s.Configs {
			if !strings.HasSuffix(c.Target, ".sh") { // init.sh builds its paths from OCKAM_ROOT
				texts = append(texts, readFile(t, p.Configs[c.Source].File))
			}
		}
		vars := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				vars[k] = *v
			}
		}
		for _, text := range texts {
			for _, ref := range path.FindAllString(os.Expand(text, func(k string) string { return vars[k] }), -1) {
				require.True(t, slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
					return strings.HasPrefix(ref, v.Target+"/")
				}), "service %s uses %s, which is in none of its volumes", name, ref)
			}
		}
	}
}

// TestDockerfile: the static build of the binaries the services run.
func TestDockerfile(t *testing.T) {
	dockerfile := readFile(t, filepath.Join(repoRoot, "Dockerfile"))
	stages := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(dockerfile, -1)
	require.Len(t, stages, 2, "a build stage and a final stage")
	require.True(t, strings.HasPrefix(stages[1][1], "alpine:") || strings.HasPrefix(stages[1][1], "gcr.io/distroless/static"),
		"final stage %s: want a small base", stages[1][1])
	require.Contains(t, dockerfile, "CGO_ENABLED=0 go build")
	require.Regexp(t, `(?m)^USER \d+:\d+$`, dockerfile, "the final image runs as a non-root user")

	// The Telegraf version string is the one make build sets.
	version := regexp.MustCompile(`internal\.Version=(\S+?)["\s]`)
	makefile := readFile(t, filepath.Join(repoRoot, "Makefile"))
	mv, dv := version.FindStringSubmatch(makefile), version.FindStringSubmatch(dockerfile)
	require.NotNil(t, mv, "Makefile: no internal.Version")
	require.NotNil(t, dv, "Dockerfile: no internal.Version")
	require.Equal(t, mv[1], dv[1], "the Dockerfile's Telegraf version differs from the Makefile's")

	var pkgs []string
	for _, m := range regexp.MustCompile(`\./cmd/[A-Za-z0-9_-]+`).FindAllString(dockerfile, -1) {
		pkgs = append(pkgs, m)
		require.DirExists(t, filepath.Join(repoRoot, m))
	}
	for _, bin := range []string{"./cmd/telegraf", "./cmd/ockam", "./cmd/ockam-intruder"} {
		require.Contains(t, pkgs, bin, "the image needs %s", bin)
	}

	if testing.Short() {
		t.Skip("the static build takes a while")
	}
	// As the Dockerfile builds them: without cgo, so that nothing that
	// needs it (a PKCS#11 vault, say) slips into the image's import graph.
	cmd := exec.Command("go", append([]string{"build", "-o", t.TempDir() + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "CGO_ENABLED=0 go build %s:\n%s", strings.Join(pkgs, " "), out)
}
