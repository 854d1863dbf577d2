package ockam_listener

import (
	"fmt"
	"strings"
	"testing"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
)

// TestAttackProvenanceThroughFields (docs/SECURITY.md, W12): a device with
// a valid credential writes fields named like the tags the listener sets
// from credentials: the identity tag, an attribute tag, the reserved
// _ockam_bucket tag. InfluxQL resolves a name that is both a tag and a
// field to the field, so `WHERE ockam_identity='I<victim>'` would return
// the attacker's point. Each such message is refused whole with a
// permanent nack naming the field, counted in
// messages_refused{reason=reserved_field}, and nothing of it is emitted.
// Before the fix the message was acked and emitted with the fields.
func TestAttackProvenanceThroughFields(t *testing.T) {
	a := newArena(t, func(_ *pki, l *Listener) { l.AttributeTags = []string{"site"} })
	attacker := a.p.fileDevice("attacker", map[string]string{"role": "sensor", "site": "lyon"})
	c := attacker.dial(t, a.addr)
	a.expect(map[string]int64{"handshakes_ok": 1})

	for i, tt := range []struct{ line, field string }{
		{fmt.Sprintf(`cpu ockam_identity=%q,site="plant-7",usage=99 1700000000000000000`, a.legitID), "ockam_identity"},
		{`cpu site="plant-7",usage=99 1700000000000000000`, "site"},
		{`cpu,host=a usage=1 1700000000000000000` + "\n" + `cpu usage=2,_ockam_bucket="other" 1700000000000000000`, "_ockam_bucket"},
		{`cpu ockam_identity=1i 1700000000000000000`, "ockam_identity"},
	} {
		batch := uint64(i + 1)
		c.send(batch, tt.line+"\n")
		c.requireNack(batch, true, fmt.Sprintf("field %q on measurement \"cpu\" has the name of a tag the listener sets", tt.field))
	}
	a.expect(map[string]int64{"messages_refused/reserved_field": 4})
	a.requireLogCount(1, "Refused a message from "+attacker.id.Identifier().Short()+" (reserved_field)")

	// The same fields under other names pass, stamped with the verified tags.
	c.send(5, `cpu claimed_identity="x",claimed_site="plant-7",usage=99 1700000000000000000`+"\n")
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New("cpu", map[string]string{"ockam_identity": attacker.id.Identifier().String(), "site": "lyon"},
			map[string]any{"claimed_identity": "x", "claimed_site": "plant-7", "usage": 99.0}, ts),
	}, a.out.accept(1))
	c.requireAck(5)
	a.finish()
}

// TestAttackPoisonPoints (docs/SECURITY.md, W13): points that InfluxDB
// refuses for good are refused before delivery, with a permanent nack
// naming the point and InfluxDB's own words where it has them. Emitted,
// each would fail the gateway output's whole batch, and with it every
// other device's points in that batch; before the fix each was emitted.
func TestAttackPoisonPoints(t *testing.T) {
	a := newArena(t, func(_ *pki, l *Listener) { l.AttributeTags = []string{"site"} })
	attacker := a.p.fileDevice("poisoner", map[string]string{"role": "sensor", "site": "lyon"})
	c := attacker.dial(t, a.addr)
	a.expect(map[string]int64{"handshakes_ok": 1})

	// A series key just at the limit with the stamped tags: the identity tag
	// (ockam_identity=I + 64 hex digits) and site=lyon add 92 bytes.
	atLimit := func(extra int) string {
		head := "m,t="
		pad := maxKeyLength - len(head) - len(",ockam_identity=") - 65 - len(",site=lyon") + extra
		return head + strings.Repeat("x", pad) + " v=1 1700000000000000000"
	}
	for i, tt := range []struct{ line, reason string }{
		{`bad,time=x v=1 1700000000000000000`, `invalid tag key: input tag "time" on measurement "bad" is invalid`},
		{`bad time=1i,v=1 1700000000000000000`, `invalid field name: input field "time" on measurement "bad" is invalid`},
		{`bad v=1 1700000000000000000` + "\n" + `bad v="x" 1700000000000000001`,
			`field type conflict: input field "v" on measurement "bad" is type string, and type float earlier in the same message`},
		{`bad v=1i 1700000000000000000` + "\n" + `bad v=1 1700000000000000001`,
			`field type conflict: input field "v" on measurement "bad" is type float, and type integer earlier`},
		{`bad s="` + strings.Repeat("y", maxStringField+1) + `" 1700000000000000000`,
			fmt.Sprintf(`input field "s" on measurement "bad" is a string of %d bytes`, maxStringField+1)},
		{atLimit(1), fmt.Sprintf("max key length exceeded: %d > %d", maxKeyLength+1, maxKeyLength)},
	} {
		batch := uint64(i + 1)
		c.send(batch, tt.line+"\n")
		c.requireNack(batch, true, tt.reason)
	}
	a.expect(map[string]int64{"messages_refused/invalid_point": 6})

	// At the bounds, and the same field with one type per measurement: stored.
	c.send(7, `bad s="`+strings.Repeat("y", maxStringField)+`" 1700000000000000000`+"\n"+
		`other v="x" 1700000000000000000`+"\n"+`bad v=1 1700000000000000000`+"\n")
	require3 := a.out.accept(3)
	c.requireAck(7)
	if len(require3) != 3 {
		t.Fatalf("emitted %d metrics, want 3", len(require3))
	}
	// The series key at exactly the limit: its field key v (+4) goes over, as in influxd.
	c.send(8, atLimit(-5)+"\n")
	got := a.out.accept(1)
	c.requireAck(8)
	if n := len(got[0].Tags()["t"]); n != maxKeyLength-len("m,t=")-len(",ockam_identity=")-65-len(",site=lyon")-5 {
		t.Fatalf("tag t has %d bytes", n)
	}
	c.send(9, atLimit(-4)+"\n")
	c.requireNack(9, true, fmt.Sprintf("max key length exceeded: %d > %d", maxKeyLength+1, maxKeyLength))
	a.expect(map[string]int64{"messages_refused/invalid_point": 1})
	a.finish()
}
