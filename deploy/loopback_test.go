package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestComposeOnLoopback runs the demo of docker-compose.yml without Docker:
// the commands of the init, relay, telegraf-gateway, telegraf-device-* and
// intruder services, with their configuration files, as compose would run
// them, on loopback and in a temporary directory, against influxd 1.8 (as
// InfluxDB). Only the container paths (/ockam, the config mount points), the
// host names and ports, and the gateway's gather interval are rewritten. It
// checks that init is idempotent, that the gateway registers its name at the
// relay, that device-1 opens its channel to the gateway's port and device-2
// through the relay, that both devices' metrics reach InfluxDB tagged with
// their verified identity and site, and that the intruder's four attempts
// are refused and counted in the gateway's internal metrics there.
//
// Like e2e/, it runs only with OCKAM_E2E=1 (make test sets it, with
// OCKAM_BIN and INFLUXD).
func TestComposeOnLoopback(t *testing.T) {
	bin, influxd := requireBinaries(t)
	p, root, r, path := onLoopback(t, bin)

	// init, twice: the second run changes nothing.
	runInit(t, p, r, path)
	first := snapshot(t, root)
	runInit(t, p, r, path)
	require.Equal(t, first, snapshot(t, root), "init changed the fleet when run again")

	db := startInfluxDB(t, influxd, envValue(service(t, p, "influxdb"), "INFLUXDB_DB"))

	// The relay, on a free port instead of 4000.
	rs := service(t, p, relayService)
	relay := startProcess(t, relayService, replaceInArgs(t, commandOf(t, p, rs, r, nil),
		"tcp://0.0.0.0:4000", "tcp://127.0.0.1:0"), append(envOf(rs, r), path))
	relayAddr := relay.waitLog(regexp.MustCompile(`relay listening on (tcp://\S+)`), 30*time.Second)[1]

	gw := service(t, p, gatewayService)
	gwConf := r.apply(readFile(t, configFile(t, p, gw, "/etc/telegraf/telegraf.conf")),
		"/ockam", "tcp://:4000", relayAddress, "http://influxdb:8086", `interval = "10s"`)
	gwConf = strings.NewReplacer("tcp://:4000", "tcp://127.0.0.1:0", relayAddress, relayAddr,
		"http://influxdb:8086", db.url, `interval = "10s"`, `interval = "1s"`).Replace(gwConf)
	gateway := startProcess(t, "telegraf-gateway", commandOf(t, p, gw, r, map[string]string{
		"/etc/telegraf/telegraf.conf": writeTemp(t, "gateway.conf", gwConf),
	}), append(envOf(gw, r), path))
	listening := gateway.waitLog(regexp.MustCompile(`\[inputs\.ockam_listener\] Listening on (\S+) as (I[0-9a-f]+)`), 30*time.Second)
	addr := listening[1]
	gatewayID := strings.TrimSpace(readFile(t, filepath.Join(root, "public", "gateway.id")))
	require.Equal(t, gatewayID, listening[2])
	// Registered at the relay, with the credential init.sh issued: both
	// sides say so.
	gateway.waitLog(regexp.MustCompile(`\[inputs\.ockam_listener\] Registered "`+relayName+`" at relay `+
		regexp.QuoteMeta(relayAddr)), 30*time.Second)
	relay.waitLog(regexp.MustCompile(`Registered "`+relayName+`" for `+regexp.QuoteMeta(gatewayID[:9])), 30*time.Second)

	devices := map[string]string{} // identifier → site
	channels := map[*process]*regexp.Regexp{}
	for name, d := range deviceServices {
		s := service(t, p, name)
		conf := readFile(t, configFile(t, p, s, "/etc/telegraf/telegraf.conf"))
		// Where its channel opens: the relay's route or the gateway's port.
		var via string
		if d.relayed {
			conf = strings.ReplaceAll(r.apply(conf, "/ockam", relayAddress), relayAddress, relayAddr)
			via = "route " + relayAddr + " → " + relayName
		} else {
			conf = strings.ReplaceAll(r.apply(conf, "/ockam", gatewayService+":4000"), gatewayService+":4000", addr)
			via = "tcp://" + addr
		}
		proc := startProcess(t, name, commandOf(t, p, s, r, map[string]string{
			"/etc/telegraf/telegraf.conf": writeTemp(t, d.member+".conf", conf),
		}), append(envOf(s, r), path))
		channels[proc] = regexp.MustCompile(`\[outputs\.ockam\] Channel open to listener ` +
			regexp.QuoteMeta(gatewayID[:9]) + `… at ` + regexp.QuoteMeta(via) + `\n`)
		devices[identifierOf(t, filepath.Join(root, "public", d.member+".identity")).String()] = d.site
	}
	for proc, re := range channels {
		proc.waitLog(re, 30*time.Second)
	}

	intruderSvc := service(t, p, "intruder")
	intruder := startProcess(t, "intruder", replaceInArgs(t, commandOf(t, p, intruderSvc, r, nil),
		gatewayService+":4000", addr), append(envOf(intruderSvc, r), path))
	for _, attempt := range []string{"plaintext", "forged-hello", "rogue-authority", "forged-signature"} {
		intruder.waitLog(regexp.MustCompile(`ockam-intruder: `+attempt+` +refused: `), 30*time.Second)
	}
	require.NotContains(t, intruder.log(), "NOT REFUSED")

	// Both devices, device-2 through the relay, with their verified identity
	// and site; nothing else.
	eventually(t, 60*time.Second, "both devices' cpu metrics in InfluxDB", func() (bool, string) {
		got := map[string]string{}
		for _, s := range db.query(t, "SELECT count(usage_idle) FROM cpu GROUP BY ockam_identity, site") {
			got[s.Tags["ockam_identity"]] = s.Tags["site"]
		}
		return fmt.Sprint(got) == fmt.Sprint(devices), fmt.Sprintf("got %v, want %v", got, devices)
	})
	// Every attempt of the intruder, counted by its reason.
	eventually(t, 30*time.Second, "the intruder's refusals in internal_ockam_listener", func() (bool, string) {
		got := map[string]float64{}
		for _, s := range db.query(t, "SELECT max(handshakes_failed) FROM internal_ockam_listener GROUP BY reason") {
			if len(s.Values) > 0 && len(s.Values[0]) > 1 {
				got[s.Tags["reason"]], _ = s.Values[0][1].(float64)
			}
		}
		for _, reason := range []string{"malformed", "unsupported_version", "unknown_issuer", "bad_signature"} {
			if got[reason] < 1 {
				return false, fmt.Sprintf("handshakes_failed by reason: %v", got)
			}
		}
		return true, ""
	})

	// Revoking device-2 as docs/QUICKSTART.md shows for compose (docker
	// compose run --rm init ockam revocation add …): the gateway reads the
	// list from the public volume and refuses the device.
	runToEnd(t, []string{"ockam", "revocation", "add", "--vault", r.apply("/ockam/authority/vault"),
		"--list", r.apply("/ockam/public/revoked.list"), "--subject", r.apply("/ockam/public/device-2.identity")}, nil)
	// The gateway closes device-2's open channel when it applies the list
	// (docs/SECURITY.md W14) and refuses its next handshakes as revoked; a
	// message that raced the list is refused as revoked. Either counts.
	eventually(t, 60*time.Second, "device-2 refused as revoked", func() (bool, string) {
		var seen []string
		for _, field := range []string{"handshakes_failed", "messages_refused"} {
			s := db.query(t, "SELECT max("+field+") FROM internal_ockam_listener WHERE reason = 'revoked'")
			if len(s) == 1 && len(s[0].Values) == 1 {
				if n, _ := s[0].Values[0][1].(float64); n >= 1 {
					return true, ""
				}
			}
			seen = append(seen, fmt.Sprintf("%s revoked: %+v", field, s))
		}
		return false, strings.Join(seen, "; ")
	})
}

// requireBinaries skips the test unless OCKAM_E2E=1, and then returns the
// directory of the ockam, telegraf and ockam-intruder binaries and the
// influxd binary, failing the test if one is missing.
func requireBinaries(t *testing.T) (bin, influxd string) {
	t.Helper()
	if os.Getenv("OCKAM_E2E") != "1" {
		t.Skip("loopback run of the compose demo skipped: set OCKAM_E2E=1, OCKAM_BIN=<dir with ockam, telegraf " +
			"and ockam-intruder> and INFLUXD=<influxd 1.8> to run it (make test does)")
	}
	bin = os.Getenv("OCKAM_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot, "bin")
	}
	influxd = os.Getenv("INFLUXD")
	if influxd == "" {
		influxd = filepath.Join(repoRoot, ".tools", "bin", "influxd")
	}
	var err error
	if bin, err = filepath.Abs(bin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(bin, "ockam"), filepath.Join(bin, "telegraf"), filepath.Join(bin, "ockam-intruder"), influxd} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("OCKAM_E2E=1 but %s is not an executable (run make build tools): %v", p, err)
		}
	}
	influxd, err = filepath.Abs(influxd)
	if err != nil {
		t.Fatal(err)
	}
	return bin, influxd
}

// onLoopback loads docker-compose.yml and prepares a run of its services
// on loopback: it returns the project, the temporary directory that stands
// for /ockam, the replacer of /ockam by it, and the PATH=... entry of the
// services' environment, which puts the binaries in bin first, as in the
// image (for the test too).
func onLoopback(t *testing.T, bin string) (p *types.Project, root string, r *replacer, path string) {
	t.Helper()
	p = loadProject(t)
	root = t.TempDir()
	r = &replacer{t: t, pairs: []string{"/ockam", root}}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return p, root, r, "PATH=" + os.Getenv("PATH")
}

// runInit runs the init service's command to its end.
func runInit(t *testing.T, p *types.Project, r *replacer, path string) {
	t.Helper()
	s := service(t, p, "init")
	runToEnd(t, commandOf(t, p, s, r, nil), append(envOf(s, r), path))
}

// commandOf returns the service's command, with r applied and every config
// mount point replaced by the repository file it mounts, or by the file
// given in files for it.
func commandOf(t *testing.T, p *types.Project, s types.ServiceConfig, r *replacer, files map[string]string) []string {
	t.Helper()
	require.NotEmpty(t, s.Command, "service %s has no command", s.Name)
	var pairs []string
	for _, c := range s.Configs {
		f, ok := files[c.Target]
		if !ok {
			f = p.Configs[c.Source].File
		}
		pairs = append(pairs, c.Target, f)
	}
	mounts := strings.NewReplacer(pairs...)
	args := make([]string, len(s.Command))
	for i, a := range s.Command {
		args[i] = r.apply(mounts.Replace(a))
	}
	return args
}

// replaceInArgs replaces old with new in args, failing t unless old occurs
// in one of them.
func replaceInArgs(t *testing.T, args []string, old, new string) []string {
	t.Helper()
	require.True(t, slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, old) }),
		"%q does not occur in %q", old, args)
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = strings.ReplaceAll(a, old, new)
	}
	return out
}

// envOf returns the service's environment with r applied.
func envOf(s types.ServiceConfig, r *replacer) []string {
	kv := env(s)
	for i := range kv {
		kv[i] = r.apply(kv[i])
	}
	return kv
}

func envValue(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// runToEnd runs args with env and fails t unless it exits 0.
func runToEnd(t *testing.T, args, env []string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s:\n%s", strings.Join(args, " "), out)
	t.Logf("%s:\n%s", strings.Join(args, " "), out)
}

// snapshot returns every file under root with its content.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[p] = string(b)
		return err
	})
	require.NoError(t, err)
	return files
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func identifierOf(t *testing.T, identityFile string) secure.Identifier {
	t.Helper()
	id, err := secure.ParseIdentityFile([]byte(readFile(t, identityFile)))
	require.NoError(t, err)
	return id.Identifier()
}

// process is a program started for the test, its output in a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	path string // the log
	done chan struct{}
}

// startProcess runs args with env (added to the test's environment); it is
// stopped when the test ends, and its log is printed if the test failed.
func startProcess(t *testing.T, name string, args, env []string) *process {
	t.Helper()
	p := &process{name: name, path: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	logFile, err := os.Create(p.path)
	require.NoError(t, err)
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	require.NoError(t, p.cmd.Start(), "start %s", name)
	go func() {
		_ = p.cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("E2E_LOGS") == "1" {
			t.Logf("--- %s (%s):\n%s", name, strings.Join(args, " "), tail(p.log(), 60))
		}
	})
	return p
}

func (p *process) log() string {
	b, _ := os.ReadFile(p.path)
	return string(b)
}

// waitLog waits until the log matches re and returns the submatches.
func (p *process) waitLog(re *regexp.Regexp, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		// Whether it had exited, then the log: a process that logs the line
		// and exits between a read of the log and the check (the intruder
		// does, after its last attempt) must not count as exiting without it.
		exited := false
		select {
		case <-p.done:
			exited = true
		default:
		}
		if m := re.FindStringSubmatch(p.log()); m != nil {
			return m
		}
		if exited {
			panic(fmt.Sprintf("%s exited before logging %v:\n%s", p.name, re, tail(p.log(), 40)))
		}
		if time.Now().After(deadline) {
			panic(fmt.Sprintf("%s did not log %v within %v:\n%s", p.name, re, timeout, tail(p.log(), 40)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually retries cond every half second until it holds or timeout
// passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// influxDB is influxd 1.8 on loopback, configured from the template that
// e2e/ and scripts/demo.sh use.
type influxDB struct {
	url, db string
}

func startInfluxDB(t *testing.T, bin, db string) *influxDB {
	t.Helper()
	require.NotEmpty(t, db)
	dir := t.TempDir()
	tmpl := template.Must(template.New("influxdb.conf.tmpl").Option("missingkey=error").ParseFiles("influxdb.conf.tmpl"))
	var conf bytes.Buffer
	require.NoError(t, tmpl.Execute(&conf, map[string]string{"Dir": dir, "HTTPBind": "127.0.0.1:0"}))
	p := startProcess(t, "influxd", []string{bin, "-config", writeTemp(t, "influxdb.conf", conf.String())}, nil)
	// Flux's standard library takes seconds of CPU to initialise before the bind.
	addr := p.waitLog(regexp.MustCompile(`msg="Listening on HTTP".* addr=(\S+)`), 90*time.Second)[1]
	d := &influxDB{url: "http://" + addr, db: db}
	eventually(t, 30*time.Second, "influxd /ping", func() (bool, string) {
		resp, err := http.Get(d.url + "/ping")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNoContent, resp.Status
	})
	resp, err := http.PostForm(d.url+"/query", url.Values{"q": {"CREATE DATABASE " + db}})
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "CREATE DATABASE")
	return d
}

// series is one series of an InfluxQL result.
type series struct {
	Name   string            `json:"name"`
	Tags   map[string]string `json:"tags"`
	Values [][]any           `json:"values"`
}

// query runs an InfluxQL query and returns its series.
func (d *influxDB) query(t *testing.T, q string) []series {
	t.Helper()
	resp, err := http.Get(d.url + "/query?" + url.Values{"db": {d.db}, "q": {q}}.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	var out struct {
		Results []struct {
			Series []series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	require.Len(t, out.Results, 1)
	require.Empty(t, out.Results[0].Error, q)
	return out.Results[0].Series
}
