// Package ockam is the Telegraf output outputs.ockam. It sends each batch of
// metrics as line protocol over a secure channel (secure.Dial, docs/PROTOCOL.md
// "Handshake" and "Transport messages") to an inputs.ockam_listener, and
// counts the batch as written only when the listener acknowledged every
// message of it.
package ockam

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
	"github.com/ockam-addons/telegraf-ockam/vault/vaults"
)

//go:embed sample.conf
var sampleConfig string

const (
	defaultTimeout        = 10 * time.Second
	defaultMaxMessageSize = 256 << 10
	// maxFileSize bounds the identity and credential files we read; both are
	// a few kilobytes (secure.MaxCredentialSize in PEM is under 14 KiB).
	maxFileSize = 1 << 20
)

// Ockam is the outputs.ockam plugin. Telegraf calls Init, Connect, Write and
// Close from one goroutine at a time; the plugin runs a dialer goroutine and
// one reader goroutine per channel of its own.
type Ockam struct {
	Address          string        `toml:"address"`
	Route            []string      `toml:"route"`
	MQTTUsername     string        `toml:"mqtt_username"`
	MQTTPassword     config.Secret `toml:"mqtt_password"`
	VaultPath        string        `toml:"vault_path"`
	VaultPassphrase  config.Secret `toml:"vault_passphrase"`
	CredentialPath   string        `toml:"credential_path"`
	AuthorityPath    string        `toml:"authority_path"`
	AuthorityPaths   []string      `toml:"authority_paths"`
	ListenerIdentity string        `toml:"listener_identity"`
	// ListenerAttributes must all be in the listener's credential.
	ListenerAttributes map[string]string `toml:"listener_attributes"`
	Timeout            config.Duration   `toml:"timeout"`
	MaxMessageSize     config.Size       `toml:"max_message_size"`

	Log        telegraf.Logger     `toml:"-"`
	Statistics *selfstat.Collector `toml:"-"`

	// Set by Init.
	target     target
	timeout    time.Duration
	vault      vault.Vault           // kept open: the identity is reloaded before every dial
	identity   *secure.LocalIdentity // owned by the dialer goroutine after Connect
	trusted    string                // the authorities, for messages
	verifier   *secure.Verifier
	pin        secure.Identifier
	serializer *influx.Serializer
	stats      stats
	lastBatch  atomic.Uint64 // the last batch id used

	// Set by Connect, ended by Close.
	cancel     context.CancelFunc
	dialerDone chan struct{}
	kick       chan struct{} // wakes the dialer from its backoff
	readers    sync.WaitGroup

	mu       sync.Mutex
	link     *link         // the current channel, nil when there is none
	started  uint64        // dial attempts begun
	finished uint64        // the number of the last attempt that ended
	lastErr  error         // why the last attempt failed or the last link ended
	changed  chan struct{} // closed and replaced whenever link, finished or lastErr change
}

// SampleConfig returns the sample configuration.
func (*Ockam) SampleConfig() string { return sampleConfig }

// Init checks the settings and loads the identity, the authorities and the
// credential. It connects to nothing.
func (o *Ockam) Init() (err error) {
	if err := o.checkSettings(); err != nil {
		return err
	}
	now := time.Now()
	if err := o.loadAuthorities(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			o.closeVault()
		}
	}()
	if o.identity, err = o.loadIdentity(now); err != nil {
		return err
	}
	cred, err := o.loadCredential(now)
	if err != nil {
		return err
	}
	o.Log.Debugf("Identity %s, credential from %s valid until %s",
		o.identity.Identifier().Short(), cred.Issuer.Short(), cred.ExpiresAt.Format(time.RFC3339))

	o.serializer = &influx.Serializer{}
	if err := o.serializer.Init(); err != nil {
		return fmt.Errorf("line-protocol serializer: %w", err)
	}
	o.stats = newStats(o.Statistics)
	o.changed = make(chan struct{})
	return nil
}

// checkSettings validates the options and applies defaults.
func (o *Ockam) checkSettings() error {
	for _, opt := range []struct{ name, value string }{
		{"vault_path", o.VaultPath},
		{"credential_path", o.CredentialPath},
	} {
		if opt.value == "" {
			return fmt.Errorf("option %q is required", opt.name)
		}
	}
	if o.AuthorityPath == "" && len(o.AuthorityPaths) == 0 {
		return errors.New(`option "authority_path" is required (or "authority_paths", to trust several authorities)`)
	}
	var err error
	if o.target, err = parseTarget(o.Address, o.Route); err != nil {
		return err
	}
	if o.target.kind != targetMQTT && (o.MQTTUsername != "" || !o.MQTTPassword.Empty()) {
		return errors.New(`mqtt_username and mqtt_password apply to an mqtt:// address only`)
	}
	if o.ListenerIdentity != "" {
		if o.pin, err = secure.ParseIdentifier(o.ListenerIdentity); err != nil {
			return fmt.Errorf("listener_identity: %w", err)
		}
	}
	switch {
	case o.Timeout < 0:
		return fmt.Errorf("timeout %v: must be positive", time.Duration(o.Timeout))
	case o.Timeout == 0:
		o.Timeout = config.Duration(defaultTimeout)
	}
	o.timeout = time.Duration(o.Timeout)
	switch {
	case o.MaxMessageSize < 0 || o.MaxMessageSize > secure.DefaultMaxMessageSize:
		return fmt.Errorf("max_message_size %d: must be between 1 and %d bytes (the most a listener accepts)",
			int64(o.MaxMessageSize), secure.DefaultMaxMessageSize)
	case o.MaxMessageSize == 0:
		o.MaxMessageSize = defaultMaxMessageSize
	}
	return nil
}

// parseAddress returns host:port of a tcp:// address (mqtt:// addresses are
// parsed by parseTarget).
func parseAddress(address string) (string, error) {
	scheme, _, ok := strings.Cut(address, "://")
	if !ok {
		return "", fmt.Errorf("address %q: want tcp://host:port", address)
	}
	if scheme != "tcp" {
		return "", fmt.Errorf("address %q: scheme %q is not supported, only tcp:// and mqtt:// addresses are supported "+
			"(or a route through relays in \"route\")", address, scheme)
	}
	u, err := url.Parse(address)
	if err != nil || u.User != nil || strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("address %q: want tcp://host:port", address)
	}
	if port, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || port == 0 || u.Hostname() == "" {
		return "", fmt.Errorf("address %q: want tcp://host:port with a port from 1 to 65535", address)
	}
	return u.Host, nil
}

// loadIdentity opens the vault (a directory or a pkcs11: spec) and loads
// this device's identity. The vault stays open for reloadIdentity.
func (o *Ockam) loadIdentity(now time.Time) (*secure.LocalIdentity, error) {
	passphrase, err := o.VaultPassphrase.Get()
	if err != nil {
		return nil, fmt.Errorf("vault_passphrase: %w", err)
	}
	defer passphrase.Destroy()
	v, err := vaults.OpenExisting(o.VaultPath, passphrase.Bytes())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("vault_path: %w (create the identity with: ockam identity create --vault %s)", err, o.VaultPath)
	}
	if err != nil {
		return nil, fmt.Errorf("vault_path: %w", err)
	}
	o.vault = v
	id, err := secure.LoadIdentity(v)
	if err != nil {
		return nil, fmt.Errorf("vault_path %s: %w", o.VaultPath, err)
	}
	if err := id.CheckAttestation(now); err != nil {
		return nil, fmt.Errorf("vault_path %s: %w", o.VaultPath, err)
	}
	return id, nil
}

// loadAuthorities reads the identity files of authority_path and
// authority_paths: the device trusts credentials from any of them (two
// while the authority's key is rotated, see docs/OPERATIONS.md).
func (o *Ockam) loadAuthorities() error {
	paths := o.AuthorityPaths
	if o.AuthorityPath != "" {
		paths = append([]string{o.AuthorityPath}, paths...)
	}
	authorities := make([]*secure.Identity, 0, len(paths))
	names := make([]string, 0, len(paths))
	for _, path := range paths {
		data, err := readFile(path)
		if err != nil {
			return fmt.Errorf("authority_path: %w", err)
		}
		a, err := secure.ParseIdentityFile(data)
		if err != nil {
			return fmt.Errorf("authority_path %s: %w", path, err)
		}
		authorities = append(authorities, a)
		names = append(names, fmt.Sprintf("%s (%s)", path, a.Identifier().Short()))
	}
	v, err := secure.NewVerifier(authorities...)
	if err != nil {
		return fmt.Errorf("authority_path: %w", err)
	}
	o.verifier, o.trusted = v, strings.Join(names, ", ")
	return nil
}

// loadCredential reads the credential file and checks that it is this
// device's, from the authority, and valid at now. Init and every dial call
// it, so a renewed credential is picked up.
func (o *Ockam) loadCredential(now time.Time) (*secure.Credential, error) {
	path := o.CredentialPath
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("credential_path: %w", err)
	}
	c, err := secure.ParseCredentialFile(data)
	if err != nil {
		return nil, fmt.Errorf("credential_path %s: %w", path, err)
	}
	err = o.verifier.VerifyCredential(c, o.identity.Identifier(), now)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, secure.ErrUnknownIssuer), errors.Is(err, secure.ErrBadSignature):
		return nil, fmt.Errorf("credential_path %s was not issued by the authority in authority_path %s: %w",
			path, o.trusted, err)
	case errors.Is(err, secure.ErrWrongSubject):
		return nil, fmt.Errorf("credential_path %s was issued to another identity than this device's (%s in vault_path %s): %w",
			path, o.identity.Identifier().Short(), o.VaultPath, err)
	case errors.Is(err, secure.ErrExpired):
		return nil, fmt.Errorf("credential_path %s: %w; renew it with ockam credential issue", path, err)
	case errors.Is(err, secure.ErrNotYetValid):
		return nil, fmt.Errorf("credential_path %s: %w; check this machine's clock", path, err)
	}
	return nil, fmt.Errorf("credential_path %s: %w", path, err)
}

// readFile reads a small file, refusing one over maxFileSize.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// Connect starts dialing the listener in the background and returns nil: an
// error here would make Telegraf exit (TELEGRAF.md). Write reports whether
// there is a channel.
func (o *Ockam) Connect() error {
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	o.dialerDone = make(chan struct{})
	o.kick = make(chan struct{}, 1)
	go o.runDialer(ctx)
	return nil
}

// Close closes the channel and stops the background goroutines. It waits for
// them to end.
func (o *Ockam) Close() error {
	defer o.closeVault()
	if o.cancel == nil {
		return nil
	}
	o.cancel()
	<-o.dialerDone
	o.mu.Lock()
	l := o.link
	o.link = nil
	o.mu.Unlock()
	if l != nil {
		l.shutdown("telegraf output closing", o.timeout)
	}
	o.readers.Wait()
	o.VaultPassphrase.Destroy()
	return nil
}

func init() {
	outputs.Add("ockam", func() telegraf.Output {
		return &Ockam{
			Timeout:        config.Duration(defaultTimeout),
			MaxMessageSize: defaultMaxMessageSize,
		}
	})
}
