package e2e

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestRefusedCredentials checks that a credential from another authority, or
// an expired one, gets nothing into InfluxDB, while a good device next to
// them keeps delivering:
//   - the stock Telegraf refuses to start with a credential from another
//     authority (outputs.ockam checks its own credential first); with an
//     expired one it starts, says so, and opens no channel
//     (TestDeviceStartsWithExpiredCredential);
//   - a modified client that skips that check never completes a handshake:
//     the listener refuses it and logs why;
//   - a credential that expires while its device sends stops the device's
//     rows at the listener;
//   - a device whose credential the policy does not allow to write
//     (role=actuator) gets nothing in.
func TestRefusedCredentials(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	rogue := cli.identity("rogue-authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	good := cli.identity("good", "")
	cli.issue(authority, good, "720h", "role=sensor", "site=plant-7")
	impostor := cli.identity("impostor", "")
	cli.issue(rogue, impostor, "720h", "role=sensor", "site=plant-7")
	expired := cli.identity("expired", "")
	cli.issue(authority, expired, "1s", "role=sensor", "site=plant-7")
	expiring := cli.identity("expiring", "")
	actuator := cli.identity("actuator", "")
	cli.issue(authority, actuator, "720h", "role=actuator", "site=plant-7")
	// Wait the second out, checking the way an operator would.
	eventually(t, 10*time.Second, "the 1s credential to expire", func() (bool, string) {
		out, err := exec.Command(bin.ockam, "credential", "verify", "--authority", authority.identity,
			expired.credential).CombinedOutput()
		return err != nil, string(out)
	})

	const n, perRun = 3000, 10
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	// Long enough for its Telegraf to start and deliver a few batches.
	cli.issue(authority, expiring, "10s", "role=sensor", "site=plant-9")
	expiresAt := time.Now().Add(10 * time.Second)
	devices := map[*member]*process{}
	for _, m := range []*member{expiring, good, impostor, expired, actuator} {
		devices[m] = startDevice(t, bin.telegraf, m, authority, l, "500ms", execInputs(t, sequence("e2e_seq", n), perRun))
	}
	rows := func(m *member) int { return len(db.seqs("e2e_seq")[m.id]) }

	// The stock Telegraf will not start with a credential of another
	// authority; with an expired one it starts and sends nothing.
	devices[impostor].waitLog(regexp.MustCompile(`not issued by the authority`), 30*time.Second)
	eventually(t, 30*time.Second, "the impostor's Telegraf to exit", func() (bool, string) {
		return devices[impostor].exited(), ""
	})
	devices[expired].waitLog(regexp.MustCompile(`Starting without a valid credential .*credential expired at`), 30*time.Second)

	// A client without that check gets no further: the listener refuses it,
	// and tells it why.
	unknownIssuer := regexp.MustCompile(`(?i)unknown issuer`)
	expiredLog := regexp.MustCompile(`(?i)expired`)
	for m, why := range map[*member]*regexp.Regexp{impostor: unknownIssuer, expired: expiredLog} {
		before := l.proc.count(why)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := Unchecked{Vault: m.vault, Credential: m.credential, Authority: authority.identity}.
			Send(ctx, l.addr, []byte(sequence("e2e_seq", 1)[0].sent()+"\n"))
		cancel()
		if !errors.Is(err, ErrNoAck) {
			t.Errorf("%s, unchecked: Send = %v, want an error wrapping ErrNoAck", m.name, err)
		}
		want := map[*member]secure.RefusalCode{impostor: secure.RefusedUnknownIssuer, expired: secure.RefusedExpired}[m]
		if re, ok := errors.AsType[*secure.RefusedError](err); !ok || re.Code != want {
			t.Errorf("%s, unchecked: Send = %v, want the listener's refusal %q", m.name, err, want)
		}
		eventually(t, 10*time.Second, "the listener to log why it refused "+m.name, func() (bool, string) {
			return l.proc.count(why) > before, ""
		})
	}

	// The credential that expires while its device sends.
	eventually(t, 30*time.Second, "rows from the expiring device", func() (bool, string) {
		return rows(expiring) > 0, ""
	})
	time.Sleep(time.Until(expiresAt)) // the expiry itself, not an assertion
	// Grace: what it had in flight, flushed within a few seconds. Its
	// Telegraf sends a batch only once every message of the previous one was
	// answered, and the listener acks once InfluxDB holds a message: when the
	// listener first asks it to retry because the credential expired (and
	// closes the channel), whatever it had accepted from it is stored, however
	// far behind the gateway's output runs on a slow machine. Then the good
	// device's rows count the time (20 a second).
	devices[expiring].waitLog(regexp.MustCompile(
		`Error writing to outputs\.ockam: listener \S+ asked to retry \d+ metrics later: "credential expired"`), 30*time.Second)
	g0 := rows(good)
	eventually(t, 30*time.Second, "the good device to keep sending", func() (bool, string) {
		return rows(good) >= g0+60, ""
	})
	e1, g1 := rows(expiring), rows(good)
	eventually(t, 30*time.Second, "the good device to keep sending", func() (bool, string) {
		return rows(good) >= g1+60, ""
	})
	if e2 := rows(expiring); e2 != e1 {
		t.Errorf("the expiring device's credential expired, yet %d more of its rows arrived (%d → %d)", e2-e1, e1, e2)
	}

	policy := regexp.MustCompile(`Refused a message from ` + regexp.QuoteMeta(actuator.id[:9]) + `… \(policy\)`)
	if n := l.proc.count(policy); n != 1 {
		t.Errorf("the listener logged %d policy refusals of the actuator, want 1 (then only counted)", n)
	}
	got := db.seqs("e2e_seq")
	for _, m := range []*member{impostor, expired, actuator} {
		if len(got[m.id]) != 0 {
			t.Errorf("InfluxDB holds %d rows of %s; want none", len(got[m.id]), m.name)
		}
	}
	if len(got) != 2 {
		t.Errorf("InfluxDB holds rows of %d identities, want 2 (good, expiring)", len(got))
	}
	t.Logf("figures: good device %d rows, expiring device %d (none after its expiry); "+
		"listener log: %d lines with 'unknown issuer', %d with 'expired', %d policy refusals",
		len(got[good.id]), len(got[expiring.id]), l.proc.count(unknownIssuer), l.proc.count(expiredLog),
		l.proc.count(policy))
}
