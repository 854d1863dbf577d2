package ockam

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

// TestRefusedByListener runs the real listener: a device it refuses at the
// handshake learns why. Its Write fails with an error naming the refusal,
// it logs `refused by listener I…: <reason>` once, it never logs that a
// channel is open, and a Write does not make it dial again. Before
// protocol version 2 the device's handshake succeeded, it logged "Channel
// open to listener", and only its first message found the channel closed.
func TestRefusedByListener(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns the device's trusted authorities and the
		// listener's revocation list, and may replace the device's
		// credential. The listener trusts the fleet's authority only.
		setup func(t *testing.T, fleet *ockamtest.Fleet, dev ockamtest.Member) (authorities []string, list string)
		code  secure.RefusalCode
	}{
		{"revoked", func(t *testing.T, fleet *ockamtest.Fleet, dev ockamtest.Member) ([]string, string) {
			now := time.Now()
			l, err := secure.NewRevocationList(fleet.Authority.Signer(), 1, now, now.Add(secure.DefaultRevocationListValidity),
				[]secure.Identifier{dev.Identity.Identifier()}, nil)
			require.NoError(t, err)
			path := filepath.Join(fleet.Dir, "revoked.list")
			ockamtest.WriteFile(t, path, l.MarshalFile())
			return []string{fleet.AuthorityFile}, path
		}, secure.RefusedRevoked},
		{"an authority the listener does not trust", func(t *testing.T, fleet *ockamtest.Fleet, dev ockamtest.Member) ([]string, string) {
			// The device's credential is from another authority, which the
			// device trusts too; the listener does not.
			other := ockamtest.NewFleet(t)
			c := other.Issue(t, other.Authority, dev.Identity.Identifier(), map[string]string{"role": "sensor"}, time.Now(), time.Hour)
			ockamtest.WriteFile(t, dev.CredentialPath, c.MarshalFile())
			return []string{fleet.AuthorityFile, other.AuthorityFile}, ""
		}, secure.RefusedUnknownIssuer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fleet := ockamtest.NewFleet(t)
			dev := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
			gw := fleet.Enroll(t, "listener", map[string]string{"role": "listener"})
			authorities, list := tc.setup(t, fleet, dev)
			addr := ockamtest.FreeAddr(t)
			l := startListenerAt(t, func(l *ockam_listener.Listener) {
				l.ServiceAddress = "tcp://" + addr
				l.RevocationList = list
			}, gw.VaultPath, gw.CredentialPath, 0, fleet.AuthorityFile)
			o := newPipelineOutput(t, addr, dev.VaultPath, dev.CredentialPath, authorities...)

			want := "refused by listener " + gw.Identity.Identifier().Short() + ": " + tc.code.String()
			err := o.Write(sequence(0, 1))
			require.ErrorIs(t, err, secure.ErrRefused)
			require.ErrorContains(t, err, want)
			require.Empty(t, l.acc.GetTelegrafMetrics())

			// Writes fail at once with the refusal and do not wake the
			// dialer, which backs off for seconds, then minutes.
			before := o.sender.Status().Dials
			start := time.Now()
			for i := range 20 {
				require.ErrorContains(t, o.Write(sequence(i+1, 1)), want)
			}
			after := o.sender.Status().Dials
			if elapsed := time.Since(start); elapsed < sender.MinRefusedBackoff/2 {
				require.Equal(t, before, after, "20 writes in %v made the device dial again", elapsed)
			} else {
				t.Logf("20 writes took %v, longer than the shortest backoff: dial count not checked", elapsed)
			}

			log := o.Log.(*testutil.CaptureLogger)
			count := 0
			for _, w := range log.Warnings() {
				if strings.Contains(w, want) {
					count++
				}
			}
			require.Equal(t, 1, count, "logged once: %q", log.Warnings())
			for _, m := range log.Messages() {
				require.NotContains(t, m.Text, "Channel open to listener")
			}
			require.Eventually(t, func() bool {
				for _, e := range l.log.Messages() {
					if strings.Contains(e.Text, "the device was told") && strings.Contains(e.Text, dev.Identity.Identifier().Short()) {
						return true
					}
				}
				return false
			}, time.Minute, 10*time.Millisecond, "the listener logs the refusal")
		})
	}
}
