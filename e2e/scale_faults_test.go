package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestScaleOutFaults runs the topology of docs/SCALING.md (HAProxy, three
// gateways publishing to a JetStream stream replicated on three NATS nodes,
// two consumers writing to InfluxDB) with three devices streaming through
// it, and injects the faults of issue 19 one after the other on the same
// topology, each while every device has metrics in flight:
//
//  1. kill -9 the gateway that holds a device's channel: the device
//     reconnects through HAProxy to another gateway and resends;
//  2. kill -9 the NATS node that leads the stream: the stream elects
//     another leader and the gateways' publishes go on;
//  3. HAProxy restarted: every device reconnects;
//  4. a device revoked at the authority service: every gateway refuses it;
//  5. InfluxDB down for 60 s: devices keep being acked (the stream takes
//     their batches), and the consumers catch up once it is back.
//
// Then the streams stop, and InfluxDB must hold every point each device
// sent, exactly once, with the values sent: stored == sent. Duplicates in
// the log (a batch resent after a lost ack, a message redelivered to a
// consumer) collapse in InfluxDB: TestScaleDuplicatesCollapse shows the rule
// before the devices start (duplicatesCollapse).
func TestScaleOutFaults(t *testing.T) {
	s := startScaleTopology(t, 2)
	duplicatesCollapse(t, s)

	const perRun = 10 // every 500 ms: 20 metrics/s per device
	var devices []*scaleDevice
	for i := 1; i <= 3; i++ {
		m := s.cli.identity(fmt.Sprintf("device-%d", i), "")
		s.cli.issue(s.authority, m, "720h", "role=sensor", "site=plant-7")
		devices = append(devices, s.startDevice(m, sequence("e2e_scale", 40000), perRun))
	}
	stored := func(d *scaleDevice) int { return len(s.db.seqs("e2e_scale")[d.member.id]) }
	// progress waits until every device has k more rows in InfluxDB.
	progress := func(what string, k int) {
		t.Helper()
		from := make([]int, len(devices))
		for i, d := range devices {
			from[i] = stored(d)
		}
		eventually(t, 120*time.Second, what, func() (bool, string) {
			var detail []string
			ok := true
			for i, d := range devices {
				n := stored(d)
				detail = append(detail, fmt.Sprintf("%s %d/%d", d.member.name, n-from[i], k))
				ok = ok && n-from[i] >= k
			}
			return ok, strings.Join(detail, ", ")
		})
	}
	progress("every device's rows in InfluxDB", 40)
	figures := []string{}

	// 1. kill -9 the gateway of device-1.
	var victim *gatewayProc
	eventually(t, 30*time.Second, "device-1's channel", func() (bool, string) {
		return devices[0].gateway() != "", ""
	})
	victim = s.gatewayOf(devices[0].gateway())
	opened := devices[0].proc.count(deviceChannelOpen)
	victim.proc.kill()
	killedAt := time.Now()
	devices[0].proc.waitLog(regexp.MustCompile(`Channel to listener `+regexp.QuoteMeta(victim.member.id[:9])+`… (lost|ended)`), 30*time.Second)
	eventually(t, 60*time.Second, "device-1 to reconnect through HAProxy", func() (bool, string) {
		return devices[0].proc.count(deviceChannelOpen) > opened, devices[0].gateway()
	})
	if g := devices[0].gateway(); strings.HasPrefix(victim.member.id, strings.TrimSuffix(g, "…")) {
		t.Fatalf("device-1 reconnected to %s, the gateway that was killed", g)
	}
	progress("the streams to go on after gateway-"+fmt.Sprint(victim.index)+" was killed", 40)
	figures = append(figures, fmt.Sprintf("gateway-%d killed: every device 40 rows further %.1fs later",
		victim.index, time.Since(killedAt).Seconds()))
	victim.start() // back on its port; HAProxy's check brings it back

	// 2. kill -9 the NATS node that leads the stream.
	info, err := s.streamInfo()
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: cluster %+v, want a leader and 2 replicas", scaleStream, info.Cluster)
	}
	leader := info.Cluster.Leader
	var node *natsNode
	for _, n := range s.nats {
		if n.name == leader {
			node = n
		}
	}
	if node == nil {
		t.Fatalf("the stream's leader %q is none of the nodes", leader)
	}
	node.proc.kill()
	killedAt = time.Now()
	eventually(t, 60*time.Second, "a new leader of the stream", func() (bool, string) {
		info, err := s.streamInfo()
		if err != nil {
			return false, err.Error()
		}
		return info.Cluster != nil && info.Cluster.Leader != "" && info.Cluster.Leader != leader, info.Cluster.Leader
	})
	elected := time.Since(killedAt)
	progress("the streams to go on after "+leader+" was killed", 40)
	figures = append(figures, fmt.Sprintf("%s (stream leader) killed: new leader %.1fs later, every device 40 rows further %.1fs later",
		leader, elected.Seconds(), time.Since(killedAt).Seconds()))
	node.start() // catches up from the others

	// 3. HAProxy restarted.
	opens := make([]int, len(devices))
	for i, d := range devices {
		opens[i] = d.proc.count(deviceChannelOpen)
	}
	s.proxy.kill()
	restartedAt := time.Now()
	s.startProxy()
	eventually(t, 60*time.Second, "every device to reconnect through the new HAProxy", func() (bool, string) {
		for i, d := range devices {
			if d.proc.count(deviceChannelOpen) <= opens[i] {
				return false, d.member.name
			}
		}
		return true, ""
	})
	progress("the streams to go on after HAProxy restarted", 40)
	figures = append(figures, fmt.Sprintf("HAProxy restarted: every device 40 rows further %.1fs later",
		time.Since(restartedAt).Seconds()))

	// 4. Revocation, through the one authority service every gateway polls.
	figures = append(figures, revokeEverywhere(t, s))

	// 5. InfluxDB down for 60 s.
	rowsBefore := len(s.db.rows("e2e_scale"))
	ackedBefore := make([]int, len(devices))
	for i, d := range devices {
		ackedBefore[i] = d.acked()
	}
	s.db.stop()
	downAt := time.Now()
	// Devices are acked while InfluxDB is down: the stream takes their
	// batches. 200 metrics each are 10 s of their traffic.
	eventually(t, 60*time.Second, "every device to be acked 200 more metrics while InfluxDB is down", func() (bool, string) {
		var detail []string
		ok := true
		for i, d := range devices {
			n := d.acked() - ackedBefore[i]
			detail = append(detail, fmt.Sprintf("%s %d", d.member.name, n))
			ok = ok && n >= 200
		}
		return ok, strings.Join(detail, ", ")
	})
	if !s.db.proc.exited() {
		t.Fatal("influxd is still running")
	}
	if d := time.Since(downAt); d < 60*time.Second { // the outage of issue 19
		time.Sleep(60*time.Second - d)
	}
	down := time.Since(downAt)
	ackedDown := 0
	for i, d := range devices {
		ackedDown += d.acked() - ackedBefore[i]
	}
	backlog := s.consumerBacklog()
	s.db.restart()
	backAt := time.Now()

	// The streams stop; InfluxDB must end up with every point sent.
	sent := make([]int, len(devices))
	for i, d := range devices {
		sent[i] = d.stream.stop()
	}
	eventually(t, 300*time.Second, "every point sent in InfluxDB", func() (bool, string) {
		var detail []string
		ok := true
		for i, d := range devices {
			n := stored(d)
			detail = append(detail, fmt.Sprintf("%s %d/%d", d.member.name, n, sent[i]))
			ok = ok && n >= sent[i]
		}
		return ok, strings.Join(detail, ", ")
	})
	caughtUp := time.Since(backAt)
	rowsAfter := len(s.db.rows("e2e_scale"))
	for _, d := range devices {
		requireDrained(t, d.proc)
	}

	seqs := s.db.seqs("e2e_scale")
	if len(seqs) != len(devices) {
		t.Errorf("InfluxDB holds e2e_scale rows of %d identities, want %d", len(seqs), len(devices))
	}
	var want []string
	for i, d := range devices {
		if got := len(seqs[d.member.id]); got != sent[i] {
			t.Errorf("%s: %d points in InfluxDB, want the %d it sent", d.member.name, got, sent[i])
		}
		want = append(want, storedAll(d.pts[:sent[i]], d.member.id, "plant-7")...)
	}
	slices.Sort(want)
	rows := s.db.rows("e2e_scale")
	if !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent, each once with its values", len(rows), len(want))
	}
	written := sumMatches(consumerWrites, s.consumers...)
	total := 0
	for _, n := range sent {
		total += n
	}
	figures = append(figures,
		fmt.Sprintf("InfluxDB down %.1fs: devices acked %d metrics meanwhile; %d messages (%d bytes) waited in the stream; "+
			"rows %d before, %d when caught up %.1fs after influxd was back (%.0f rows/s, all three streams still running)",
			down.Seconds(), ackedDown, backlog.msgs, backlog.bytes, rowsBefore, rowsAfter, caughtUp.Seconds(),
			float64(rowsAfter-rowsBefore)/caughtUp.Seconds()),
		fmt.Sprintf("%d points sent, %d stored, each once; consumers wrote %d points to InfluxDB (%d duplicates collapsed)",
			total, len(rows), written, written-total))
	t.Logf("figures:\n  %s", strings.Join(figures, "\n  "))
}

// revokeEverywhere revokes a device at the authority service and checks
// that each gateway refuses it: first each accepts a batch from it, dialled
// directly (the attack this defends against: a revoked device that keeps
// sending), then the device is revoked, and each gateway must refuse its
// handshake. It returns the figures: how long after `ockam revocation add`
// returned each gateway logged the new list.
func revokeEverywhere(t *testing.T, s *scaleTopology) string {
	t.Helper()
	m := s.cli.identity("revoked-device", "")
	s.cli.issue(s.authority, m, "720h", "role=sensor", "site=plant-7")
	u := Unchecked{Vault: m.vault, Credential: m.credential, Authority: s.authority.identity}
	probe := func(g *gatewayProc) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		line := fmt.Sprintf("e2e_probe,src=e2e value=1 %d\n", time.Now().UnixNano())
		return u.Send(ctx, g.addr(), []byte(line))
	}
	for _, g := range s.gateways {
		if err := probe(g); err != nil {
			t.Fatalf("gateway-%d refused the device before it was revoked: %v", g.index, err)
		}
	}

	out := s.cli.run("", "revocation", "add", "--vault", s.authority.vault, "--db", s.authDB, "--subject", m.id)
	revokedAt := time.Now()
	seq := regexp.MustCompile(`(?m)^sequence: (\d+)$`).FindStringSubmatch(out)
	if seq == nil {
		t.Fatalf("ockam revocation add printed %q, want a sequence", out)
	}
	applied := regexp.MustCompile(`\[inputs\.ockam_listener\] Revocation list from (?:revocation_source )?"[^"]+" applied: sequence ` + seq[1] + `,`)
	// Each gateway's log is polled as often as the figure needs, not for
	// the assertion: the deadline is generous.
	latency := make([]time.Duration, len(s.gateways))
	for i, g := range s.gateways {
		deadline := time.Now().Add(30 * time.Second)
		for !applied.MatchString(g.proc.text()) {
			if time.Now().After(deadline) {
				t.Fatalf("gateway-%d did not apply revocation list %s within 30 s", g.index, seq[1])
			}
			time.Sleep(20 * time.Millisecond)
		}
		latency[i] = time.Since(revokedAt)
	}
	refusedHandshake := regexp.MustCompile(`Handshake from \S+ failed \(revoked\)`)
	for _, g := range s.gateways {
		before := g.proc.count(refusedHandshake)
		if err := probe(g); err == nil {
			t.Fatalf("gateway-%d acknowledged a batch of the revoked device", g.index)
		}
		eventually(t, 30*time.Second, fmt.Sprintf("gateway-%d to log the refusal", g.index), func() (bool, string) {
			return g.proc.count(refusedHandshake) > before, ""
		})
	}
	ms := make([]string, len(latency))
	for i, d := range latency {
		ms[i] = fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("device revoked at the authority service: applied by the gateways %s after `ockam revocation add` "+
		"returned (revocation_poll_interval 500ms); each then refused its handshake", strings.Join(ms, ", "))
}

// duplicatesCollapse checks the duplicate rule of docs/SCALING.md on the
// whole path from the stream to InfluxDB: a batch published twice (as a
// gateway does when it resends after a lost publish ack, or as JetStream
// redelivers a message whose consumer ack was lost) is written twice by the
// consumers and stored once, since InfluxDB keeps one point per series and
// timestamp; and a point with the same series and timestamp but another
// value replaces the first (its fields are merged, the last write wins).
// It runs before any device sends, so the consumers write nothing else.
func duplicatesCollapse(t *testing.T, s *scaleTopology) {
	t.Helper()
	ts := time.Now().Add(-2 * time.Hour).Truncate(time.Second).UnixNano()
	batch := fmt.Sprintf("e2e_dup,src=e2e value=1 %d\ne2e_dup,src=e2e value=2 %d\ne2e_dup,src=e2e value=3 %d\n", ts, ts+1e9, ts+2e9)
	publish := func(payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := s.js.Publish(ctx, scaleSubject, []byte(payload)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	written := func(k int) {
		t.Helper()
		eventually(t, 60*time.Second, fmt.Sprintf("the consumers to write %d points", k), func() (bool, string) {
			n := sumMatches(consumerWrites, s.consumers...)
			return n >= k, fmt.Sprint(n)
		})
	}
	publish(batch)
	publish(batch)
	written(6)
	want := []string{
		fmt.Sprintf("e2e_dup,src=e2e value=1 %d", ts),
		fmt.Sprintf("e2e_dup,src=e2e value=2 %d", ts+1e9),
		fmt.Sprintf("e2e_dup,src=e2e value=3 %d", ts+2e9),
	}
	if rows := s.db.rows("e2e_dup"); !slices.Equal(rows, want) {
		t.Fatalf("a batch written twice: InfluxDB holds %q, want each point once: %q", rows, want)
	}
	publish(fmt.Sprintf("e2e_dup,src=e2e value=7 %d\n", ts))
	written(7)
	want[0] = fmt.Sprintf("e2e_dup,src=e2e value=7 %d", ts)
	slices.Sort(want)
	if rows := s.db.rows("e2e_dup"); !slices.Equal(rows, want) {
		t.Fatalf("a point rewritten with another value: InfluxDB holds %q, want the last write: %q", rows, want)
	}
}
