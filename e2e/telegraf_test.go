package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"
)

// deployDir holds the configuration templates shared with scripts/demo.sh.
const deployDir = "../deploy"

// renderTemplate renders deploy/name to out with data. The templates use
// plain {{.Field}} placeholders only, so that the demo can fill them in bash;
// a field missing from data is an error.
func renderTemplate(t *testing.T, name, out string, data map[string]string) {
	t.Helper()
	tmpl, err := template.New(filepath.Base(name)).Option("missingkey=error").ParseFiles(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatalf("template: %v", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, data); err != nil {
		t.Fatalf("template %s: %v", name, err)
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// listeningOckam is the line inputs.ockam_listener logs once it is bound.
var listeningOckam = regexp.MustCompile(`\[inputs\.ockam_listener\] Listening on (\S+) as (I[0-9a-f]+)`)

// listener is the gateway's Telegraf: inputs.ockam_listener → InfluxDB.
type listener struct {
	t      *testing.T
	bin    string
	member *member
	addr   string // host:port it listens on, once started
	data   map[string]string
	proc   *process
	starts int
}

// startListener starts the gateway's Telegraf for m on a free loopback
// port, trusting devices from authority whose policy lets role=sensor write
// the measurements in allow (a TOML array), and writing to db. revoked is
// the authority's revocation list file, or "" for none (the file must
// exist).
func startListener(t *testing.T, bin string, m, authority *member, db *influxDB, allow, revoked string) *listener {
	t.Helper()
	l := &listener{t: t, bin: bin, member: m, data: map[string]string{
		"ListenAddress":     "127.0.0.1:0",
		"VaultPath":         m.vault,
		"VaultPassphrase":   m.passphrase,
		"CredentialPath":    m.credential,
		"AuthorityPath":     authority.identity,
		"RevocationList":    revoked,
		"AllowMeasurements": allow,
		"InfluxURL":         db.url(),
	}}
	l.start()
	return l
}

// start renders the configuration, runs Telegraf and waits until the
// listener is bound.
func (l *listener) start() {
	l.t.Helper()
	l.starts++
	conf := filepath.Join(l.t.TempDir(), "listener.conf")
	renderTemplate(l.t, "listener.conf.tmpl", conf, l.data)
	l.proc = startProcess(l.t, fmt.Sprintf("listener-%d", l.starts), l.bin, "--config", conf)
	m := l.proc.waitLog(listeningOckam, 30*time.Second)
	if m[2] != l.member.id {
		l.t.Fatalf("the listener runs as %s, want %s", m[2], l.member.id)
	}
	l.addr = m[1]
}

// restart starts a stopped or killed listener again, on the same port.
func (l *listener) restart() {
	l.t.Helper()
	l.data["ListenAddress"] = l.addr
	l.start()
}

// startDevice starts a device's Telegraf for m (inputs → outputs.ockam),
// sending what inputs (TOML [[inputs.*]] sections) gather every interval to
// l, whose credential must come from authority.
func startDevice(t *testing.T, bin string, m, authority *member, l *listener, interval, inputs string) *process {
	t.Helper()
	conf := filepath.Join(t.TempDir(), m.name+".conf")
	renderTemplate(t, "device.conf.tmpl", conf, map[string]string{
		"Interval":         interval,
		"Inputs":           inputs,
		"ListenerAddress":  l.addr,
		"ListenerIdentity": l.member.id,
		"VaultPath":        m.vault,
		"VaultPassphrase":  m.passphrase,
		"CredentialPath":   m.credential,
		"AuthorityPath":    authority.identity,
	})
	return startProcess(t, m.name, bin, "--config", conf)
}
