package trust

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// wait bounds every wait for a condition: generous, since the machine may
// be slow; a condition that holds ends the wait at once.
const wait = 30 * time.Second

// pki is an authority, a party's vault and credential, and a directory.
type pki struct {
	t         *testing.T
	dir       string
	now       time.Time
	authority *secure.LocalIdentity
	authFile  string
	vaultDir  string
	id        *secure.LocalIdentity
	credFile  string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{t: t, dir: t.TempDir(), now: time.Now()}
	var err error
	p.authority, err = secure.CreateIdentity(vault.NewMemory(), p.now)
	require.NoError(t, err)
	p.authFile = p.write("authority.identity", p.authority.Public().MarshalFile())
	p.vaultDir, p.id, p.credFile = p.party("party", "")
	return p
}

// party creates a vault with an identity and a credential for it.
func (p *pki) party(name, passphrase string) (string, *secure.LocalIdentity, string) {
	p.t.Helper()
	dir := filepath.Join(p.dir, name)
	v, err := vault.OpenFile(dir, []byte(passphrase))
	require.NoError(p.t, err)
	id, err := secure.CreateIdentity(v, p.now)
	require.NoError(p.t, err)
	return dir, id, p.write(name+".cred", p.credential(id.Identifier(), p.now, time.Hour).MarshalFile())
}

func (p *pki) credential(subject secure.Identifier, issued time.Time, ttl time.Duration) *secure.Credential {
	p.t.Helper()
	c, err := secure.IssueCredential(p.authority.Signer(), subject, map[string]string{"role": "sensor"}, issued, ttl, nil)
	require.NoError(p.t, err)
	return c
}

func (p *pki) write(name string, data []byte) string {
	p.t.Helper()
	path := filepath.Join(p.dir, name)
	require.NoError(p.t, os.WriteFile(path, data, 0o600))
	return path
}

// list signs a list of the authority, issued now, due at next.
func (p *pki) list(seq uint64, next time.Time, revoked ...secure.Identifier) *secure.RevocationList {
	p.t.Helper()
	l, err := secure.NewRevocationList(p.authority.Signer(), seq, p.now, next, revoked, nil)
	require.NoError(p.t, err)
	return l
}

// config is a Config of the party with the plugin's names.
func (p *pki) config(log Logger) Config {
	return Config{Vault: p.vaultDir, Credential: p.credFile, Authority: p.authFile, Log: log}
}

// logger records what is logged, safe for concurrent use.
type logger struct {
	mu    sync.Mutex
	lines []string // "E! text", "W! text", ...
}

func (l *logger) add(level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(format, args...))
}

func (l *logger) Errorf(format string, args ...any) { l.add("E!", format, args...) }
func (l *logger) Warnf(format string, args ...any)  { l.add("W!", format, args...) }
func (l *logger) Infof(format string, args ...any)  { l.add("I!", format, args...) }
func (l *logger) Debugf(format string, args ...any) { l.add("D!", format, args...) }

// find returns the lines that contain every part.
func (l *logger) find(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

// requireLog waits for a line containing every part.
func (l *logger) requireLog(t *testing.T, parts ...string) {
	t.Helper()
	require.Eventually(t, func() bool { return len(l.find(parts...)) > 0 }, wait, time.Millisecond,
		"no log line with %q", parts)
}
