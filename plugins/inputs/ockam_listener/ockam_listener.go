// Package ockam_listener is the Telegraf service input inputs.ockam_listener:
// it accepts secure channels from devices (secure.Accept), checks every data
// message against the sender's credential, the revocation list and the
// policy, emits its line protocol as tracking metrics, and answers each
// message with an ack once every output delivered it, or with a nack.
//
// The wire protocol is docs/PROTOCOL.md; the ack and nack contract is in
// README.md, "Acknowledgements".
package ockam_listener

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/internal/filewatch"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
	"github.com/ockam-addons/telegraf-ockam/vault"
	"github.com/ockam-addons/telegraf-ockam/vault/vaults"
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
	AuthorityPaths          []string        `toml:"authority_paths"`
	RevocationList          string          `toml:"revocation_list"`
	RevocationCheckInterval config.Duration `toml:"revocation_check_interval"`
	RevocationSource        string          `toml:"revocation_source"`
	RevocationPollInterval  config.Duration `toml:"revocation_poll_interval"`
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

	Log        telegraf.Logger     `toml:"-"`
	Statistics *selfstat.Collector `toml:"-"`

	// Set by Init.
	network, address string                               // of service_address; network "mqtt" for a broker, "" for none
	vault            vault.Vault                          // kept open: see reloadIdentity
	identity         atomic.Pointer[secure.LocalIdentity] // replaced when the purpose key is rotated
	identityProblem  string                               // the problem with the vault last logged
	verifier         *secure.Verifier
	credential       atomic.Pointer[secure.Credential] // replaced by the file watcher
	policy           *policy
	reserved         map[string]bool // field keys no point may carry (check.go)
	stats            *stats
	revocationFile   *filewatch.Watch       // nil without revocation_list
	revocations      *secure.RevocationList // the list last applied
	credentialFile   *filewatch.Watch
	credentialAlarm  string // the problem with the credential in use last logged
	now              func() time.Time

	// Set by Start.
	server
}

// AllowRule is one [[inputs.ockam_listener.allow]] block: a sender whose
// credential has all Attributes (equal values) may write Measurements
// (globs of Telegraf's filter package).
type AllowRule struct {
	Attributes   map[string]string `toml:"attributes"`
	Measurements []string          `toml:"measurements"`
}

func init() {
	inputs.Add("ockam_listener", func() telegraf.Input { return newListener() })
}

// newListener returns a Listener with the defaults of the optional settings.
func newListener() *Listener {
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

// Init checks every setting and loads the vault, the identity, the
// credential, the authorities and the revocation list. It opens no socket.
func (l *Listener) Init() error {
	if l.now == nil {
		l.now = time.Now
	}
	if err := l.checkSettings(); err != nil {
		return err
	}
	if err := l.checkRevocationSource(); err != nil {
		return err
	}
	p, err := newPolicy(l.Allow)
	if err != nil {
		return err
	}
	l.policy = p
	l.reserved = l.reservedFields()
	if err := l.loadTrust(); err != nil {
		l.closeVault()
		return err
	}
	// A parser with the settings every connection will use; each connection
	// has its own, since influx.Parser serializes Parse.
	if _, err := newParser(); err != nil {
		return fmt.Errorf("line protocol parser: %w", err)
	}
	if l.Statistics == nil {
		// Not run by Telegraf's models (a test, a shim): register globally.
		l.Statistics = selfstat.NewCollector(nil)
	}
	l.stats = newStats(l.Statistics)
	return nil
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
	case l.VaultPath == "":
		return errors.New("vault_path is required")
	case l.CredentialPath == "":
		return errors.New("credential_path is required")
	case len(l.AuthorityPaths) == 0:
		return errors.New("authority_paths needs at least one authority identity file")
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
	if l.IdentityTag == reservedKey || l.IdentityTag == BucketTag {
		return fmt.Errorf("identity_tag: %q is a reserved tag key", l.IdentityTag)
	}
	seen := map[string]bool{}
	for _, k := range l.AttributeTags {
		switch {
		case k == "":
			return errors.New("attribute_tags: empty tag name")
		case k == l.IdentityTag:
			return fmt.Errorf("attribute_tags: %q is also the identity_tag", k)
		case k == reservedKey || k == BucketTag:
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

// loadTrust loads the authorities, the revocation list, the identity and
// the credential, and checks that the credential is currently valid.
func (l *Listener) loadTrust() error {
	authorities := make([]*secure.Identity, 0, len(l.AuthorityPaths))
	for i, path := range l.AuthorityPaths {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("authority_paths[%d]: %w", i, err)
		}
		a, err := secure.ParseIdentityFile(data)
		if err != nil {
			return fmt.Errorf("authority_paths[%d] %q: %w", i, path, err)
		}
		authorities = append(authorities, a)
	}
	v, err := secure.NewVerifier(authorities...)
	if err != nil {
		return fmt.Errorf("authority_paths: %w", err)
	}
	l.verifier = v

	if l.RevocationList != "" {
		l.revocationFile = filewatch.New(l.RevocationList, maxWatchedFile)
		err := l.revocationFile.Check(l.now(), l.applyRevocationList)
		if errors.Is(err, fs.ErrNotExist) {
			// Not issued yet: nobody is revoked until it appears, and it is
			// applied within revocation_check_interval when it does. A
			// missing directory, though, is a typo.
			if _, derr := os.Stat(filepath.Dir(l.RevocationList)); derr != nil {
				return fmt.Errorf("revocation_list %q: %w", l.RevocationList, derr)
			}
			l.Log.Warnf("revocation_list %q does not exist yet; no identity is revoked until it appears", l.RevocationList)
		} else if err != nil {
			return fmt.Errorf("revocation_list %q: %w", l.RevocationList, err)
		}
	}

	if err := l.loadIdentity(); err != nil {
		return err
	}

	l.credentialFile = filewatch.New(l.CredentialPath, maxWatchedFile)
	err = l.credentialFile.Check(l.now(), func(data []byte) error {
		c, err := l.checkCredential(data)
		if err == nil {
			l.credential.Store(c)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("credential_path %q: %w", l.CredentialPath, err)
	}
	return nil
}

// loadIdentity opens the vault (a directory or a pkcs11: spec) and loads
// the listener's identity, whose purpose-key attestation must be valid now.
// The vault stays open for reloadIdentity.
func (l *Listener) loadIdentity() error {
	buf, err := l.VaultPassphrase.Get()
	if err != nil {
		return fmt.Errorf("vault_passphrase: %w", err)
	}
	defer buf.Destroy()
	// A missing directory is refused rather than created empty.
	v, err := vaults.OpenExisting(l.VaultPath, buf.Bytes())
	if err != nil {
		// Not the value: a spec that failed to parse may hold a PIN written
		// in by mistake, and the error names what is wrong with it.
		return fmt.Errorf("vault_path: %w", err)
	}
	l.vault = v
	id, err := secure.LoadIdentity(v)
	if err != nil {
		return fmt.Errorf("vault_path %q: %w", l.VaultPath, err)
	}
	if err := id.CheckAttestation(l.now()); err != nil {
		return fmt.Errorf("vault_path %q: own %w", l.VaultPath, err)
	}
	l.identity.Store(id)
	return nil
}

// checkCredential parses a credential file and verifies that it was issued
// to this listener by a configured authority and is valid now.
func (l *Listener) checkCredential(data []byte) (*secure.Credential, error) {
	c, err := secure.ParseCredentialFile(data)
	if err != nil {
		return nil, err
	}
	if err := l.verifier.VerifyCredential(c, l.identity.Load().Identifier(), l.now()); err != nil {
		switch {
		case errors.Is(err, secure.ErrUnknownIssuer):
			return nil, fmt.Errorf("%w (not issued by any of authority_paths)", err)
		case errors.Is(err, secure.ErrWrongSubject):
			return nil, fmt.Errorf("%w (the identity in vault_path is %s)", err, l.identity.Load().Identifier())
		}
		return nil, err
	}
	return c, nil
}

// applyRevocationList parses a revocation list file and makes it current.
func (l *Listener) applyRevocationList(data []byte) error {
	list, err := secure.ParseRevocationListFile(data)
	if err != nil {
		return err
	}
	if err := l.verifier.UpdateRevocations(list); err != nil {
		return err
	}
	l.revocations = list
	return nil
}

// newParser returns a line protocol parser for one connection.
func newParser() (*influx.Parser, error) {
	p := &influx.Parser{}
	if err := p.Init(); err != nil {
		return nil, err
	}
	return p, nil
}
