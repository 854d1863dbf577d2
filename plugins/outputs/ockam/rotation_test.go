package ockam

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// TestPurposeKeyRotationOnRunningDevice rotates the device's purpose key
// while outputs.ockam runs and sends, as `ockam purpose-key rotate` does
// from another process: the open channel goes on with its session keys, the
// next channel uses the new key, the real listener accepts it, and no metric
// is lost. The credential file is not touched.
//
// The first channel lives until the test ends it (a listener restart), not
// until an idle timeout: on a loaded machine a one-second idle timeout closed
// it between two writes, and the device reconnected in its own time.
func TestPurposeKeyRotationOnRunningDevice(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	dev := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
	gw := fleet.Enroll(t, "listener", map[string]string{"role": "listener"})
	addr := ockamtest.FreeAddr(t)
	const noIdleTimeout = 0
	l := startRealListener(t, addr, gw.VaultPath, gw.CredentialPath, noIdleTimeout, fleet.AuthorityFile)
	o := newPipelineOutput(t, addr, dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile)
	credBefore, err := os.ReadFile(dev.CredentialPath)
	require.NoError(t, err)
	credStat, err := os.Stat(dev.CredentialPath)
	require.NoError(t, err)

	writeAll(t, o, sequence(0, 50))
	oldKey := o.trust.Current().Identity.Public().Attestation().PurposeKey
	first := currentLink(o)

	// The operator rotates the key on the running device.
	v, err := vault.OpenFile(dev.VaultPath, nil)
	require.NoError(t, err)
	operator, err := secure.LoadIdentity(v)
	require.NoError(t, err)
	require.NoError(t, operator.RotatePurposeKey(v, time.Now(), secure.DefaultAttestationTTL))
	newKey := operator.Public().Attestation().PurposeKey
	require.NotEqual(t, oldKey, newKey)

	// The open channel keeps its session keys...
	require.Zero(t, writeAll(t, o, sequence(50, 50)), "no failed write on the open channel")
	require.Equal(t, first, currentLink(o), "the same channel")
	require.Equal(t, oldKey, o.trust.Current().Identity.Public().Attestation().PurposeKey, "no new channel yet")
	// ...and the next one, after the listener restarted, is opened with the
	// new key.
	l.stop()
	waitChannelEnd(t, o)
	l2 := startRealListener(t, addr, gw.VaultPath, gw.CredentialPath, noIdleTimeout, fleet.AuthorityFile)
	writeAll(t, o, sequence(100, 50))
	require.NotEqual(t, first, currentLink(o))
	require.Equal(t, newKey, o.trust.Current().Identity.Public().Attestation().PurposeKey, "the channel after the rotation")
	require.Equal(t, dev.Identity.Identifier(), o.trust.Current().Identity.Identifier())
	requireStat(t, o.stats.sender.Reconnects.(counter).s, 1)

	id := dev.Identity.Identifier().String()
	require.Equal(t, want(id, 0, 100), l.seqs("ockam_identity"), "before the restart: every metric delivered once")
	require.Equal(t, want(id, 100, 50), l2.seqs("ockam_identity"), "after: every metric delivered once, stamped with the same identity")
	credAfter, err := os.ReadFile(dev.CredentialPath)
	require.NoError(t, err)
	require.Equal(t, credBefore, credAfter, "no credential re-issued")
	stat, err := os.Stat(dev.CredentialPath)
	require.NoError(t, err)
	require.Equal(t, credStat.ModTime(), stat.ModTime())
	require.Len(t, logged(o.Log, "Loaded the rotated purpose key"), 1)
}

// TestAuthorityRotationOverlap follows docs/OPERATIONS.md, "Rotating the
// authority's key": a fleet moves from authority A to authority B without a
// stranded device and without losing a metric, because every member trusts
// both while credentials are re-issued. It also shows what the overlap
// prevents: a device that skipped step 2 is stranded as soon as the
// listener's credential comes from B, and a device never re-issued is
// refused once A is retired.
func TestAuthorityRotationOverlap(t *testing.T) {
	a := ockamtest.NewFleet(t)
	b := ockamtest.NewFleet(t) // the new authority, made in step 1
	sensor := map[string]string{"role": "sensor"}
	d1 := a.Enroll(t, "d1", sensor)
	d2 := a.Enroll(t, "d2", sensor)
	straggler := a.Enroll(t, "straggler", sensor) // never re-issued
	gw := a.Enroll(t, "listener", map[string]string{"role": "listener"})
	addr := ockamtest.FreeAddr(t)
	const idle = 300 * time.Millisecond
	id := func(m ockamtest.Member) string { return m.Identity.Identifier().String() }
	var wantD1, wantD2 []string
	next := 0
	send := func(o *Output, m ockamtest.Member, into *[]string) {
		t.Helper()
		writeAll(t, o, sequence(next, 10))
		*into = append(*into, want(id(m), next, 10)...)
		next += 10
	}
	reissue := func(m ockamtest.Member, attrs map[string]string) {
		t.Helper()
		c := b.Issue(t, b.Authority, m.Identity.Identifier(), attrs, time.Now(), time.Hour)
		ockamtest.WriteFile(t, m.CredentialPath, c.MarshalFile())
	}

	// Before: everyone trusts A.
	l := startRealListener(t, addr, gw.VaultPath, gw.CredentialPath, idle, a.AuthorityFile)
	o1 := newPipelineOutput(t, addr, d1.VaultPath, d1.CredentialPath, a.AuthorityFile)
	o2 := newPipelineOutput(t, addr, d2.VaultPath, d2.CredentialPath, a.AuthorityFile)
	send(o1, d1, &wantD1)
	send(o2, d2, &wantD2)
	delivered := l.seqs("ockam_identity")

	// Step 2: every member trusts A and B (a configuration change, so a
	// restart of each Telegraf).
	l.stop()
	l = startRealListener(t, addr, gw.VaultPath, gw.CredentialPath, idle, a.AuthorityFile, b.AuthorityFile)
	require.NoError(t, o1.Close())
	require.NoError(t, o2.Close())
	o1 = newPipelineOutput(t, addr, d1.VaultPath, d1.CredentialPath, a.AuthorityFile, b.AuthorityFile)
	o2 = newPipelineOutput(t, addr, d2.VaultPath, d2.CredentialPath, a.AuthorityFile, b.AuthorityFile)
	oStraggler := newPipelineOutput(t, addr, straggler.VaultPath, straggler.CredentialPath,
		a.AuthorityFile, b.AuthorityFile)
	send(o1, d1, &wantD1)
	send(o2, d2, &wantD2)
	var wantStraggler []string
	send(oStraggler, straggler, &wantStraggler)

	// Step 3: B re-issues credentials, the listener's first. Files are
	// replaced in place: no restart.
	reissue(gw, map[string]string{"role": "listener"})
	require.Eventually(t, func() bool { return len(logged(l.log, "Credential", "loaded")) == 1 },
		30*time.Second, 5*time.Millisecond)
	// A device that skipped step 2 now refuses the listener.
	late := newPipelineOutput(t, addr, d2.VaultPath, d2.CredentialPath, a.AuthorityFile)
	require.ErrorIs(t, requireWriteFails(t, late, sequence(10000, 1)), secure.ErrUnknownIssuer)
	require.NoError(t, late.Close())
	reissue(d1, sensor)
	waitChannelEnd(t, o1)
	waitChannelEnd(t, o2)
	send(o1, d1, &wantD1) // B's credential, B's listener credential
	send(o2, d2, &wantD2) // still A's credential: accepted during the overlap
	reissue(d2, sensor)
	waitChannelEnd(t, o2)
	send(o2, d2, &wantD2)

	// Step 4: A is retired.
	l.stop()
	l2 := startRealListener(t, addr, gw.VaultPath, gw.CredentialPath, idle, b.AuthorityFile)
	require.NoError(t, o1.Close())
	require.NoError(t, o2.Close())
	o1 = newPipelineOutput(t, addr, d1.VaultPath, d1.CredentialPath, b.AuthorityFile)
	o2 = newPipelineOutput(t, addr, d2.VaultPath, d2.CredentialPath, b.AuthorityFile)
	send(o1, d1, &wantD1)
	send(o2, d2, &wantD2)
	// A device whose credential is still A's is refused.
	require.Error(t, requireWriteFails(t, oStraggler, sequence(20000, 1)))
	require.Eventually(t, func() bool { return len(logged(l2.log, "Handshake from", "unknown_issuer")) > 0 },
		30*time.Second, 5*time.Millisecond, "the listener logs the refusal in its own time")

	got := append(append(delivered, l.seqs("ockam_identity")...), l2.seqs("ockam_identity")...)
	all := append(append(append([]string{}, wantD1...), wantD2...), wantStraggler...)
	slices.Sort(got)
	slices.Sort(all)
	require.Equal(t, all, got, "every metric delivered once")
}
