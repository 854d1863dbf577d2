package ockam_listener

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// restarted returns a new Listener with l's vault, credential and
// authorities (so the same default revocation_state), asking source.
func restarted(l *Listener, source string, log *testutil.CaptureLogger) *Listener {
	n := New()
	n.ServiceAddress = "tcp://127.0.0.1:0"
	n.VaultPath, n.CredentialPath, n.AuthorityPaths = l.VaultPath, l.CredentialPath, l.AuthorityPaths
	n.RevocationSource = source
	n.RevocationPollInterval = config.Duration(10 * time.Millisecond)
	n.Log = log
	n.Statistics = selfstat.NewCollector(map[string]string{"listener": fmt.Sprint(listeners.Add(1))})
	return n
}

// startRevoking starts a listener whose revocation_source serves a list
// of sequence 2 revoking revoked, and waits until it applied the list.
func startRevoking(t *testing.T, p *pki, revoked *device) (*Listener, *ockamtest.RevocationServer, *testutil.CaptureLogger) {
	t.Helper()
	src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
	src.Serve(p.listBytes(2, revoked.id.Identifier()))
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l := restarted(p.listener(), src.Source(), log)
	start(t, l)
	require.Eventually(t, func() bool { return l.verifier.RevocationSequence(p.authority.Identifier()) == 2 },
		wait, time.Millisecond)
	return l, src, log
}

// TestRevocationSurvivesRestart (docs/SECURITY.md W16): the list from
// revocation_source is kept in revocation_state (mode 0600) and applied at
// the next start, so a listener restarted while the authority is
// unreachable refuses the device revoked before. On the old code the list
// lived in memory only, and the restarted listener accepted the device.
func TestRevocationSurvivesRestart(t *testing.T) {
	p := newPKI(t)
	sensor := map[string]string{"role": "sensor"}
	revoked, legit := p.device(sensor), p.device(sensor)
	first, _, log := startRevoking(t, p, revoked)
	state := first.CredentialPath + ".revocation-state"
	var fi os.FileInfo
	require.Eventually(t, func() bool {
		var err error
		fi, err = os.Stat(state)
		return err == nil
	}, wait, time.Millisecond, "the list is kept in revocation_state")
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	first.Stop()

	// The authority is down: nothing listens at the source.
	l := restarted(first, "tcp://"+freeport.Addr(t), log)
	out, addr := start(t, l)
	require.Equal(t, uint64(2), l.verifier.RevocationSequence(p.authority.Identifier()))
	requireRevokedHandshake(t, revoked, addr)
	requireStat(t, l.stats.handshakesFailed["revoked"], 1)
	c := legit.dial(t, addr)
	c.send(1, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	c.requireAck(1)
	requireLog(t, log, "revocation_source", "keeping the current list (sequence 2)")
}

// TestReplayedListRefusedAfterRestart (W16): after a restart, a source that
// serves an older list (a replay of sequence 1, which revoked nobody) is
// refused with a warning, and the device revoked in sequence 2 stays
// refused. On the old code the restarted listener took sequence 1 at info
// level.
func TestReplayedListRefusedAfterRestart(t *testing.T) {
	p := newPKI(t)
	revoked := p.device(map[string]string{"role": "sensor"})
	first, src, log := startRevoking(t, p, revoked)
	first.Stop()

	src.Serve(p.listBytes(1))
	l := restarted(first, src.Source(), log)
	_, addr := start(t, l)
	src.FetchedTwice(t)
	requireLog(t, log, "revocation_source", "serves an older list than the current one (refused, a replay?)",
		"sequence 1, current is 2", "keeping the current list (sequence 2)")
	require.Equal(t, uint64(2), l.verifier.RevocationSequence(p.authority.Identifier()))
	requireRevokedHandshake(t, revoked, addr)
	requireStat(t, l.stats.handshakesFailed["revoked"], 1)
}

// TestFailClosedUntilFirstList (W16): on a first start (no revocation
// state) with the authority unreachable, no handshake succeeds: a device
// waits handshake_timeout and is refused (no_revocation_list). Once the
// authority answers, devices are accepted. On the old code the device was
// accepted at once, the fetch running in the background.
func TestFailClosedUntilFirstList(t *testing.T) {
	p := newPKI(t)
	source := freeport.Addr(t)
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l := restarted(p.listener(), "tcp://"+source, log)
	l.HandshakeTimeout = config.Duration(3 * time.Second) // the wait this test is about
	out, addr := start(t, l)
	requireLog(t, log, "No revocation list was kept", "no channel is accepted or opened until revocation_source")

	d := p.device(map[string]string{"role": "sensor"})
	if c, err := d.tryDial(addr); err == nil {
		c.t = t
		require.Error(t, c.requireClosed())
	}
	requireStat(t, l.stats.handshakesFailed["no_revocation_list"], 1)

	src := ockamtest.NewRevocationServer(t, source)
	src.Serve(p.listBytes(1)) // the service's first list: empty, signed
	src.FetchedTwice(t)
	c := d.dial(t, addr)
	c.send(1, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	c.requireAck(1)
}

// TestFailOpen: revocation_fail_open accepts devices before the first list,
// with an error in the log.
func TestFailOpen(t *testing.T) {
	p := newPKI(t)
	log := &testutil.CaptureLogger{Name: "ockam_listener"}
	l := restarted(p.listener(), "tcp://"+freeport.Addr(t), log)
	l.RevocationFailOpen = true
	out, addr := start(t, l)
	require.NotEmpty(t, log.Errors())
	require.Contains(t, log.Errors()[0], "revocation_fail_open is set: every credential is trusted until revocation_source")
	c := p.device(map[string]string{"role": "sensor"}).dial(t, addr)
	c.send(1, "cpu usage=1 1700000000000000000\n")
	out.accept(1)
	c.requireAck(1)
}

// TestStaleList: a list past its signed next update is logged once and
// counted (revocation_list_stale); channels go on unless
// revocation_refuse_stale is set.
func TestStaleList(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprint("refuse=", refuse), func(t *testing.T) {
			p := newPKI(t)
			src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
			due, err := secure.NewRevocationList(p.authority.Signer(), 1, p.now, p.now.Add(time.Minute), nil, nil)
			require.NoError(t, err)
			src.Serve(due.Marshal())
			clk := &clock{now: p.now}
			log := &testutil.CaptureLogger{Name: "ockam_listener"}
			l := restarted(p.listener(), src.Source(), log)
			l.RevocationRefuseStale = refuse
			l.now = clk.Now
			out, addr := start(t, l)
			src.FetchedTwice(t)
			d := p.device(map[string]string{"role": "sensor"})
			c := d.dial(t, addr)
			c.send(1, "cpu usage=1 1700000000000000000\n")
			out.accept(1)
			c.requireAck(1)

			clk.Add(2 * time.Minute)
			requireStat(t, l.stats.revocationListStale, 1)
			require.Eventually(t, func() bool {
				for _, e := range log.Errors() {
					if strings.Contains(e, "is stale: its next update was due at") {
						return true
					}
				}
				return false
			}, wait, time.Millisecond)
			src.FetchedTwice(t)
			requireStat(t, l.stats.revocationListStale, 1) // once per list
			if !refuse {
				c2 := d.dial(t, addr)
				c2.send(1, "cpu usage=1 1700000000000000000\n")
				out.accept(1)
				c2.requireAck(1)
				return
			}
			if c2, err := d.tryDial(addr); err == nil {
				c2.t = t
				require.Error(t, c2.requireClosed())
			}
			requireStat(t, l.stats.handshakesFailed["no_revocation_list"], 1)
		})
	}
}
