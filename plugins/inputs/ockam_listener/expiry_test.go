package ockam_listener

import (
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"
)

// TestCredentialExpiresInGauge: credential_expires_in_seconds says how long
// the listener's credential in use stays valid, from Init on, follows the
// clock at each check, and goes negative once it expired, so that an
// operator can alert before devices start refusing the listener.
func TestCredentialExpiresInGauge(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	c := &clock{now: p.now}
	l.now = c.Now
	l.RevocationCheckInterval = config.Duration(10 * time.Millisecond)
	start(t, l)
	expires := l.trust.Current().Credential.ExpiresAt
	seconds := func(now time.Time) int64 { return int64(expires.Sub(now) / time.Second) }
	require.Greater(t, seconds(p.now), int64(24*3600-2))
	requireStat(t, l.stats.credentialExpiresIn, seconds(p.now))

	c.Add(23 * time.Hour)
	requireStat(t, l.stats.credentialExpiresIn, seconds(p.now.Add(23*time.Hour)))
	c.Add(2 * time.Hour)
	requireStat(t, l.stats.credentialExpiresIn, seconds(p.now.Add(25*time.Hour)))
	require.Less(t, l.stats.credentialExpiresIn.Get(), int64(-3500))
}
