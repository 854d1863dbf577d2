package main

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
)

// testFleet is an authority, a listener and the files ockamd needs.
type testFleet struct {
	*ockamtest.Fleet
	listener ockamtest.Member
}

func newTestFleet(t *testing.T) *testFleet {
	f := ockamtest.NewFleet(t)
	return &testFleet{Fleet: f, listener: f.Enroll(t, "listener", map[string]string{"role": "listener"})}
}

// sampleFor is the sample configuration with the paths of f.
func (f *testFleet) sampleFor() string {
	return strings.NewReplacer(
		`"/etc/ockamd/listener"`, fmt.Sprintf("%q", f.listener.VaultPath),
		`"/etc/ockamd/listener.cred"`, fmt.Sprintf("%q", f.listener.CredentialPath),
		`"/etc/ockamd/authority.identity"`, fmt.Sprintf("%q", f.AuthorityFile),
	).Replace(sampleConfig)
}

// writeConfig writes a configuration file and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ockamd.toml")
	ockamtest.WriteFile(t, path, []byte(text))
	return path
}

func TestSampleConfig(t *testing.T) {
	f := newTestFleet(t)
	t.Setenv(envToken, "")
	os.Unsetenv(envToken)
	cfg, err := loadConfig(writeConfig(t, f.sampleFor()))
	require.NoError(t, err)
	require.Equal(t, "tcp://:4000", cfg.listener.ServiceAddress)
	require.Equal(t, []string{"site"}, cfg.listener.AttributeTags)
	require.Len(t, cfg.listener.Allow, 1)
	require.Equal(t, map[string]string{"role": "sensor"}, cfg.listener.Allow[0].Attributes)
	require.Equal(t, 1000, cfg.listener.MaxUndeliveredMessages, "the plugin's defaults")
	require.Equal(t, "http://127.0.0.1:8086", cfg.writer.URL)
	require.Equal(t, "telemetry", cfg.writer.Bucket)
	require.Equal(t, 5*time.Second, cfg.writer.Timeout)
	require.Equal(t, 15*time.Second, cfg.shutdownTimeout)
	require.Equal(t, 4, cfg.maxParallelWrites)
	require.Empty(t, cfg.healthAddress)
	require.True(t, cfg.writer.Token.Empty())
	require.Contains(t, cfg.tokenSource, "none")

	// Every commented setting, uncommented, is a known one.
	var b strings.Builder
	for _, line := range strings.Split(f.sampleFor(), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, "# tls_"), strings.HasPrefix(trimmed, "# token_file"):
			continue // files that do not exist
		case strings.HasPrefix(trimmed, "# ") && strings.Contains(trimmed, " = "):
			line = strings.Replace(line, "# ", "", 1)
		}
		b.WriteString(line + "\n")
	}
	cfg, err = loadConfig(writeConfig(t, b.String()))
	require.NoError(t, err, b.String())
	require.Equal(t, "site", cfg.writer.BucketAttribute)
	require.Equal(t, "127.0.0.1:8088", cfg.healthAddress)
}

func TestConfigErrors(t *testing.T) {
	f := newTestFleet(t)
	base := f.sampleFor()
	tests := []struct {
		name, old, new, want string
	}{
		{"unknown key", `bucket = "telemetry"`, "bucket = \"telemetry\"\n  bukket = \"x\"", "unknown setting(s): influxdb.bukket"},
		{"unknown listener key", `attribute_tags = ["site"]`, "attribute_tags = [\"site\"]\n  alias = \"x\"", "unknown setting(s): listener.alias"},
		{"token in the file", `bucket = "telemetry"`, "bucket = \"telemetry\"\n  token = \"abc\"", "keep the token out of this file"},
		{"no listener", "[listener]", "[listener_typo]", "unknown setting(s)"},
		{"bucket_attribute not stamped", `# bucket_attribute = "site"`, `bucket_attribute = "zone"`,
			`bucket_attribute "zone" must be one of [listener] attribute_tags ["site"]`},
		{"debug and quiet", "# debug = false\n# quiet = false", "debug = true\nquiet = true", "debug and quiet are both set"},
		{"log_format", `# log_format = "text"`, `log_format = "json"`, `log_format "json"`},
		{"parallel writes", `# max_parallel_writes = 4`, `max_parallel_writes = 0`, "max_parallel_writes must be positive"},
		{"bad duration", `# shutdown_timeout = "15s"`, `shutdown_timeout = "soon"`, "shutdown_timeout"},
		{"missing token file", `# token_file = "/etc/ockamd/influxdb.token"`, `token_file = "/nonexistent/token"`, "token_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Contains(t, base, tt.old)
			_, err := loadConfig(writeConfig(t, strings.Replace(base, tt.old, tt.new, 1)))
			require.ErrorContains(t, err, tt.want)
		})
	}

	_, err := loadConfig(writeConfig(t, "[influxdb]\nurl = \"http://x\"\nbucket = \"b\"\n"))
	require.ErrorContains(t, err, "no [listener] table")
}

func TestToken(t *testing.T) {
	f := newTestFleet(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "influxdb.token")
	ockamtest.WriteFile(t, tokenFile, []byte("from-file\n"))
	withFile := strings.Replace(f.sampleFor(), `# token_file = "/etc/ockamd/influxdb.token"`,
		fmt.Sprintf("token_file = %q", tokenFile), 1)
	get := func(text string) (string, string) {
		t.Helper()
		cfg, err := loadConfig(writeConfig(t, text))
		require.NoError(t, err)
		buf, err := cfg.writer.Token.Get()
		require.NoError(t, err)
		defer buf.Destroy()
		return buf.String(), cfg.tokenSource
	}

	t.Setenv(envToken, " from-env\n")
	token, source := get(f.sampleFor())
	require.Equal(t, "from-env", token)
	require.Equal(t, "the environment variable OCKAMD_INFLUXDB_TOKEN", source)

	token, source = get(withFile) // the file wins
	require.Equal(t, "from-file", token)
	require.Equal(t, "token_file "+tokenFile, source)

	require.NoError(t, os.Chmod(tokenFile, 0o640))
	_, err := loadConfig(writeConfig(t, withFile))
	require.ErrorContains(t, err, "can be read by group or others (mode 0640); run: chmod 600 "+tokenFile)
}

func TestVaultPassphraseFromEnvironment(t *testing.T) {
	f := newTestFleet(t)
	t.Setenv(envVaultPassphrase, "from-env")
	cfg, err := loadConfig(writeConfig(t, f.sampleFor()))
	require.NoError(t, err)
	ok, err := cfg.listener.VaultPassphrase.EqualTo([]byte("from-env"))
	require.NoError(t, err)
	require.True(t, ok)

	// The file's setting wins, even empty.
	cfg, err = loadConfig(writeConfig(t, strings.Replace(f.sampleFor(), `# vault_passphrase = ""`, `vault_passphrase = ""`, 1)))
	require.NoError(t, err)
	require.True(t, cfg.listener.VaultPassphrase.Empty())
}

// TestDocumentedConfigs loads the ockamd configurations README.md shows.
// (The top README's runs with --check in its walkthrough, docs/commands_test.go.)
func TestDocumentedConfigs(t *testing.T) {
	block := regexp.MustCompile("(?s)```toml\n(.*?)```")
	n := 0
	for _, doc := range []string{"README.md"} {
		text, err := os.ReadFile(doc)
		require.NoError(t, err)
		for _, m := range block.FindAllStringSubmatch(string(text), -1) {
			if !strings.Contains(m[1], "[listener]") {
				continue
			}
			n++
			_, err := loadConfig(writeConfig(t, m[1]))
			require.NoError(t, err, "%s:\n%s", doc, m[1])
		}
	}
	require.Equal(t, 1, n, "ockamd configurations in README.md")
}

// TestOptionsDocumented: every setting of ockamd itself is in the sample
// configuration and described in README.md.
func TestOptionsDocumented(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	n := 0
	for _, typ := range []reflect.Type{reflect.TypeFor[fileConfig](), reflect.TypeFor[influxConfig]()} {
		for f := range typ.Fields() {
			tag := f.Tag.Get("toml")
			if tag == "" || tag == "listener" || tag == "influxdb" {
				continue // the TLS settings are Telegraf's; the tables
			}
			n++
			require.Regexp(t, `(?m)^\s*#? ?`+regexp.QuoteMeta(tag)+` = `, sampleConfig, "sample: %s", tag)
			require.True(t, strings.Contains(string(readme), "`"+tag+"`"), "README.md does not describe %s", tag)
		}
	}
	require.Equal(t, 15, n, "settings checked")
}
