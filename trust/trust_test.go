package trust

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// cliNames are the names a command line gives the options.
var cliNames = Names{Vault: "--vault", Credential: "--credential", Authority: "--authority",
	RevocationList: "--revocation-list", RevocationSource: "--revocation-source"}

// TestOpenErrors: every error names the option to fix, as the adapter
// calls it, and says what to do where there is something to do.
func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(p *pki, c *Config)
		is     error  // errors.Is target, if any
		plugin string // a part of the message with the plugin's names
		cli    string // and with the command line's
	}{
		{"no vault", func(_ *pki, c *Config) { c.Vault = "" }, nil, `option "vault_path" is required`, `option "--vault" is required`},
		{"no credential", func(_ *pki, c *Config) { c.Credential = "" }, nil,
			`option "credential_path" is required`, `option "--credential" is required`},
		{"no authority", func(_ *pki, c *Config) { c.Authority = "" }, nil,
			`option "authority_path" is required (or "authority_paths", to trust several authorities)`, `option "--authority" is required`},
		{"missing vault", func(p *pki, c *Config) { c.Vault = filepath.Join(p.dir, "nope") }, fs.ErrNotExist,
			"vault_path: ", "(create the identity with: ockam identity create --vault " + "%DIR%/nope)"},
		{"empty vault", func(p *pki, c *Config) {
			c.Vault = filepath.Join(p.dir, "empty")
			require.NoError(p.t, os.Mkdir(c.Vault, 0o700))
		}, vault.ErrNotFound, "vault_path ", "--vault "},
		{"missing authority", func(p *pki, c *Config) { c.Authority = filepath.Join(p.dir, "nope") }, fs.ErrNotExist,
			"authority_path: ", "--authority: "},
		{"second authority malformed", func(p *pki, c *Config) {
			c.Authorities = []string{p.authFile, p.credFile}
		}, secure.ErrMalformed, "authority_paths[1] ", "authority_paths[1] "},
		{"missing credential", func(p *pki, c *Config) { c.Credential = filepath.Join(p.dir, "nope") }, fs.ErrNotExist,
			"credential_path ", "--credential "},
		{"credential malformed", func(p *pki, c *Config) { c.Credential = p.authFile }, secure.ErrMalformed,
			"credential_path ", "--credential "},
		{"credential of another authority", func(p *pki, c *Config) {
			other := newPKI(p.t)
			c.Credential = p.write("foreign.cred", other.credential(p.id.Identifier(), p.now, time.Hour).MarshalFile())
		}, secure.ErrUnknownIssuer, "was not issued by the authority in authority_path", "was not issued by the authority in --authority"},
		{"credential of another identity", func(p *pki, c *Config) {
			c.Credential = p.write("other.cred", p.credential(p.authority.Identifier(), p.now, time.Hour).MarshalFile())
		}, secure.ErrWrongSubject, "was issued to another identity than this one", "in --vault"},
		{"credential expired", func(p *pki, c *Config) {
			c.Credential = p.write("old.cred", p.credential(p.id.Identifier(), p.now.Add(-2*time.Hour), time.Hour).MarshalFile())
		}, secure.ErrExpired, "; renew it with ockam credential issue", "--credential "},
		{"credential not yet valid", func(p *pki, c *Config) {
			c.Credential = p.write("new.cred", p.credential(p.id.Identifier(), p.now.Add(time.Hour), time.Hour).MarshalFile())
		}, secure.ErrNotYetValid, "; check this machine's clock", "--credential "},
		{"credential revoked", func(p *pki, c *Config) {
			c.RevocationList = p.write("revoked.list", p.list(1, p.now.Add(time.Hour), p.id.Identifier()).MarshalFile())
		}, secure.ErrRevoked, "; the authority revoked this identity", "--credential "},
		{"revocation list in a missing directory", func(p *pki, c *Config) {
			c.RevocationList = filepath.Join(p.dir, "nope", "revoked.list")
		}, fs.ErrNotExist, "revocation_list ", "--revocation-list "},
		{"revocation list malformed", func(p *pki, c *Config) { c.RevocationList = p.authFile }, secure.ErrMalformed,
			"revocation_list ", "--revocation-list "},
		{"revocation list of another authority", func(p *pki, c *Config) {
			other := newPKI(p.t)
			c.RevocationList = p.write("foreign.list", other.list(1, p.now.Add(time.Hour)).MarshalFile())
		}, secure.ErrUnknownIssuer, "revocation_list ", "--revocation-list "},
		{"revocation source without port", func(_ *pki, c *Config) { c.Revocation.Source = "tcp://authority" }, nil,
			`revocation_source "tcp://authority": want tcp://host:port`, `--revocation-source "tcp://authority": want tcp://host:port`},
		{"revocation source of another scheme", func(_ *pki, c *Config) { c.Revocation.Source = "udp://authority:4100" }, nil,
			`revocation_source "udp://authority:4100": want tcp://host:port`, `--revocation-source "udp://authority:4100"`},
		{"negative poll interval", func(_ *pki, c *Config) { c.Revocation.PollInterval = -time.Second }, nil,
			"revocation_poll_interval must not be negative", "revocation_poll_interval must not be negative"},
		{"damaged state", func(p *pki, c *Config) {
			c.Revocation.Source = "tcp://127.0.0.1:1"
			c.Revocation.State = p.write("state", []byte("not a list"))
		}, secure.ErrMalformed, `revocation_state "`, "delete it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, names := range []Names{{}, cliNames} {
				p := newPKI(t)
				c := p.config(nil)
				c.Names = names
				tt.modify(p, &c)
				tr, err := Open(c)
				require.Error(t, err)
				require.Nil(t, tr)
				if tt.is != nil {
					require.ErrorIs(t, err, tt.is)
				}
				want := tt.plugin
				if names == cliNames {
					want = tt.cli
				}
				want = replaceDir(want, p.dir)
				require.Contains(t, err.Error(), want, "names %+v", names)
			}
		})
	}
}

// replaceDir puts dir in for %DIR%.
func replaceDir(s, dir string) string {
	const marker = "%DIR%"
	for i := 0; i+len(marker) <= len(s); i++ {
		if s[i:i+len(marker)] == marker {
			return s[:i] + dir + s[i+len(marker):]
		}
	}
	return s
}

// TestOpenEncryptedVault: the passphrase opens an encrypted vault; a wrong
// or missing one is refused. (Moved here from both plugins' tests.)
func TestOpenEncryptedVault(t *testing.T) {
	p := newPKI(t)
	dir, id, cred := p.party("locked", "correct horse")
	list := p.write("revoked.list", p.list(1, p.now.Add(time.Hour)).MarshalFile())
	open := func(passphrase string) (*Trust, error) {
		c := p.config(nil)
		c.Vault, c.Credential, c.RevocationList, c.Passphrase = dir, cred, list, []byte(passphrase)
		return Open(c)
	}
	tr, err := open("correct horse")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	require.Equal(t, id.Identifier(), tr.Current().Identity.Identifier())
	require.Equal(t, uint64(1), tr.Verifier().RevocationSequence(p.authority.Identifier()))
	_, err = open("wrong")
	require.ErrorIs(t, err, vault.ErrPassphrase)
	require.ErrorContains(t, err, "(check vault_passphrase)")
	_, err = open("")
	require.ErrorIs(t, err, vault.ErrPassphrase)
}

// TestVaultSpecErrorsHideValues: a PIN written into a pkcs11 spec by
// mistake is refused, and the error does not repeat it. (Moved here from
// both plugins' tests.)
func TestVaultSpecErrorsHideValues(t *testing.T) {
	p := newPKI(t)
	c := p.config(nil)
	c.Vault = "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=ockam;pin-value=31337;dir=" + p.vaultDir
	_, err := Open(c)
	require.ErrorContains(t, err, "the PIN must not be written in the spec")
	require.NotContains(t, err.Error(), "31337")
}

// TestAuthorityPathAndPaths: authority_path and authority_paths add up.
func TestAuthorityPathAndPaths(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	c := p.config(nil)
	c.Authorities = []string{other.authFile}
	tr, err := Open(c)
	require.NoError(t, err)
	defer tr.Close()
	require.True(t, tr.Verifier().Trusts(p.authority.Identifier()))
	require.True(t, tr.Verifier().Trusts(other.authority.Identifier()))
	c.Authority, c.Authorities = "", []string{other.authFile, p.authFile}
	tr2, err := Open(c)
	require.NoError(t, err)
	defer tr2.Close()
	require.True(t, tr2.Verifier().Trusts(p.authority.Identifier()))
}

// TestRefreshKeepsCurrent: a bad new credential or list file is logged
// once and the current one kept; Refresh reports the credential file's
// problem; a good file then replaces the current one.
func TestRefreshKeepsCurrent(t *testing.T) {
	p := newPKI(t)
	log := &logger{}
	c := p.config(log)
	c.RevocationList = p.write("revoked.list", p.list(2, p.now.Add(time.Hour)).MarshalFile())
	tr, err := Open(c)
	require.NoError(t, err)
	defer tr.Close()
	first := tr.Current().Credential

	// An expired credential and an older list.
	require.NoError(t, os.WriteFile(p.credFile, p.credential(p.id.Identifier(), p.now.Add(-2*time.Hour), time.Hour).MarshalFile(), 0o600))
	require.NoError(t, os.WriteFile(c.RevocationList, p.list(1, p.now.Add(time.Hour), p.id.Identifier()).MarshalFile(), 0o600))
	for range 3 {
		err := tr.Reload(p.now)
		require.ErrorIs(t, err, secure.ErrExpired)
		require.ErrorContains(t, err, "renew it with ockam credential issue")
	}
	require.Same(t, first, tr.Current().Credential)
	require.Equal(t, uint64(2), tr.Verifier().RevocationSequence(p.authority.Identifier()))
	require.NoError(t, tr.Check(p.now), "the credential in use is still valid")
	require.Len(t, log.find("W!", "credential_path", "keeping the current credential"), 1)
	require.Len(t, log.find("W!", "revocation_list", "stale", "keeping the current list (sequence 2)"), 1)

	// A renewed credential.
	renewed := p.credential(p.id.Identifier(), p.now, 2*time.Hour)
	require.NoError(t, os.WriteFile(p.credFile, renewed.MarshalFile(), 0o600))
	require.NoError(t, tr.Reload(p.now))
	require.Equal(t, renewed.ID, tr.Current().Credential.ID)
	require.Len(t, log.find("I!", "credential_path", "OK again"), 1)

	// The credential in use expires: Check says so, Refresh logs it once.
	later := p.now.Add(3 * time.Hour)
	require.ErrorIs(t, tr.Check(later), secure.ErrExpired)
	require.NoError(t, tr.Refresh(later))
	require.NoError(t, tr.Refresh(later))
	require.Len(t, log.find("E!", "no longer valid, peers will refuse new channels"), 1)
	_ = os.Remove(p.credFile) // for the listener: devices
	tr.cfg.Peers = "devices"
	tr.credentialAlarm = ""
	require.Error(t, tr.Refresh(later))
	require.Len(t, log.find("E!", "The credential in use is no longer valid, devices will refuse new channels until credential_path"), 1)
}

// TestOnRevocation: OnRevocation is called once for each list that changes
// the current one of its issuer, from the file and from the source, and
// not for the same list again, an older one or a damaged one.
func TestOnRevocation(t *testing.T) {
	p := newPKI(t)
	src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
	var calls atomic.Int64
	c := p.config(&logger{})
	c.RevocationList = p.write("revoked.list", p.list(1, p.now.Add(time.Hour)).MarshalFile())
	c.Revocation = RevocationConfig{Source: src.Source(), PollInterval: 10 * time.Millisecond, FailOpen: true}
	c.OnRevocation = func() { calls.Add(1) }
	tr, err := Open(c)
	require.NoError(t, err)
	require.Equal(t, int64(1), calls.Load(), "the file's list, at Open")

	for _, step := range []struct {
		name string
		list []byte
		want int64
	}{
		{"unchanged", p.list(1, p.now.Add(time.Hour)).MarshalFile(), 1},
		{"newer", p.list(2, p.now.Add(time.Hour), p.id.Identifier()).MarshalFile(), 2},
		{"older", p.list(1, p.now.Add(time.Hour)).MarshalFile(), 2},
		{"damaged", []byte("not a list"), 2},
		{"same again", p.list(2, p.now.Add(time.Hour), p.id.Identifier()).MarshalFile(), 2},
	} {
		p.write("revoked.list", step.list)
		_ = tr.Reload(p.now) // reads the file even if its mtime did not move
		require.Equal(t, step.want, calls.Load(), step.name)
	}

	run(t, tr)
	src.Serve(p.list(3, p.now.Add(time.Hour)).Marshal())
	src.FetchedTwice(t)
	require.Equal(t, uint64(3), tr.Verifier().RevocationSequence(p.authority.Identifier()))
	require.Equal(t, int64(3), calls.Load(), "the source's newer list, once though fetched again")
}
