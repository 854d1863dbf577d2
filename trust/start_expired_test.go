package trust

import (
	"encoding/pem"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestStartExpired: with StartExpired, a credential that is only expired
// opens, is reported by Reload and Check until the file is renewed, and
// the renewed one is picked up without reopening. ExpiresIn follows the
// credential in use.
func TestStartExpired(t *testing.T) {
	p := newPKI(t)
	old := p.credential(p.id.Identifier(), p.now.Add(-2*time.Hour), time.Hour)
	p.write("party.cred", old.MarshalFile())
	log := &logger{}
	var expiresIn []time.Duration
	c := p.config(log)
	c.StartExpired, c.StrictCredential = true, true
	c.Now = func() time.Time { return p.now }
	c.ExpiresIn = func(d time.Duration) { expiresIn = append(expiresIn, d) }
	tr, err := Open(c)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	require.Equal(t, old.ID, tr.Current().Credential.ID)
	require.Equal(t, []time.Duration{old.ExpiresAt.Sub(p.now)}, expiresIn)
	require.Less(t, expiresIn[0], -time.Hour+time.Second) // seconds in the file
	require.Len(t, log.find("E!", "Starting without a valid credential",
		"valid from "+old.IssuedAt.Format(time.RFC3339)+" until "+old.ExpiresAt.Format(time.RFC3339),
		"credential_path "+p.credFile+": credential expired at "+old.ExpiresAt.Format(time.RFC3339),
		"renew it with ockam credential issue", "no channel is opened until credential_path \""+p.credFile+"\""), 1)

	for _, check := range []func() error{
		func() error { return tr.Reload(p.now) },
		func() error { return tr.Refresh(p.now) },
		func() error { return tr.Check(p.now) },
	} {
		err := check()
		require.ErrorIs(t, err, secure.ErrExpired)
		require.ErrorContains(t, err, "renew it with ockam credential issue")
	}
	require.Len(t, log.lines, 1, "logged once, at Open: %q", log.lines)

	renewed := p.credential(p.id.Identifier(), p.now, time.Hour)
	p.write("party.cred", renewed.MarshalFile())
	require.NoError(t, tr.Reload(p.now))
	require.NoError(t, tr.Check(p.now))
	require.Equal(t, renewed.ID, tr.Current().Credential.ID)
	require.Equal(t, renewed.ExpiresAt.Sub(p.now), expiresIn[len(expiresIn)-1])
	log.requireLog(t, "I!", "The credential in use is valid again")
}

// TestStartNotYetValid: a credential not valid yet at Open (a clock set
// back while the device was off) becomes the one in use when its time
// comes, without a change to the file.
func TestStartNotYetValid(t *testing.T) {
	p := newPKI(t)
	future := p.credential(p.id.Identifier(), p.now.Add(time.Hour), time.Hour)
	p.write("party.cred", future.MarshalFile())
	c := p.config(&logger{})
	c.StartExpired, c.StrictCredential = true, true
	c.Now = func() time.Time { return p.now }
	tr, err := Open(c)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tr.Close()) })
	err = tr.Reload(p.now)
	require.ErrorIs(t, err, secure.ErrNotYetValid)
	require.ErrorContains(t, err, "check this machine's clock")
	require.ErrorIs(t, tr.Refresh(p.now), secure.ErrNotYetValid)

	later := p.now.Add(time.Hour + time.Minute)
	require.NoError(t, tr.Refresh(later), "the same file, valid now")
	require.NoError(t, tr.Check(later))
	require.Equal(t, future.ID, tr.Current().Credential.ID)
}

// TestStartExpiredRefusesAnyOtherProblem: StartExpired excuses the
// validity period only. An expired credential that is forged, of another
// identity or revoked still fails Open, as does a malformed file.
func TestStartExpiredRefusesAnyOtherProblem(t *testing.T) {
	tests := []struct {
		name   string
		modify func(p *pki, c *Config)
		is     error
	}{
		{"expired, of another authority", func(p *pki, c *Config) {
			other := newPKI(p.t)
			c.Credential = p.write("foreign.cred", other.credential(p.id.Identifier(), p.now.Add(-2*time.Hour), time.Hour).MarshalFile())
		}, secure.ErrUnknownIssuer},
		{"expired, signature broken", func(p *pki, c *Config) {
			cred := p.credential(p.id.Identifier(), p.now.Add(-2*time.Hour), time.Hour)
			block, _ := pem.Decode(cred.MarshalFile())
			block.Bytes[len(block.Bytes)-1] ^= 1 // the signature's last byte
			c.Credential = p.write("forged.cred", pem.EncodeToMemory(block))
		}, secure.ErrBadSignature},
		{"expired, of another identity", func(p *pki, c *Config) {
			c.Credential = p.write("other.cred", p.credential(p.authority.Identifier(), p.now.Add(-2*time.Hour), time.Hour).MarshalFile())
		}, secure.ErrWrongSubject},
		{"expired and revoked", func(p *pki, c *Config) {
			c.Credential = p.write("old.cred", p.credential(p.id.Identifier(), p.now.Add(-2*time.Hour), time.Hour).MarshalFile())
			c.RevocationList = p.write("revoked.list", p.list(1, p.now.Add(time.Hour), p.id.Identifier()).MarshalFile())
		}, secure.ErrRevoked},
		{"not yet valid and revoked", func(p *pki, c *Config) {
			c.Credential = p.write("new.cred", p.credential(p.id.Identifier(), p.now.Add(time.Hour), time.Hour).MarshalFile())
			c.RevocationList = p.write("revoked.list", p.list(1, p.now.Add(time.Hour), p.id.Identifier()).MarshalFile())
		}, secure.ErrRevoked},
		{"malformed", func(p *pki, c *Config) { c.Credential = p.authFile }, secure.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPKI(t)
			c := p.config(nil)
			c.StartExpired = true
			tt.modify(p, &c)
			tr, err := Open(c)
			require.ErrorIs(t, err, tt.is)
			require.ErrorContains(t, err, "credential_path ")
			require.Nil(t, tr)
		})
	}
}
