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
	"net/url"
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
	"github.com/ockam-addons/telegraf-ockam/trust"
)

//go:embed sample.conf
var sampleConfig string

const (
	defaultTimeout        = 10 * time.Second
	defaultMaxMessageSize = 256 << 10
	// defaultRevocationCheckInterval is how often the revocation list file
	// is re-read and the open channel's listener checked against the lists,
	// as in the listener.
	defaultRevocationCheckInterval = time.Second
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
	// The listener's credential is checked against these lists in the
	// handshake and, every RevocationCheckInterval, on the open channel.
	RevocationList          string          `toml:"revocation_list"`
	RevocationCheckInterval config.Duration `toml:"revocation_check_interval"`
	RevocationSource        string          `toml:"revocation_source"`
	RevocationPollInterval  config.Duration `toml:"revocation_poll_interval"`
	RevocationState         string          `toml:"revocation_state"`
	RevocationFailOpen      bool            `toml:"revocation_fail_open"`
	RevocationRefuseStale   bool            `toml:"revocation_refuse_stale"`

	Log        telegraf.Logger     `toml:"-"`
	Statistics *selfstat.Collector `toml:"-"`
	// TrustNames, if set, are the names messages give the trust options
	// (the inlet's command-line flags); trust.PluginNames otherwise.
	TrustNames *trust.Names `toml:"-"`

	// Set by Init.
	target     target
	timeout    time.Duration
	trust      *trust.Trust // identity, credential, authorities, revocation; refreshed before every dial
	pin        secure.Identifier
	serializer *influx.Serializer
	stats      stats
	lastBatch  atomic.Uint64 // the last batch id used

	// Set by Connect, ended by Close.
	cancel     context.CancelFunc
	dialerDone chan struct{}
	trustDone  chan struct{} // closed when trust.Run returned
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
// credential. It connects to nothing. A credential that is only expired
// (or not yet valid) does not fail it: it is logged, Write fails until
// credential_path holds a valid one, and Telegraf buffers meanwhile.
func (o *Ockam) Init() (err error) {
	if err := o.checkSettings(); err != nil {
		return err
	}
	o.stats = newStats(o.Statistics)
	if err := o.loadTrust(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			o.closeTrust()
		}
	}()
	cur := o.trust.Current()
	o.Log.Debugf("Identity %s, credential from %s valid until %s",
		cur.Identity.Identifier().Short(), cur.Credential.Issuer.Short(), cur.Credential.ExpiresAt.Format(time.RFC3339))

	o.serializer = &influx.Serializer{}
	if err := o.serializer.Init(); err != nil {
		return fmt.Errorf("line-protocol serializer: %w", err)
	}
	o.changed = make(chan struct{})
	return nil
}

// checkSettings validates the options and applies defaults.
func (o *Ockam) checkSettings() error {
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
	case o.RevocationCheckInterval < 0:
		return fmt.Errorf("revocation_check_interval %v: must be positive", time.Duration(o.RevocationCheckInterval))
	case o.RevocationCheckInterval == 0:
		o.RevocationCheckInterval = config.Duration(defaultRevocationCheckInterval)
	}
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

// loadTrust opens the vault and loads the identity, the authorities, the
// revocation list and its persisted state, and the credential, which must
// be valid now but for its validity period (package trust).
func (o *Ockam) loadTrust() error {
	passphrase, err := o.VaultPassphrase.Get()
	if err != nil {
		return fmt.Errorf("vault_passphrase: %w", err)
	}
	defer passphrase.Destroy()
	names := trust.PluginNames
	if o.TrustNames != nil {
		names = *o.TrustNames
	}
	t, err := trust.Open(trust.Config{
		Vault:          o.VaultPath,
		Passphrase:     passphrase.Bytes(),
		Credential:     o.CredentialPath,
		Authority:      o.AuthorityPath,
		Authorities:    o.AuthorityPaths,
		RevocationList: o.RevocationList,
		Revocation: trust.RevocationConfig{
			Source:       o.RevocationSource,
			PollInterval: time.Duration(o.RevocationPollInterval),
			State:        o.RevocationState,
			FailOpen:     o.RevocationFailOpen,
			StaleRefuses: o.RevocationRefuseStale,
			Stale:        func() { o.stats.revocationListStale.Incr(1) },
		},
		// Every dial re-reads credential_path, and dials only with what it
		// holds now (TestRenewedCredentialMustBeValid).
		Peers:            "the listener",
		StrictCredential: true,
		// A device that was off past its credential's expiry starts,
		// buffers, and connects once the file is renewed
		// (TestStartsWithExpiredCredential).
		StartExpired: true,
		ExpiresIn:    func(d time.Duration) { o.stats.credentialExpiresIn.Set(int64(d / time.Second)) },
		Names:        names,
		Log:          o.Log,
	})
	if err != nil {
		return err
	}
	o.trust = t
	return nil
}

// Connect starts dialing the listener in the background and returns nil: an
// error here would make Telegraf exit (TELEGRAF.md). Write reports whether
// there is a channel.
func (o *Ockam) Connect() error {
	ctx, cancel := context.WithCancel(context.Background())
	o.cancel = cancel
	o.dialerDone = make(chan struct{})
	o.kick = make(chan struct{}, 1)
	o.trustDone = make(chan struct{})
	go func() {
		// revocation_list, credential_path, the vault and revocation_source
		defer close(o.trustDone)
		o.trust.Run(ctx, time.Duration(o.RevocationCheckInterval))
	}()
	go o.runDialer(ctx)
	return nil
}

// Close closes the channel and stops the background goroutines. It waits for
// them to end.
func (o *Ockam) Close() error {
	defer o.closeTrust()
	if o.cancel == nil {
		return nil
	}
	o.cancel()
	<-o.dialerDone
	<-o.trustDone
	o.mu.Lock()
	l := o.link
	o.link = nil
	o.mu.Unlock()
	if l != nil {
		l.shutdown("telegraf output closing", o.timeout)
	}
	o.readers.Wait()
	o.VaultPassphrase.Destroy()
	o.MQTTPassword.Destroy()
	return nil
}

func init() {
	outputs.Add("ockam", func() telegraf.Output {
		return &Ockam{
			Timeout:                 config.Duration(defaultTimeout),
			MaxMessageSize:          defaultMaxMessageSize,
			RevocationCheckInterval: config.Duration(defaultRevocationCheckInterval),
		}
	})
}
