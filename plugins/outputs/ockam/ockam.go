// Package ockam is the Telegraf output outputs.ockam. It sends each batch of
// metrics as line protocol over a secure channel (docs/PROTOCOL.md
// "Handshake" and "Transport messages") to an inputs.ockam_listener, and
// counts the batch as written only when the listener acknowledged every
// message of it. It is an adapter: options, trust loading (package trust)
// and serialization here; dialing, sending and awaiting answers in package
// sender.
package ockam

import (
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/serializers/influx"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
	"github.com/ockam-addons/telegraf-ockam/trust"
)

//go:embed sample.conf
var sampleConfig string

const (
	defaultTimeout                 = sender.DefaultTimeout
	defaultMaxMessageSize          = sender.DefaultMaxMessageSize
	defaultRevocationCheckInterval = sender.DefaultRevocationCheckInterval
)

// Output is the outputs.ockam plugin. Telegraf calls Init, Connect, Write
// and Close from one goroutine at a time; the sender runs a dialer
// goroutine and one reader goroutine per channel of its own.
type Output struct {
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

	// Control instructions (docs/PROTOCOL.md, section 17): who may send
	// which kinds, where the sequences and the outbox are kept, and what
	// each kind does on this device.
	ControlPolicy         []ControlRule       `toml:"control_policy"`
	ControlState          string              `toml:"control_state"`
	ControlConfigDir      string              `toml:"control_config_dir"`
	ControlCommands       map[string][]string `toml:"control_commands"`
	ControlCommandTimeout config.Duration     `toml:"control_command_timeout"`
	ControlReleases       []string            `toml:"control_release_identities"`
	ControlStagingDir     string              `toml:"control_staging_dir"`
	ControlArtifactApply  []string            `toml:"control_artifact_apply"`

	Log        telegraf.Logger     `toml:"-"`
	Statistics *selfstat.Collector `toml:"-"`
	// TrustNames, if set, are the names messages give the trust options
	// (the inlet's command-line flags); trust.PluginNames otherwise.
	TrustNames *trust.Names `toml:"-"`

	// Set by Init.
	target     sender.Target
	pin        secure.Identifier
	trust      *trust.Trust // identity, credential, authorities, revocation; refreshed before every dial
	serializer *influx.Serializer
	stats      stats
	sender     *sender.Sender
	connected  bool // Connect started the sender
}

// SampleConfig returns the sample configuration.
func (*Output) SampleConfig() string { return sampleConfig }

// Init checks the settings and loads the identity, the authorities and the
// credential. It connects to nothing. A credential that is only expired
// (or not yet valid) does not fail it: it is logged, Write fails until
// credential_path holds a valid one, and Telegraf buffers meanwhile.
func (o *Output) Init() (err error) {
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
	cfg := sender.Config{
		Target:                  o.target,
		MQTTUsername:            o.MQTTUsername,
		Trust:                   o.trust,
		ListenerIdentity:        o.pin,
		ListenerAttributes:      o.ListenerAttributes,
		Timeout:                 time.Duration(o.Timeout),
		MaxMessageSize:          int(o.MaxMessageSize),
		RevocationCheckInterval: time.Duration(o.RevocationCheckInterval),
		CredentialPath:          o.CredentialPath,
		Log:                     o.Log,
		Stats:                   o.stats.sender,
	}
	if !o.MQTTPassword.Empty() {
		cfg.MQTTPassword = o.mqttPassword
	}
	ctl, err := o.controlAgent()
	if err != nil {
		return err
	}
	if ctl != nil { // not a typed nil in the interface
		cfg.Control = controlAgent{ctl}
	}
	o.sender, err = sender.New(cfg)
	return err
}

// mqttPassword returns mqtt_password as it is now (a secret store may
// change it).
func (o *Output) mqttPassword() (string, error) {
	password, err := o.MQTTPassword.Get()
	if err != nil {
		return "", err
	}
	defer password.Destroy()
	return password.String(), nil
}

// names are the names of the trust options in messages.
func (o *Output) names() trust.Names {
	if o.TrustNames != nil {
		return *o.TrustNames
	}
	return trust.PluginNames
}

// checkSettings validates the options and applies defaults.
func (o *Output) checkSettings() error {
	var err error
	if o.target, err = sender.ParseTarget(o.Address, o.Route); err != nil {
		return err
	}
	if !o.target.MQTT() && (o.MQTTUsername != "" || !o.MQTTPassword.Empty()) {
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

// loadTrust opens the vault and loads the identity, the authorities, the
// revocation list and its persisted state, and the credential, which must
// be valid now but for its validity period (package trust).
func (o *Output) loadTrust() error {
	passphrase, err := o.VaultPassphrase.Get()
	if err != nil {
		return fmt.Errorf("vault_passphrase: %w", err)
	}
	defer passphrase.Destroy()
	t, err := trust.Open(sender.TrustConfig(trust.Config{
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
		// TestRenewedCredentialMustBeValid, TestStartsWithExpiredCredential
		ExpiresIn: func(d time.Duration) { o.stats.credentialExpiresIn.Set(int64(d / time.Second)) },
		Names:     o.names(),
		Log:       o.Log,
	}))
	if err != nil {
		return err
	}
	o.trust = t
	return nil
}

// Connect starts dialing the listener in the background and returns nil: an
// error here would make Telegraf exit (TELEGRAF.md). Write reports whether
// there is a channel.
func (o *Output) Connect() error {
	o.sender.Start()
	o.connected = true
	return nil
}

// Close closes the channel and stops the background goroutines. It waits for
// them to end.
func (o *Output) Close() error {
	if o.sender != nil {
		o.sender.Close()
	}
	o.closeTrust()
	o.VaultPassphrase.Destroy()
	o.MQTTPassword.Destroy()
	return nil
}

// closeTrust releases the vault (a PKCS#11 token session; a directory
// needs nothing).
func (o *Output) closeTrust() {
	if o.trust == nil {
		return
	}
	if err := o.trust.Close(); err != nil {
		o.Log.Warnf("%v", err)
	}
	o.trust = nil
}

func init() {
	outputs.Add("ockam", func() telegraf.Output {
		return &Output{
			Timeout:                 config.Duration(defaultTimeout),
			MaxMessageSize:          defaultMaxMessageSize,
			RevocationCheckInterval: config.Duration(defaultRevocationCheckInterval),
		}
	})
}
