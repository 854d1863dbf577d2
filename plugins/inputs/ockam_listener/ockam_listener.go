// Package ockam_listener is the Telegraf service input inputs.ockam_listener:
// an adapter over the receiving engine (package receiver), which accepts
// secure channels from devices, checks every data message against the
// sender's credential, the revocation list and the policy, and answers each
// message. This package holds the options, their checks, and the Sink that
// emits each message as a tracking group and turns Telegraf's delivery
// results into the answers (outcome.go).
//
// The wire protocol is docs/PROTOCOL.md; the ack and nack contract is in
// README.md, "Acknowledgements".
package ockam_listener

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/receiver"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
	"github.com/ockam-addons/telegraf-ockam/trust"
)

//go:embed sample.conf
var sampleConfig string

// Defaults of the optional settings.
const (
	defaultServiceAddress         = "tcp://:4000"
	defaultIdentityTag            = "ockam_identity"
	defaultMaxConnections         = 10000
	defaultMaxHandshakesPerIP     = 32
	defaultMaxChannelsPerIdentity = 16
	defaultHandshakeTimeout       = 10 * time.Second
	defaultReadTimeout            = 5 * time.Minute
	defaultMaxReceivedMessageSize = secure.DefaultMaxMessageSize
	defaultMaxUndeliveredMessages = 1000
	// A device's undelivered metrics, estimated as heap (budget.go): a few
	// messages of the default size at once, not max_undelivered_messages.
	defaultMaxUndeliveredBytesPerChannel  = 32 << 20
	defaultMaxUndeliveredBytesPerIdentity = 64 << 20
	defaultRevocationCheckInterval        = time.Second
	defaultRevocationPollInterval         = trust.DefaultPollInterval

	// maxMessageSizeLimit bounds max_received_message_size: every connection may hold
	// one message of that size while it is reassembled and parsed.
	maxMessageSizeLimit = 1 << 30
)

// Listener is the inputs.ockam_listener plugin. Its exported fields are the
// configuration; Telegraf calls Init, Start and Stop, never concurrently.
type Listener struct {
	ServiceAddress          string          `toml:"service_address"`
	RelayAddress            string          `toml:"relay_address"`
	RelayName               string          `toml:"relay_name"`
	MQTTUsername            string          `toml:"mqtt_username"`
	MQTTPassword            config.Secret   `toml:"mqtt_password"`
	VaultPath               string          `toml:"vault_path"`
	VaultPassphrase         config.Secret   `toml:"vault_passphrase"`
	CredentialPath          string          `toml:"credential_path"`
	AuthorityPath           string          `toml:"authority_path"`
	AuthorityPaths          []string        `toml:"authority_paths"`
	RevocationList          string          `toml:"revocation_list"`
	RevocationCheckInterval config.Duration `toml:"revocation_check_interval"`
	RevocationSource        string          `toml:"revocation_source"`
	RevocationPollInterval  config.Duration `toml:"revocation_poll_interval"`
	RevocationState         string          `toml:"revocation_state"`
	RevocationFailOpen      bool            `toml:"revocation_fail_open"`
	RevocationRefuseStale   bool            `toml:"revocation_refuse_stale"`
	IdentityTag             string          `toml:"identity_tag"`
	AttributeTags           []string        `toml:"attribute_tags"`
	MaxConnections          int             `toml:"max_connections"`
	MaxHandshakesPerIP      int             `toml:"max_handshakes_per_ip"`
	MaxChannelsPerIdentity  int             `toml:"max_channels_per_identity"`
	HandshakeTimeout        config.Duration `toml:"handshake_timeout"`
	ReadTimeout             config.Duration `toml:"read_timeout"`
	MaxReceivedMessageSize  config.Size     `toml:"max_received_message_size"`
	// MaxMessageSize is the old name of MaxReceivedMessageSize (outputs.ockam's
	// max_message_size is a packing target, not a cap).
	MaxMessageSize         config.Size `toml:"max_message_size" deprecated:"1.39.0;2.0.0;use 'max_received_message_size' instead"`
	MaxUndeliveredMessages int         `toml:"max_undelivered_messages"`

	MaxUndeliveredBytesPerChannel  config.Size `toml:"max_undelivered_bytes_per_channel"`
	MaxUndeliveredBytesPerIdentity config.Size `toml:"max_undelivered_bytes_per_identity"`
	Allow                          []AllowRule `toml:"allow"`

	ControlSocket  string `toml:"control_socket"`
	ControlPending string `toml:"control_pending"`

	Log        telegraf.Logger     `toml:"-"`
	Statistics *selfstat.Collector `toml:"-"`

	// Set by Init.
	network, address string // of service_address; network "mqtt" for a broker, "" for none
	receiver         *receiver.Receiver
	trust            *trust.Trust // identity, credential, authorities, revocation; refreshed by the receiver
	verifier         *secure.Verifier
	stats            *stats
	now              func() time.Time

	// Set by Start.
	sink *trackingSink
}

// AllowRule is one [[inputs.ockam_listener.allow]] block: a sender whose
// credential has all Attributes (equal values) may write Measurements
// (globs of Telegraf's filter package).
type AllowRule = receiver.AllowRule

func init() {
	inputs.Add("ockam_listener", func() telegraf.Input { return New() })
}

// New returns a Listener with the defaults of the optional settings.
func New() *Listener {
	return &Listener{
		ServiceAddress:         defaultServiceAddress,
		IdentityTag:            defaultIdentityTag,
		MaxConnections:         defaultMaxConnections,
		MaxHandshakesPerIP:     defaultMaxHandshakesPerIP,
		MaxChannelsPerIdentity: defaultMaxChannelsPerIdentity,
		HandshakeTimeout:       config.Duration(defaultHandshakeTimeout),
		ReadTimeout:            config.Duration(defaultReadTimeout),
		MaxReceivedMessageSize: config.Size(defaultMaxReceivedMessageSize),
		MaxUndeliveredMessages: defaultMaxUndeliveredMessages,

		MaxUndeliveredBytesPerChannel:  config.Size(defaultMaxUndeliveredBytesPerChannel),
		MaxUndeliveredBytesPerIdentity: config.Size(defaultMaxUndeliveredBytesPerIdentity),
		RevocationCheckInterval:        config.Duration(defaultRevocationCheckInterval),
	}
}

// SampleConfig returns the sample configuration.
func (*Listener) SampleConfig() string { return sampleConfig }

// Gather does nothing: metrics arrive through the channels opened in Start.
func (*Listener) Gather(telegraf.Accumulator) error { return nil }

// Init checks every setting, compiles the policy and loads the vault, the
// identity, the credential, the authorities and the revocation list. It
// opens no socket.
func (l *Listener) Init() error {
	if l.now == nil {
		l.now = time.Now
	}
	if err := l.checkSettings(); err != nil {
		return err
	}
	if l.Statistics == nil {
		// Not run by Telegraf's models (a test, a shim): register globally.
		l.Statistics = selfstat.NewCollector(nil)
	}
	l.stats = newStats(l.Statistics)
	return l.newReceiver()
}

// checkSettings validates the settings that need no file.
func (l *Listener) checkSettings() error {
	if err := l.renameMaxMessageSize(); err != nil {
		return err
	}
	if err := l.checkCarriers(); err != nil {
		return err
	}
	switch {
	case l.MaxConnections <= 0:
		return fmt.Errorf("max_connections must be positive, got %d", l.MaxConnections)
	case l.MaxHandshakesPerIP <= 0:
		return fmt.Errorf("max_handshakes_per_ip must be positive, got %d", l.MaxHandshakesPerIP)
	case l.MaxChannelsPerIdentity <= 0:
		return fmt.Errorf("max_channels_per_identity must be positive, got %d", l.MaxChannelsPerIdentity)
	case l.MaxUndeliveredMessages <= 0:
		return fmt.Errorf("max_undelivered_messages must be positive, got %d", l.MaxUndeliveredMessages)
	case l.MaxUndeliveredBytesPerChannel <= 0:
		return fmt.Errorf("max_undelivered_bytes_per_channel must be positive, got %d", int64(l.MaxUndeliveredBytesPerChannel))
	case l.MaxUndeliveredBytesPerIdentity <= 0:
		return fmt.Errorf("max_undelivered_bytes_per_identity must be positive, got %d", int64(l.MaxUndeliveredBytesPerIdentity))
	case l.MaxReceivedMessageSize <= 0 || l.MaxReceivedMessageSize > maxMessageSizeLimit:
		return fmt.Errorf("max_received_message_size must be between 1 and %d bytes, got %d", maxMessageSizeLimit, int64(l.MaxReceivedMessageSize))
	case l.HandshakeTimeout <= 0:
		return fmt.Errorf("handshake_timeout must be positive, got %v", time.Duration(l.HandshakeTimeout))
	case l.ReadTimeout < 0:
		return fmt.Errorf("read_timeout must not be negative (0 disables it), got %v", time.Duration(l.ReadTimeout))
	case l.RevocationCheckInterval <= 0:
		return fmt.Errorf("revocation_check_interval must be positive, got %v", time.Duration(l.RevocationCheckInterval))
	}
	if l.IdentityTag == receiver.ReservedKey || l.IdentityTag == BucketTag {
		return fmt.Errorf("identity_tag: %q is a reserved tag key", l.IdentityTag)
	}
	seen := map[string]bool{}
	for _, k := range l.AttributeTags {
		switch {
		case k == "":
			return errors.New("attribute_tags: empty tag name")
		case k == l.IdentityTag:
			return fmt.Errorf("attribute_tags: %q is also the identity_tag", k)
		case k == receiver.ReservedKey || k == BucketTag:
			return fmt.Errorf("attribute_tags: %q is a reserved tag key", k)
		case seen[k]:
			return fmt.Errorf("attribute_tags: %q is listed twice", k)
		}
		seen[k] = true
	}
	return nil
}

// renameMaxMessageSize takes the deprecated max_message_size as
// max_received_message_size. Telegraf prints the deprecation notice from
// the struct tag; ockamd prints its own.
func (l *Listener) renameMaxMessageSize() error {
	switch old := l.MaxMessageSize; {
	case old == 0 || old == l.MaxReceivedMessageSize:
	case l.MaxReceivedMessageSize != config.Size(defaultMaxReceivedMessageSize):
		return fmt.Errorf("max_message_size (deprecated) and max_received_message_size are both set, to %d and %d bytes: "+
			"keep max_received_message_size only", int64(old), int64(l.MaxReceivedMessageSize))
	default:
		l.MaxReceivedMessageSize = old
	}
	l.MaxMessageSize = 0
	return nil
}

// checkCarriers checks where channels come from: service_address (TCP or
// an MQTT topic), a relay registration (relay_address and relay_name), or
// both.
func (l *Listener) checkCarriers() error {
	if l.ServiceAddress != "" {
		if strings.HasPrefix(l.ServiceAddress, "mqtt://") {
			if _, err := mqtt.ParseURL(l.ServiceAddress); err != nil {
				return fmt.Errorf("service_address %q: %w", l.ServiceAddress, err)
			}
			l.network, l.address = "mqtt", l.ServiceAddress
		} else {
			network, address, err := parseServiceAddress(l.ServiceAddress)
			if err != nil {
				return err
			}
			l.network, l.address = network, address
		}
	}
	switch {
	case (l.RelayAddress == "") != (l.RelayName == ""):
		return errors.New("relay_address and relay_name go together: the relay to register at and the name devices put last in their route")
	case l.RelayAddress != "":
		if err := relay.ParseRoute([]string{l.RelayAddress, l.RelayName}); err != nil {
			return fmt.Errorf("relay_address %q, relay_name %q: %w", l.RelayAddress, l.RelayName, err)
		}
	case l.ServiceAddress == "":
		return errors.New(`service_address is empty and no relay_address is set: channels could not arrive from anywhere`)
	}
	if l.network != "mqtt" && (l.MQTTUsername != "" || !l.MQTTPassword.Empty()) {
		return errors.New("mqtt_username and mqtt_password apply to an mqtt:// service_address only")
	}
	return nil
}

// parseServiceAddress splits tcp://host:port into a network and an address
// for net.Listen.
func parseServiceAddress(s string) (network, address string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("service_address %q: want tcp://[host]:port: %w", s, err)
	}
	switch u.Scheme {
	case "tcp", "tcp4", "tcp6":
	default:
		return "", "", fmt.Errorf("service_address %q: unsupported scheme %q (only tcp:// and mqtt:// are supported)", s, u.Scheme)
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("service_address %q: want tcp://[host]:port and nothing else", s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", "", fmt.Errorf("service_address %q: want tcp://[host]:port: %w", s, err)
	}
	return u.Scheme, u.Host, nil
}

// newReceiver opens the vault and loads the identity, the authorities, the
// revocation list and its persisted state, and the credential, which must
// be valid now (package trust), into the receiving engine.
func (l *Listener) newReceiver() error {
	buf, err := l.VaultPassphrase.Get()
	if err != nil {
		return fmt.Errorf("vault_passphrase: %w", err)
	}
	defer buf.Destroy()
	r, err := receiver.New(l.receiverConfig(buf.Bytes()))
	if err != nil {
		return err
	}
	l.receiver, l.trust = r, r.Trust()
	l.verifier = l.trust.Verifier()
	return nil
}

// controlPending is control_pending, by default next to control_socket
// (its path with ".pending" appended); "" without a control socket.
func (l *Listener) controlPending() string {
	if l.ControlPending != "" || l.ControlSocket == "" {
		return l.ControlPending
	}
	return l.ControlSocket + ".pending"
}

// receiverConfig returns the checked settings as the engine takes them.
// The vault passphrase is only used by receiver.New.
func (l *Listener) receiverConfig(passphrase []byte) receiver.Config {
	c := receiver.Config{
		Network:      l.network,
		Address:      l.address,
		MQTTUsername: l.MQTTUsername,
		RelayAddress: l.RelayAddress,
		RelayName:    l.RelayName,

		IdentityTag:   l.IdentityTag,
		AttributeTags: l.AttributeTags,
		Allow:         l.Allow,

		MaxConnections:         l.MaxConnections,
		MaxHandshakesPerIP:     l.MaxHandshakesPerIP,
		MaxChannelsPerIdentity: l.MaxChannelsPerIdentity,
		HandshakeTimeout:       time.Duration(l.HandshakeTimeout),
		ReadTimeout:            time.Duration(l.ReadTimeout),
		MaxReceivedMessageSize: int(l.MaxReceivedMessageSize),
		MaxUndeliveredMessages: l.MaxUndeliveredMessages,

		MaxUndeliveredBytesPerChannel:  int64(l.MaxUndeliveredBytesPerChannel),
		MaxUndeliveredBytesPerIdentity: int64(l.MaxUndeliveredBytesPerIdentity),

		ControlSocket:  l.ControlSocket,
		ControlPending: l.controlPending(),

		Trust: trust.Config{
			Vault:          l.VaultPath,
			Passphrase:     passphrase,
			Credential:     l.CredentialPath,
			Authority:      l.AuthorityPath,
			Authorities:    l.AuthorityPaths,
			RevocationList: l.RevocationList,
			Revocation: trust.RevocationConfig{
				Source:       l.RevocationSource,
				PollInterval: time.Duration(l.RevocationPollInterval),
				State:        l.RevocationState,
				FailOpen:     l.RevocationFailOpen,
				StaleRefuses: l.RevocationRefuseStale,
			},
			Peers: "devices",
		},
		RevocationCheckInterval: time.Duration(l.RevocationCheckInterval),

		Log: l.Log,
		Counters: func(field string, tags map[string]string) receiver.Counter {
			return l.Statistics.Register(statsMeasurement, field, tags)
		},
		Now: l.now,
	}
	if !l.MQTTPassword.Empty() {
		c.MQTTPassword = func() (string, error) {
			password, err := l.MQTTPassword.Get()
			if err != nil {
				return "", err
			}
			defer password.Destroy()
			return password.String(), nil
		}
	}
	return c
}

// Receiver returns the engine that Init built from the settings, for a host
// that runs it with a Sink of its own instead of Start (ockamd), or nil
// before Init.
func (l *Listener) Receiver() *receiver.Receiver { return l.receiver }

// BucketTag is the reserved tag of docs/PROTOCOL.md, section 13: the bucket
// an InfluxDB client named, set by ockam inlet influxdb.
const BucketTag = receiver.BucketTag

// Start listens on service_address and registers at the relay, and emits
// the metrics of every message the receiver accepts into acc, as tracking
// groups, until Stop.
func (l *Listener) Start(acc telegraf.Accumulator) error {
	s := newTrackingSink(acc, l.MaxUndeliveredMessages, l.Log, l.stats)
	if err := l.receiver.Start(s); err != nil {
		s.close()
		return err
	}
	l.sink = s
	return nil
}

// Stop closes the listener and every connection, and returns once every
// goroutine has ended. Messages still awaiting delivery are not answered:
// their senders deliver them again.
func (l *Listener) Stop() {
	if l.sink == nil {
		return
	}
	l.receiver.Stop()
	l.sink.close()
	l.sink = nil
	l.VaultPassphrase.Destroy()
	l.MQTTPassword.Destroy()
}
