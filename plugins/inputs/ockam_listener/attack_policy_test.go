package ockam_listener

import (
	"testing"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
)

// TestAttackPolicy (docs/SECURITY.md, attack 6): devices with valid
// credentials write what the policy does not allow them to (alone, or
// hidden among allowed measurements), and forge the identity tag and the
// attribute tags to pass for another device. A refused message emits
// nothing; a forged tag is replaced by the verified value (or removed when
// the credential lacks the attribute), counted and logged.
func TestAttackPolicy(t *testing.T) {
	a := newArena(t, func(_ *pki, l *Listener) {
		l.AttributeTags = []string{"site"}
		l.Allow = []AllowRule{{Attributes: map[string]string{"role": "sensor"}, Measurements: []string{"legit", "temp*"}}}
	})
	sensor := a.p.fileDevice("sensor", map[string]string{"role": "sensor", "site": "lyon"})
	siteless := a.p.fileDevice("siteless", map[string]string{"role": "sensor"})
	actuator := a.p.fileDevice("actuator", map[string]string{"role": "actuator", "site": "lyon"})
	s, n, act := sensor.dial(t, a.addr), siteless.dial(t, a.addr), actuator.dial(t, a.addr)
	a.expect(map[string]int64{"handshakes_ok": 3})

	// A measurement outside the policy, alone and among allowed ones.
	s.send(1, "valve_open value=1 1700000000000000000\n")
	s.requireNack(1, true, `policy: measurement "valve_open" is not allowed`)
	s.send(2, "temp value=1 1700000000000000000\nvalve_open value=1 1700000000000000000\n")
	s.requireNack(2, true, `policy: measurement "valve_open" is not allowed`)
	act.send(1, "temp value=1 1700000000000000000\n")
	act.requireNack(1, true, `policy: measurement "temp" is not allowed`)
	a.expect(map[string]int64{"messages_refused/policy": 3})
	a.requireLog(testutil.LevelWarn, "Refused a message from "+sensor.id.Identifier().Short()+" (policy)", `"valve_open"`)
	a.requireLog(testutil.LevelWarn, "Refused a message from "+actuator.id.Identifier().Short()+" (policy)", `"temp"`)
	a.deliver()

	// Forged tags: the legitimate device's identity and site.
	s.send(3, "temp,ockam_identity="+a.legitID+",site=plant-7 value=1 1700000000000000000\n")
	n.send(1, "temp,site=plant-7 value=2 1700000000000000000\n")
	got := a.out.accept(2)
	s.requireAck(3)
	n.requireAck(1)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New("temp", map[string]string{"ockam_identity": sensor.id.Identifier().String(), "site": "lyon"},
			map[string]any{"value": 1.0}, ts),
		metric.New("temp", map[string]string{"ockam_identity": siteless.id.Identifier().String()},
			map[string]any{"value": 2.0}, ts),
	}, got, testutil.SortMetrics())
	a.expect(map[string]int64{"forged_tags": 2})
	a.requireLog(testutil.LevelWarn, `Replaced the "ockam_identity" tag that `+sensor.id.Identifier().Short())
	a.requireLog(testutil.LevelWarn, `Replaced the "site" tag that `+siteless.id.Identifier().Short())
	a.finish()
}
