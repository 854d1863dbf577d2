package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
	"github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// TestEnrollAndDeliver enrolls a listener and a device through a running
// `ockam authority serve`, with tokens minted while it runs (through its
// control socket), then sends metrics from the device to the
// inputs.ockam_listener plugin with the credentials they got. The listener
// polls the service's revocation list: revoking the device there stops
// its next message.
func TestEnrollAndDeliver(t *testing.T) {
	f := newFleet(t)
	srv := f.serve()
	address := "tcp://" + srv.addr

	// Mint one token for the listener and one for the device, and enroll
	// both with the command a person would run.
	dir := t.TempDir()
	enroll := func(name string, attrs ...string) (vaultDir, cred string) {
		t.Helper()
		tok := f.tokens(1, attrs...)[0]
		tokenFile := filepath.Join(dir, name+".token")
		require.NoError(t, os.WriteFile(tokenFile, []byte(tok.Reveal()+"\n"), 0o600))
		vaultDir, cred = filepath.Join(dir, name), filepath.Join(dir, name+".cred")
		out := ockamRun(t, "enroll", "--vault", vaultDir, "--authority", f.authorityFile, "--address", address,
			"--token-file", tokenFile, "--out", cred)
		require.Regexp(t, `(?m)^subject:    I[0-9a-f]{64}$`, out)
		return vaultDir, cred
	}
	listenerVault, listenerCred := enroll("listener", "role=listener")
	deviceVault, deviceCred := enroll("device", "role=sensor", "site=plant-7")

	// The listener plugin, in process, trusting the authority and polling
	// its service for revocations.
	l := inputs.Inputs["ockam_listener"]().(*ockam_listener.Listener)
	l.ServiceAddress = "tcp://" + freeAddress(t)
	l.VaultPath = listenerVault
	l.CredentialPath = listenerCred
	l.AuthorityPaths = []string{f.authorityFile}
	l.AttributeTags = []string{"site"}
	l.RevocationSource = address
	l.RevocationPollInterval = config.Duration(50 * time.Millisecond)
	l.Log = testutil.Logger{Name: "ockam_listener"}
	l.Statistics = selfstat.NewCollector(map[string]string{"test": t.Name()})
	require.NoError(t, l.Init())
	acc := &testutil.Accumulator{}
	require.NoError(t, l.Start(acc))
	t.Cleanup(l.Stop)

	// The device dials with the identity and credential enrollment gave it.
	v, err := vault.OpenFile(deviceVault, nil)
	require.NoError(t, err)
	id, err := secure.LoadIdentity(v)
	require.NoError(t, err)
	cred, err := readCredentialFile(deviceCred)
	require.NoError(t, err)
	verifier, err := secure.NewVerifier(f.authority)
	require.NoError(t, err)
	nc, err := net.Dial("tcp", l.ServiceAddress[len("tcp://"):])
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(nc), secure.HandshakeConfig{Identity: id, Credential: cred, Verifier: verifier})
	require.NoError(t, err)
	t.Cleanup(func() { ch.Close("test done") })
	replies := make(chan secure.Message, 10)
	receiveErr := make(chan error, 1)
	go func() {
		for {
			m, err := ch.Receive()
			if err != nil {
				receiveErr <- err
				close(replies)
				return
			}
			replies <- m
		}
	}()

	// A metric goes through, stamped with the enrolled identity and the
	// site the token granted, and is acked once delivered.
	require.NoError(t, ch.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: []byte("temp,host=a value=21 1700000000000000000\n")}))
	var ms []telegraf.Metric
	require.Eventually(t, func() bool { ms = acc.GetTelegrafMetrics(); return len(ms) == 1 }, 10*time.Second, time.Millisecond)
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New("temp", map[string]string{"host": "a", "ockam_identity": id.Identifier().String(), "site": "plant-7"},
			map[string]any{"value": 21.0}, time.Unix(1700000000, 0)),
	}, ms)
	ms[0].Accept()
	require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: 1}, <-replies)

	// The operator revokes the device in the service's store; the listener
	// picks the list up from the service and closes the device's channel,
	// with the reason (docs/SECURITY.md W14): nothing more is answered.
	ockamRun(t, "revocation", "add", "--vault", f.vault, "--db", f.db, "--subject", id.Identifier().String())
	select {
	case m, ok := <-replies:
		require.False(t, ok, "a reply after the revocation: %+v", m)
	case <-time.After(30 * time.Second):
		t.Fatal("the listener never applied the service's revocation list")
	}
	err = <-receiveErr
	require.ErrorIs(t, err, secure.ErrClosed)
	require.Contains(t, err.Error(), `"revoked"`)
	require.Len(t, acc.GetTelegrafMetrics(), 1, "nothing more emitted")

	st := ockamRun(t, "authority", "status", "--vault", f.vault, "--db", f.db)
	require.Contains(t, st, "credentials issued:  2\n")
	// Sequence 1 is the empty list the service signed at start.
	require.Contains(t, st, "revocation sequence: 2 (1 entries)\n")
}

// freeAddress returns a loopback host:port that is free now (package
// freeport).
func freeAddress(t *testing.T) string {
	t.Helper()
	return freeport.Addr(t)
}
