package ockam

import (
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/testutil"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestStartsWithExpiredCredential: a device whose credential expired while
// it was off starts (Init and Connect succeed), logs what to do, fails its
// writes with a clear error so that Telegraf buffers, and sends everything
// once the credential file is renewed, without a restart. On the old code
// Init failed with "credential expired" and Telegraf refused to start.
func TestStartsWithExpiredCredential(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	sensor := map[string]string{"role": "sensor"}
	dev := fleet.Enroll(t, "device", sensor)
	gw := fleet.Enroll(t, "listener", map[string]string{"role": "listener"})
	now := time.Now()
	expired := fleet.Issue(t, fleet.Authority, dev.Identity.Identifier(), sensor, now.Add(-2*time.Hour), time.Hour)
	ockamtest.WriteFile(t, dev.CredentialPath, expired.MarshalFile())
	addr := ockamtest.FreeAddr(t)
	l := startRealListener(t, addr, gw.VaultPath, gw.CredentialPath, 0, fleet.AuthorityFile)

	o := newPipelineOutput(t, addr, dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile)
	expiry := expired.ExpiresAt.Format(time.RFC3339)
	require.Len(t, logged(o.Log, "Starting without a valid credential", "credential_path "+dev.CredentialPath,
		"credential expired at "+expiry, "renew it with ockam credential issue"), 1)
	gauge := o.stats.credentialExpiresIn.s
	require.LessOrEqual(t, gauge.Get(), int64(-3600), "%s", gauge.FieldName())
	require.Greater(t, gauge.Get(), int64(-3600-600))

	// Telegraf keeps the batch and retries it: every write fails, saying
	// why, and nothing reaches the listener.
	first := sequence(0, 20)
	err := requireWriteFails(t, o, first)
	require.ErrorIs(t, err, secure.ErrExpired)
	require.ErrorContains(t, err, "credential_path "+dev.CredentialPath+": credential expired at "+expiry)
	require.ErrorContains(t, err, "renew it with ockam credential issue")
	require.Zero(t, currentLink(o))
	require.Empty(t, l.seqs("ockam_identity"))
	require.Empty(t, logged(l.log, "Handshake from"), "the expired credential was never presented")

	// The operator renews the file; the buffered batch, then the next one,
	// are delivered once each.
	renewed := fleet.Issue(t, fleet.Authority, dev.Identity.Identifier(), sensor, time.Now(), time.Hour)
	ockamtest.WriteFile(t, dev.CredentialPath, renewed.MarshalFile())
	writeAll(t, o, first)
	require.Zero(t, writeAll(t, o, sequence(20, 20)))
	require.Equal(t, want(dev.Identity.Identifier().String(), 0, 40), l.seqs("ockam_identity"))
	require.Equal(t, renewed.ID, o.trust.Current().Credential.ID)
	require.Greater(t, gauge.Get(), int64(0))
	require.LessOrEqual(t, gauge.Get(), int64(3600))
}

// TestExpiredCredentialStillChecked: an expired credential gets a start
// only if it is this device's, from a trusted authority; anything else
// fails Init as before.
func TestExpiredCredentialStillChecked(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	other := ockamtest.NewFleet(t)
	sensor := map[string]string{"role": "sensor"}
	dev := fleet.Enroll(t, "device", sensor)
	gw := fleet.Enroll(t, "listener", sensor)
	old := time.Now().Add(-2 * time.Hour)
	for _, tt := range []struct {
		name string
		cred *secure.Credential
		is   error
	}{
		{"from another authority", other.Issue(t, other.Authority, dev.Identity.Identifier(), sensor, old, time.Hour), secure.ErrUnknownIssuer},
		{"of another identity", fleet.Issue(t, fleet.Authority, gw.Identity.Identifier(), sensor, old, time.Hour), secure.ErrWrongSubject},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ockamtest.WriteFile(t, dev.CredentialPath, tt.cred.MarshalFile())
			o := outputs.Outputs["ockam"]().(*Output)
			o.Address = "tcp://127.0.0.1:4000"
			o.VaultPath, o.CredentialPath, o.AuthorityPath = dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile
			o.Log = testutil.Logger{}
			err := o.Init()
			require.ErrorIs(t, err, tt.is)
			require.ErrorContains(t, err, "credential_path")
		})
	}
}
