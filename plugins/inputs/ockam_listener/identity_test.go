package ockam_listener

import (
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// TestListenerPurposeKeyRotation rotates the listener's purpose key while
// it runs, as `ockam purpose-key rotate` does from another process: new
// channels get the new key within revocation_check_interval, the channel
// already open keeps working, and the credential is the same.
func TestListenerPurposeKeyRotation(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	l.RevocationCheckInterval = config.Duration(20 * time.Millisecond)
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l.Log = log
	out, addr := start(t, l)
	d := p.device(nil)

	before := d.dial(t, addr)
	oldKey := before.ch.Peer().Attestation.PurposeKey
	before.send(1, "m v=1")
	out.accept(1)
	before.requireAck(1)

	v, err := vault.OpenFile(l.VaultPath, nil)
	require.NoError(t, err)
	operator, err := secure.LoadIdentity(v)
	require.NoError(t, err)
	require.NoError(t, operator.RotatePurposeKey(v, time.Now(), time.Hour))
	newKey := operator.Public().Attestation().PurposeKey
	require.Eventually(t, func() bool { return l.trust.Current().Identity.Public().Attestation().PurposeKey == newKey },
		wait, 5*time.Millisecond)
	require.Eventually(t, func() bool { return len(logged(log, "Loaded the rotated purpose key")) == 1 },
		wait, 5*time.Millisecond)

	after := d.dial(t, addr)
	require.Equal(t, newKey, after.ch.Peer().Attestation.PurposeKey, "a new channel gets the new key")
	require.Equal(t, before.ch.Peer().Identifier, after.ch.Peer().Identifier, "the same identity")
	require.Equal(t, before.ch.Peer().Credential.ID, after.ch.Peer().Credential.ID, "the same credential")
	require.NotEqual(t, oldKey, newKey)
	after.send(2, "m v=2")
	out.accept(1)
	after.requireAck(2)

	before.send(3, "m v=3") // the old channel keeps its session keys
	out.accept(1)
	before.requireAck(3)
	out.requireNone()
}

// TestListenerKeepsKeyWhenVaultBreaks: a vault that cannot be read is
// logged once, and new channels keep the purpose key in use.
func TestListenerKeepsKeyWhenVaultBreaks(t *testing.T) {
	p := newPKI(t)
	l := p.listener()
	l.RevocationCheckInterval = config.Duration(20 * time.Millisecond)
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l.Log = log
	checks := countChecks(l)
	out, addr := start(t, l)
	inUse := l.trust.Current().Identity

	v, err := vault.OpenFile(l.VaultPath, nil)
	require.NoError(t, err)
	require.NoError(t, v.WriteRecord("purpose.attestation", []byte("not an attestation")))
	require.Eventually(t, func() bool { return len(logged(log, "new channels keep the purpose key in use")) > 0 },
		wait, 5*time.Millisecond)
	checks.waitChecks(t, 5)
	require.Len(t, logged(log, "new channels keep the purpose key in use"), 1, "logged once")
	require.Same(t, inUse, l.trust.Current().Identity)

	c := p.device(nil).dial(t, addr)
	c.send(1, "m v=1")
	out.accept(1)
	c.requireAck(1)

	require.NoError(t, v.WriteRecord("purpose.attestation", inUse.Public().Attestation().Marshal()))
	require.Eventually(t, func() bool { return len(logged(log, "vault_path", "OK again")) > 0 }, wait, 5*time.Millisecond)
	require.Same(t, inUse, l.trust.Current().Identity, "the same record: nothing to load")
}

// logged returns the messages, at any level, that contain every part.
func logged(log *testutil.CaptureLogger, parts ...string) []string {
	var found []string
next:
	for _, e := range log.Messages() {
		for _, p := range parts {
			if !strings.Contains(e.Text, p) {
				continue next
			}
		}
		found = append(found, e.Text)
	}
	return found
}
