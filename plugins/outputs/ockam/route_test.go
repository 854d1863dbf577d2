package ockam

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt/mqtttest"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// startRelay runs a relay on loopback that trusts fleet's authority, until
// the test ends (or stop). It returns its tcp:// address.
func startRelay(t *testing.T, fleet *ockamtest.Fleet, addr string) (string, func()) {
	t.Helper()
	srv, err := relay.NewServer(relay.ServerConfig{
		Authorities: []*secure.Identity{fleet.Authority.Public()},
		Logger:      &testutil.CaptureLogger{Name: "relay"},
	})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	go srv.Serve(ln)
	stop := func() { srv.Close() }
	t.Cleanup(stop)
	return "tcp://" + ln.Addr().String(), stop
}

// newRoutedOutput is newPipelineOutput with a route instead of an address.
func newRoutedOutput(t *testing.T, route []string, vaultPath, credPath string, authorities ...string) *Output {
	t.Helper()
	o := outputs.Outputs["ockam"]().(*Output)
	o.Route = route
	o.VaultPath, o.CredentialPath = vaultPath, credPath
	o.AuthorityPath, o.AuthorityPaths = authorities[0], authorities[1:]
	o.Timeout = config.Duration(3 * time.Second)
	o.Log = &testutil.CaptureLogger{Name: "outputs.ockam"}
	o.Statistics = selfstat.NewCollector(map[string]string{"pipeline": "routed-" + route[len(route)-1]})
	require.NoError(t, o.Init())
	require.NoError(t, o.Connect())
	t.Cleanup(func() { o.Close() })
	return o
}

// TestWriteThroughRelay: the listener opens no port and registers at a
// relay; the output's route names the relay and the listener. Batches are
// acknowledged end to end, every metric arrives once with the verified
// identity, and after the relay dies and comes back on the same port both
// ends find it again by themselves and the retried batch is delivered.
func TestWriteThroughRelay(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	dev := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
	gw := fleet.Enroll(t, "listener", map[string]string{"role": "listener", "relay": "gw"})
	relayURL, stopRelay := startRelay(t, fleet, "127.0.0.1:0")
	l := startListenerAt(t, func(l *ockam_listener.Listener) {
		l.ServiceAddress, l.RelayAddress, l.RelayName = "", relayURL, "gw"
	}, gw.VaultPath, gw.CredentialPath, time.Minute, fleet.AuthorityFile)
	o := newRoutedOutput(t, []string{relayURL, "gw"}, dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile)

	writeAll(t, o, sequence(0, 100))
	require.Equal(t, want(dev.Identity.Identifier().String(), 0, 100), l.seqs("ockam_identity"))

	stopRelay()
	require.Error(t, o.Write(sequence(100, 100)), "a write while the relay is down fails: Telegraf keeps the batch")
	startRelay(t, fleet, relayURL[len("tcp://"):])
	failed := writeAll(t, o, sequence(100, 100)) // Telegraf's retry of the same batch
	require.Equal(t, want(dev.Identity.Identifier().String(), 0, 200), l.seqs("ockam_identity"),
		"every metric once, none lost")
	t.Logf("after the relay came back: %d failed attempts before the batch went through", failed)
}

// TestRouteToUnknownNameSaysWhy: a route whose name no listener registered
// fails the write with the relay's reason, which the output logs.
func TestRouteToUnknownNameSaysWhy(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	dev := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
	relayURL, _ := startRelay(t, fleet, "127.0.0.1:0")
	o := newRoutedOutput(t, []string{relayURL, "nobody"}, dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile)
	err := o.Write(sequence(0, 1))
	require.ErrorContains(t, err, `no listener registered as "nobody"`)
	require.NotEmpty(t, logged(o.Log, `no listener registered as "nobody"`))
}

// TestWriteOverMQTT: device and listener meet on a real Mosquitto's topic.
func TestWriteOverMQTT(t *testing.T) {
	broker := mqtttest.Broker(t)
	fleet := ockamtest.NewFleet(t)
	dev := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
	gw := fleet.Enroll(t, "listener", map[string]string{"role": "listener"})
	topic := broker.URL() + "/ockam/test"
	l := startListenerAt(t, func(l *ockam_listener.Listener) { l.ServiceAddress = topic },
		gw.VaultPath, gw.CredentialPath, time.Minute, fleet.AuthorityFile)
	o := outputs.Outputs["ockam"]().(*Output)
	o.Address = topic
	o.VaultPath, o.CredentialPath, o.AuthorityPath = dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile
	o.Log = &testutil.CaptureLogger{Name: "outputs.ockam"}
	o.Statistics = selfstat.NewCollector(map[string]string{"pipeline": "mqtt"})
	require.NoError(t, o.Init())
	require.NoError(t, o.Connect())
	t.Cleanup(func() { o.Close() })

	writeAll(t, o, sequence(0, 300))
	require.Equal(t, want(dev.Identity.Identifier().String(), 0, 300), l.seqs("ockam_identity"))
}

// TestStalledRelaySessionsDoNotLockOutDevices: whoever can reach the relay
// opens more sessions to the listener than max_handshakes_per_ip and
// stalls each in the middle of handshake message 1. Sessions through a
// relay are not counted per source (the listener cannot tell their
// sources apart), so a device arriving through the same relay still gets
// its channel at once, long before the stalled handshakes time out.
func TestStalledRelaySessionsDoNotLockOutDevices(t *testing.T) {
	fleet := ockamtest.NewFleet(t)
	dev := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
	gw := fleet.Enroll(t, "listener", map[string]string{"role": "listener", "relay": "gw"})
	relayURL, _ := startRelay(t, fleet, "127.0.0.1:0")
	l := startListenerAt(t, func(l *ockam_listener.Listener) {
		l.ServiceAddress, l.RelayAddress, l.RelayName = "", relayURL, "gw"
		l.MaxHandshakesPerIP = 2
		l.HandshakeTimeout = config.Duration(time.Minute)
	}, gw.VaultPath, gw.CredentialPath, time.Minute, fleet.AuthorityFile)

	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := relay.Dial(ctx, []string{relayURL, "gw"})
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		_, err = c.Write([]byte{0, 48, 1, 2, 3}) // a 48-byte message 1 that never comes whole
		require.NoError(t, err)
	}
	start := time.Now()
	out := newRoutedOutput(t, []string{relayURL, "gw"}, dev.VaultPath, dev.CredentialPath, fleet.AuthorityFile)
	writeAll(t, out, sequence(0, 10))
	require.Equal(t, want(dev.Identity.Identifier().String(), 0, 10), l.seqs("ockam_identity"))
	require.Less(t, time.Since(start), 30*time.Second, "the device did not wait for the stalled handshakes to time out")
}
