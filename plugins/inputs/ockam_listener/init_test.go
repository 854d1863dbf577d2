package ockam_listener

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

func TestInitErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(p *pki, l *Listener)
		option  string // the error names the option
		errorIs error
	}{
		{"udp address", func(_ *pki, l *Listener) { l.ServiceAddress = "udp://:4000" }, "unsupported scheme", nil},
		{"no address and no relay", func(_ *pki, l *Listener) { l.ServiceAddress = "" }, "channels could not arrive from anywhere", nil},
		{"relay without name", func(_ *pki, l *Listener) { l.RelayAddress = "tcp://relay:4000" }, "relay_address and relay_name go together", nil},
		{"relay name without relay", func(_ *pki, l *Listener) { l.RelayName = "gw" }, "relay_address and relay_name go together", nil},
		{"bad relay name", func(_ *pki, l *Listener) { l.RelayAddress, l.RelayName = "tcp://relay:4000", "no spaces" }, "relay_name", nil},
		{"relay without port", func(_ *pki, l *Listener) { l.RelayAddress, l.RelayName = "relay", "gw" }, "relay_address", nil},
		{"bad mqtt topic", func(_ *pki, l *Listener) { l.ServiceAddress = "mqtt://127.0.0.1:1883/a/+" }, "service_address", nil},
		{"mqtt login on tcp", func(_ *pki, l *Listener) { l.MQTTUsername = "gw" }, "apply to an mqtt:// service_address only", nil},
		{"unix address", func(_ *pki, l *Listener) { l.ServiceAddress = "unix:///run/ockam.sock" }, "unsupported scheme", nil},
		{"address without scheme", func(_ *pki, l *Listener) { l.ServiceAddress = ":4000" }, "service_address", nil},
		{"address without port", func(_ *pki, l *Listener) { l.ServiceAddress = "tcp://localhost" }, "service_address", nil},
		{"address with path", func(_ *pki, l *Listener) { l.ServiceAddress = "tcp://:4000/x" }, "service_address", nil},
		{"no vault_path", func(_ *pki, l *Listener) { l.VaultPath = "" }, `option "vault_path" is required`, nil},
		{"vault_path missing", func(p *pki, l *Listener) { l.VaultPath = filepath.Join(p.dir, "nope") }, "vault_path", fs.ErrNotExist},
		{"vault_path is a file", func(p *pki, l *Listener) { l.VaultPath = p.authorityFile }, "vault_path", nil},
		{"empty vault", func(p *pki, l *Listener) {
			l.VaultPath = filepath.Join(p.dir, "empty")
			require.NoError(p.t, os.Mkdir(l.VaultPath, 0o700))
		}, "vault_path", vault.ErrNotFound},
		{"wrong passphrase", func(p *pki, l *Listener) {
			l.VaultPath, l.CredentialPath = p.listenerFiles("encrypted", "right", p.now, time.Hour)
			l.VaultPassphrase = secret("wrong")
		}, "vault_path", vault.ErrPassphrase},
		{"missing passphrase", func(p *pki, l *Listener) {
			l.VaultPath, l.CredentialPath = p.listenerFiles("encrypted", "right", p.now, time.Hour)
		}, "vault_path", vault.ErrPassphrase},
		{"own attestation expired", func(p *pki, l *Listener) {
			dir := filepath.Join(p.dir, "old")
			v, err := vault.OpenFile(dir, nil)
			require.NoError(p.t, err)
			id, err := secure.CreateIdentity(v, p.now.Add(-secure.DefaultAttestationTTL-time.Hour))
			require.NoError(p.t, err)
			c, err := secure.IssueCredential(p.authority.Signer(), id.Identifier(), nil, p.now, time.Hour, nil)
			require.NoError(p.t, err)
			l.VaultPath, l.CredentialPath = dir, p.write("old.cred", c.MarshalFile())
		}, "purpose-key attestation", secure.ErrExpired},
		{"no credential_path", func(_ *pki, l *Listener) { l.CredentialPath = "" }, `option "credential_path" is required`, nil},
		{"credential missing", func(p *pki, l *Listener) { l.CredentialPath = filepath.Join(p.dir, "nope") }, "credential_path", fs.ErrNotExist},
		{"credential malformed", func(p *pki, l *Listener) { l.CredentialPath = p.authorityFile }, "credential_path", secure.ErrMalformed},
		{"credential of another authority", func(p *pki, l *Listener) {
			other := newPKI(p.t)
			other.dir = p.dir
			_, l.CredentialPath = other.listenerFiles("other", "", p.now, time.Hour)
		}, "credential_path", secure.ErrUnknownIssuer},
		{"credential expired", func(p *pki, l *Listener) {
			l.CredentialPath = p.credentialFor(l, p.now.Add(-2*time.Hour), time.Hour)
		}, "credential_path", secure.ErrExpired},
		{"credential not yet valid", func(p *pki, l *Listener) {
			l.CredentialPath = p.credentialFor(l, p.now.Add(time.Hour), time.Hour)
		}, "credential_path", secure.ErrNotYetValid},
		{"credential of another identity", func(p *pki, l *Listener) {
			l.CredentialPath = p.write("device.cred", p.device(nil).cred.MarshalFile())
		}, "credential_path", secure.ErrWrongSubject},
		{"credential revoked", func(p *pki, l *Listener) {
			c, err := secure.ParseCredentialFile(must(os.ReadFile(l.CredentialPath)))
			require.NoError(p.t, err)
			l.RevocationList = p.write("revoked.list", p.revocationList(1, c.Subject))
		}, "credential_path", secure.ErrRevoked},
		{"no authority", func(_ *pki, l *Listener) { l.AuthorityPaths = nil }, "authority_paths", nil},
		{"authority missing", func(p *pki, l *Listener) {
			l.AuthorityPaths = append(l.AuthorityPaths, filepath.Join(p.dir, "nope"))
		}, "authority_paths[1]", fs.ErrNotExist},
		{"authority malformed", func(p *pki, l *Listener) {
			l.AuthorityPaths = []string{p.write("bad.identity", []byte("not pem"))}
		}, "authority_paths[0]", secure.ErrMalformed},
		{"revocation list in a missing directory", func(p *pki, l *Listener) {
			l.RevocationList = filepath.Join(p.dir, "nope", "revoked.list")
		}, "revocation_list", fs.ErrNotExist},
		{"revocation list malformed", func(p *pki, l *Listener) {
			l.RevocationList = p.authorityFile
		}, "revocation_list", secure.ErrMalformed},
		{"revocation list of another authority", func(p *pki, l *Listener) {
			l.RevocationList = p.write("foreign.list", newPKI(p.t).revocationList(1))
		}, "revocation_list", secure.ErrUnknownIssuer},
		{"bad glob", func(_ *pki, l *Listener) {
			l.Allow = []AllowRule{{Measurements: []string{"cpu"}}, {Measurements: []string{"temp[a-"}}}
		}, "allow[1]: measurements", nil},
		{"allow without measurements", func(_ *pki, l *Listener) {
			l.Allow = []AllowRule{{Attributes: map[string]string{"role": "sensor"}}}
		}, "allow[0]: measurements is empty", nil},
		{"max_connections", func(_ *pki, l *Listener) { l.MaxConnections = 0 }, "max_connections", nil},
		{"max_undelivered_messages", func(_ *pki, l *Listener) { l.MaxUndeliveredMessages = -1 }, "max_undelivered_messages", nil},
		{"max_received_message_size", func(_ *pki, l *Listener) { l.MaxReceivedMessageSize = 0 }, "max_received_message_size", nil},
		{"max_received_message_size too large", func(_ *pki, l *Listener) { l.MaxReceivedMessageSize = 2 << 30 }, "max_received_message_size", nil},
		{"max_message_size too large (deprecated name)", func(_ *pki, l *Listener) { l.MaxMessageSize = 2 << 30 }, "max_received_message_size", nil},
		{"both names", func(_ *pki, l *Listener) { l.MaxMessageSize, l.MaxReceivedMessageSize = 1000, 2000 }, "keep max_received_message_size only", nil},
		{"handshake_timeout", func(_ *pki, l *Listener) { l.HandshakeTimeout = 0 }, "handshake_timeout", nil},
		{"read_timeout", func(_ *pki, l *Listener) { l.ReadTimeout = config.Duration(-time.Second) }, "read_timeout", nil},
		{"revocation_check_interval", func(_ *pki, l *Listener) { l.RevocationCheckInterval = 0 }, "revocation_check_interval", nil},
		{"attribute tag is the identity tag", func(_ *pki, l *Listener) { l.AttributeTags = []string{"site", "ockam_identity"} }, "attribute_tags", nil},
		{"attribute tag twice", func(_ *pki, l *Listener) { l.AttributeTags = []string{"site", "site"} }, "attribute_tags", nil},
		{"empty attribute tag", func(_ *pki, l *Listener) { l.AttributeTags = []string{""} }, "attribute_tags", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			l := p.listener()
			tt.setup(p, l)
			err := l.Init()
			t.Log(err)
			require.ErrorContains(t, err, tt.option)
			if tt.errorIs != nil {
				require.ErrorIs(t, err, tt.errorIs)
			}
		})
	}
}

// credentialFor issues a new credential to l's identity and writes it.
func (p *pki) credentialFor(l *Listener, issued time.Time, ttl time.Duration) string {
	v, err := vault.OpenFile(l.VaultPath, nil)
	require.NoError(p.t, err)
	id, err := secure.LoadIdentity(v)
	require.NoError(p.t, err)
	c, err := secure.IssueCredential(p.authority.Signer(), id.Identifier(), nil, issued, ttl, nil)
	require.NoError(p.t, err)
	return p.write("new.cred", c.MarshalFile())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestInitOpensNothing(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	require.NoError(t, l.Init())
	require.Equal(t, "tcp", l.network)
	require.Equal(t, "127.0.0.1:0", l.address)
	require.Nil(t, l.receiver.Addr())
	l.Stop() // before Start: a no-op
}

func TestSampleConfig(t *testing.T) {
	// The sample with its optional settings and allow block uncommented.
	var lines []string
	for _, line := range strings.Split(sampleConfig, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "# ") && !strings.HasPrefix(trimmed, "# Accept") {
			line = strings.Replace(line, "# ", "", 1)
		}
		lines = append(lines, line)
	}
	c := config.NewConfig()
	require.NoError(t, c.LoadConfigData([]byte(strings.Join(lines, "\n")), ""))
	require.Len(t, c.Inputs, 1)
	l, ok := c.Inputs[0].Input.(*Listener)
	require.True(t, ok)

	want := New()
	want.VaultPath = "/etc/telegraf/ockam/listener"
	want.CredentialPath = "/etc/telegraf/ockam/listener.cred"
	want.AuthorityPaths = []string{"/etc/telegraf/ockam/authority.identity"}
	want.RevocationList = "/etc/telegraf/ockam/revoked.list"
	want.RevocationSource = "tcp://authority.example.com:4100"
	want.RevocationPollInterval = config.Duration(defaultRevocationPollInterval)
	want.AttributeTags = []string{}
	want.RelayAddress, want.RelayName = "tcp://relay:4000", "plant-7-gateway"
	want.Allow = []AllowRule{{Attributes: map[string]string{"role": "sensor"}, Measurements: []string{"cpu", "temp*"}}}
	require.True(t, l.VaultPassphrase.Empty())
	require.True(t, l.MQTTPassword.Empty())
	l.VaultPassphrase, want.VaultPassphrase = config.Secret{}, config.Secret{}
	l.MQTTPassword, want.MQTTPassword = config.Secret{}, config.Secret{}
	l.Log, l.Statistics = nil, nil
	require.Equal(t, want, l)
}

// TestConfigErrors: values Telegraf's config loader rejects before Init.
// It names the line and the Go field (Listener.HandshakeTimeout), not the
// TOML key; Init never sees an unparsable duration or size.
func TestConfigErrors(t *testing.T) {
	for bad, want := range map[string]string{
		`handshake_timeout = "ten seconds"`:         "line 2: (ockam_listener.Listener.HandshakeTimeout)",
		`read_timeout = "5 minutes"`:                "line 2: (ockam_listener.Listener.ReadTimeout)",
		`max_received_message_size = "4 elephants"`: "line 2: (ockam_listener.Listener.MaxReceivedMessageSize)",
		`no_such_option = 1`:                        "no_such_option",
	} {
		t.Run(bad, func(t *testing.T) {
			c := config.NewConfig()
			err := c.LoadConfigData([]byte("[[inputs.ockam_listener]]\n"+bad+"\n"), "")
			require.ErrorContains(t, err, want)
		})
	}
}

func TestInternalMetrics(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	alias := fmt.Sprint("ockam-test-", listeners.Add(1))
	l.Statistics = selfstat.NewCollector(map[string]string{"alias": alias})
	out, addr := start(t, l)
	c := p.device(nil).dial(t, addr)
	c.send(1, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	c.requireAck(1)

	fields := map[string]any{}
	for _, m := range selfstat.Metrics() {
		if m.Name() != "internal_ockam_listener" || m.Tags()["alias"] != alias {
			continue
		}
		key := "" // the reason tag, if any
		if r, ok := m.GetTag("reason"); ok {
			key = r + "/"
		}
		for k, v := range m.Fields() {
			fields[key+k] = v
		}
	}
	require.Equal(t, int64(1), fields["messages_accepted"])
	require.Equal(t, int64(1), fields["metrics_emitted"])
	require.Equal(t, int64(1), fields["handshakes_ok"])
	require.Equal(t, int64(1), fields["channels_open"])
	require.Equal(t, int64(len("cpu usage=1 1700000000000000000\n")), fields["bytes_received"])
	for _, f := range []string{"connections_rejected", "messages_delivered", "messages_undelivered"} {
		require.Contains(t, fields, f)
	}
	for _, r := range handshakeReasons {
		require.Contains(t, fields, r+"/handshakes_failed")
	}
	for _, r := range refusalReasons {
		require.Contains(t, fields, r+"/messages_refused")
	}
}

// TestAuthorityPath: the listener takes authority_path, as outputs.ockam
// does, alone or with authority_paths (issue 16: it used to refuse it).
func TestAuthorityPath(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	l := p.listener()
	l.AuthorityPath, l.AuthorityPaths = p.authorityFile, nil
	require.NoError(t, l.Init())
	require.True(t, l.verifier.Trusts(p.authority.Identifier()))

	l2 := newPKI(t).listener()
	l2.AuthorityPath = other.authorityFile
	require.NoError(t, l2.Init())
	require.True(t, l2.verifier.Trusts(other.authority.Identifier()))
	require.Len(t, l2.AuthorityPaths, 1, "and authority_paths")
}
