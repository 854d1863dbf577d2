package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/transport/mqtt/mqtttest"
)

// TestMQTTTransport: two devices and the gateway meet on a real Mosquitto
// broker's topic, neither with a port open to the other. Every point lands
// in InfluxDB exactly as sent, stamped with the identity each device
// proved; a client subscribed to everything on the broker saw the
// handshakes and the data, and none of the line protocol, the attribute
// values, the identifiers, the credentials or the keys in clear. The
// broker is then stopped and started again in the middle of a second
// stream: nothing is lost.
func TestMQTTTransport(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	broker := mqtttest.Broker(t)
	spy := mqtttest.Spy(t, broker.URL())
	cli := newOckamCLI(t, bin.ockam)
	f := newRelayFleet(t, cli)
	topic := broker.URL() + "/ockam/plant-7"

	conf := listenerConf(t, f.gateway, f.authority, db, `["e2e_*"]`, fmt.Sprintf("  service_address = %q", topic))
	l := startProcess(t, "listener-mqtt", bin.telegraf, "--config", conf)
	l.waitLog(listeningOckam, 30*time.Second)

	const n = 200
	pts1, pts2 := sequence("e2e_mqtt", n), sequence("e2e_mqtt", n)
	d1 := startMQTTDevice(t, bin.telegraf, "device-1", f.sensor1, f, topic, execInputs(t, pts1, 50))
	d2 := startMQTTDevice(t, bin.telegraf, "device-2", f.sensor2, f, topic, execInputs(t, pts2, 50))
	want := append(storedAll(pts1, f.sensor1.id, "plant-3"), storedAll(pts2, f.sensor2.id, "plant-9")...)
	sort.Strings(want)
	eventually(t, 90*time.Second, "both devices' points through the broker", func() (bool, string) {
		rows := db.rows("e2e_mqtt")
		return len(rows) >= len(want), fmt.Sprintf("%d of %d rows", len(rows), len(want))
	})
	requireDrained(t, d1)
	requireDrained(t, d2)
	if rows := db.rows("e2e_mqtt"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows, want exactly the %d sent:\n%s", len(rows), len(want), diffRows(rows, want))
	}

	msgs := spy.Messages()
	total := 0
	for _, m := range msgs {
		total += len(m.Payload)
	}
	if total < 2*n*20 {
		t.Fatalf("the spy saw %d messages, %d bytes: too few for %d points, the capture is broken", len(msgs), total, 2*n)
	}
	secrets := map[string][]byte{
		"the measurement name": []byte("e2e_mqtt"),
		"a field":              []byte("seq=1"),
		"site attribute 1":     []byte("plant-3"),
		"site attribute 2":     []byte("plant-9"),
		"role attribute":       []byte("sensor"),
		"listener role":        []byte("listener"),
	}
	for _, m := range []*member{f.sensor1, f.sensor2, f.gateway} {
		for name, key := range vaultKeys(t, m.vault) {
			secrets[m.name+" private key "+name] = key
		}
		secrets[m.name+" identifier"] = []byte(strings.TrimPrefix(m.id, "I"))
		secrets[m.name+" credential"] = credentialBody(t, m.credential)
	}
	for what, s := range secrets {
		for _, m := range msgs {
			if bytes.Contains(m.Payload, s) || strings.Contains(m.Topic, string(s)) {
				t.Errorf("the broker saw %s in clear (topic %s)", what, m.Topic)
			}
		}
	}

	// The broker goes away for a while in the middle of a second stream.
	pts3 := sequence("e2e_mqtt_outage", 400)
	d3 := startMQTTDevice(t, bin.telegraf, "device-1-again", f.sensor1, f, topic, execInputs(t, pts3, 20))
	stored := func() int { return len(db.seqs("e2e_mqtt_outage")[f.sensor1.id]) }
	eventually(t, 60*time.Second, "the second stream to start", func() (bool, string) {
		return stored() >= 100, fmt.Sprintf("%d stored", stored())
	})
	at := stored()
	broker.Stop()
	time.Sleep(2 * time.Second)
	broker.Start()
	back := recovery(t, "the broker restarted", stored)
	eventually(t, 120*time.Second, "the whole second stream", func() (bool, string) {
		return stored() >= len(pts3), fmt.Sprintf("%d of %d stored", stored(), len(pts3))
	})
	requireDrained(t, d3)
	if rows, want := db.rows("e2e_mqtt_outage"), storedAll(pts3, f.sensor1.id, "plant-3"); !slices.Equal(rows, want) {
		t.Fatalf("after the outage InfluxDB holds %d rows, want exactly the %d sent:\n%s", len(rows), len(want), diffRows(rows, want))
	}
	t.Logf("figures: %d + %d points stored exactly through Mosquitto; the spy saw %d messages, %d bytes, and none "+
		"of %d secrets; broker stopped for 2 s at %d of %d stored, new rows %.1fs after it came back, all %d stored "+
		"exactly once; the gateway wrote %d points", n, n, len(msgs), total, len(secrets), at, len(pts3),
		back.Seconds(), len(pts3), written(l))
}

// startMQTTDevice starts a device's Telegraf whose outputs.ockam publishes
// to the broker topic.
func startMQTTDevice(t *testing.T, bin, name string, m *member, f relayFleet, topic, inputs string) *process {
	t.Helper()
	conf := filepath.Join(t.TempDir(), m.name+".conf")
	renderTemplate(t, "device.conf.tmpl", conf, map[string]string{
		"Interval": "500ms", "Inputs": inputs, "ListenerAddress": "unused:0",
		"ListenerIdentity": f.gateway.id, "VaultPath": m.vault, "VaultPassphrase": m.passphrase,
		"CredentialPath": m.credential, "AuthorityPath": f.authority.identity,
	})
	replaceOnce(t, conf, "address =", fmt.Sprintf("  address = %q", topic))
	return startProcess(t, name, bin, "--config", conf)
}
