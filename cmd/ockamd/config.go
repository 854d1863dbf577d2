package main

import (
	_ "embed"
	"errors"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/common/tls"

	"github.com/ockam-addons/telegraf-ockam/cmd/ockamd/internal/sink"
	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
)

//go:embed ockamd.sample.toml
var sampleConfig string

// Environment variables read at start.
const (
	envToken           = "OCKAMD_INFLUXDB_TOKEN"  // the InfluxDB token, when token_file is not set
	envVaultPassphrase = "OCKAM_VAULT_PASSPHRASE" // as for the ockam command, when vault_passphrase is not set
)

// Defaults of the optional settings.
const (
	defaultShutdownTimeout   = 15 * time.Second
	defaultTimeout           = 5 * time.Second
	defaultMaxParallelWrites = 4
)

// fileConfig is ockamd.toml. The [listener] table has exactly the settings
// of inputs.ockam_listener, decoded into the plugin's options and checked by
// its Init, which builds the receiver ockamd runs.
type fileConfig struct {
	Debug           bool            `toml:"debug"`
	Quiet           bool            `toml:"quiet"`
	LogFormat       string          `toml:"log_format"`
	HealthAddress   string          `toml:"health_address"`
	ShutdownTimeout config.Duration `toml:"shutdown_timeout"`
	Listener        toml.Primitive  `toml:"listener"`
	InfluxDB        influxConfig    `toml:"influxdb"`
}

// influxConfig is the [influxdb] table.
type influxConfig struct {
	URL               string          `toml:"url"`
	TokenFile         string          `toml:"token_file"`
	Org               string          `toml:"org"`
	Bucket            string          `toml:"bucket"`
	BucketAttribute   string          `toml:"bucket_attribute"`
	BucketTemplate    string          `toml:"bucket_template"`
	CreateDatabase    bool            `toml:"create_database"`
	Timeout           config.Duration `toml:"timeout"`
	MaxParallelWrites int             `toml:"max_parallel_writes"`
	UintSupport       bool            `toml:"influx_uint_support"`
	tls.ClientConfig
}

// daemonConfig is a checked configuration.
type daemonConfig struct {
	debug, quiet      bool
	logFormat         string
	healthAddress     string
	shutdownTimeout   time.Duration
	maxParallelWrites int
	listener          *ockam_listener.Listener // the [listener] options, not initialized
	writer            sink.WriterConfig        // without Log and Statistics
	tokenSource       string                   // where the token came from, for the log
}

// loadConfig reads and checks the configuration file. Unknown settings are
// errors. It reads the token, but opens no vault and no connection.
func loadConfig(path string) (*daemonConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fc := fileConfig{
		ShutdownTimeout: config.Duration(defaultShutdownTimeout),
		InfluxDB: influxConfig{
			Timeout:           config.Duration(defaultTimeout),
			MaxParallelWrites: defaultMaxParallelWrites,
		},
	}
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return nil, err
	}
	if !md.IsDefined("listener") {
		return nil, errors.New("no [listener] table: it holds the settings of inputs.ockam_listener")
	}
	l := ockam_listener.New()
	if err := md.PrimitiveDecode(fc.Listener, l); err != nil {
		return nil, fmt.Errorf("[listener]: %w", err)
	}
	if err := unknownKeys(md); err != nil {
		return nil, err
	}
	if md.IsDefined("listener", "max_message_size") {
		// Telegraf prints this from the struct tag; ockamd decodes itself.
		log.Printf("W! [ockamd] [listener] max_message_size is deprecated: use max_received_message_size instead")
	}
	if !md.IsDefined("listener", "vault_passphrase") {
		if p, ok := os.LookupEnv(envVaultPassphrase); ok {
			l.VaultPassphrase = config.NewSecret([]byte(p))
		}
	}
	return checkConfig(fc, l)
}

// unknownKeys reports the settings the file has and ockamd does not know.
func unknownKeys(md toml.MetaData) error {
	var unknown []string
	for _, k := range md.Undecoded() {
		unknown = append(unknown, k.String())
	}
	switch {
	case slices.Contains(unknown, "influxdb.token"):
		return fmt.Errorf("[influxdb] token: keep the token out of this file: set token_file, or the environment variable %s", envToken)
	case len(unknown) > 0:
		return fmt.Errorf("unknown setting(s): %s", strings.Join(unknown, ", "))
	}
	return nil
}

// checkConfig checks the settings of ockamd itself and reads the token.
func checkConfig(fc fileConfig, l *ockam_listener.Listener) (*daemonConfig, error) {
	ic := fc.InfluxDB
	switch {
	case fc.Debug && fc.Quiet:
		return nil, errors.New("debug and quiet are both set")
	case fc.LogFormat != "" && fc.LogFormat != "text" && fc.LogFormat != "structured":
		return nil, fmt.Errorf("log_format %q: want \"text\" or \"structured\"", fc.LogFormat)
	case fc.ShutdownTimeout <= 0:
		return nil, fmt.Errorf("shutdown_timeout must be positive, got %v", time.Duration(fc.ShutdownTimeout))
	case ic.MaxParallelWrites <= 0:
		return nil, fmt.Errorf("[influxdb] max_parallel_writes must be positive, got %d", ic.MaxParallelWrites)
	case ic.BucketAttribute != "" && ic.BucketAttribute != l.IdentityTag && !slices.Contains(l.AttributeTags, ic.BucketAttribute):
		return nil, fmt.Errorf("[influxdb] bucket_attribute %q must be one of [listener] attribute_tags %q "+
			"(the listener stamps those tags from the sender's credential)", ic.BucketAttribute, l.AttributeTags)
	}
	tlsConfig, err := ic.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("[influxdb] tls: %w", err)
	}
	token, source, err := readToken(ic.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("[influxdb] %w", err)
	}
	return &daemonConfig{
		debug:             fc.Debug,
		quiet:             fc.Quiet,
		logFormat:         fc.LogFormat,
		healthAddress:     fc.HealthAddress,
		shutdownTimeout:   time.Duration(fc.ShutdownTimeout),
		maxParallelWrites: ic.MaxParallelWrites,
		listener:          l,
		writer: sink.WriterConfig{
			URL:             ic.URL,
			Token:           token,
			Org:             ic.Org,
			Bucket:          ic.Bucket,
			BucketAttribute: ic.BucketAttribute,
			BucketTemplate:  ic.BucketTemplate,
			CreateDatabase:  ic.CreateDatabase,
			Timeout:         time.Duration(ic.Timeout),
			ParallelWrites:  ic.MaxParallelWrites,
			UintSupport:     ic.UintSupport,
			TLS:             tlsConfig,
		},
		tokenSource: source,
	}, nil
}

// maxTokenFile bounds token_file: tokens are under a kilobyte.
const maxTokenFile = 64 << 10

// readToken returns the InfluxDB token from path, else from the environment,
// else an empty one (InfluxDB 1.x without authentication), and says where it
// came from. A token file that group or others may read is refused.
func readToken(path string) (config.Secret, string, error) {
	if path == "" {
		if v, ok := os.LookupEnv(envToken); ok {
			return config.NewSecret([]byte(strings.TrimSpace(v))), "the environment variable " + envToken, nil
		}
		return config.NewSecret(nil), "none (no token_file, no " + envToken + ")", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return config.Secret{}, "", fmt.Errorf("token_file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return config.Secret{}, "", fmt.Errorf("token_file: %w", err)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return config.Secret{}, "", fmt.Errorf("token_file %s can be read by group or others (mode %04o); run: chmod 600 %s", path, mode, path)
	}
	if fi.Size() > maxTokenFile {
		return config.Secret{}, "", fmt.Errorf("token_file %s is larger than %d bytes", path, maxTokenFile)
	}
	b := make([]byte, fi.Size())
	n, err := f.ReadAt(b, 0)
	if err != nil && n != len(b) {
		clear(b)
		return config.Secret{}, "", fmt.Errorf("token_file: %w", err)
	}
	s := config.NewSecret([]byte(strings.TrimSpace(string(b))))
	clear(b)
	return s, "token_file " + path, nil
}
