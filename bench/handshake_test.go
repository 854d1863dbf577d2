package bench

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// BenchmarkHandshake measures the listener's side of one handshake without
// I/O: read message 1, write message 2, read message 3 and verify the
// device's attestation and credential. Both ends draw their ephemeral keys
// from fixed bytes, so messages 1 and 3, recorded once, are valid for every
// fresh responder: the loop runs the listener's work alone, all of it (no
// step is cached). Run it with -cpu 1 for handshakes per second on one core
// (per CPU second, so that other processes on the machine do not count);
// BenchmarkCrypto gives the primitives it is made of.
func BenchmarkHandshake(b *testing.B) {
	now := time.Now()
	authority := newIdentity(b, now)
	verifier, err := secure.NewVerifier(authority.Public())
	if err != nil {
		b.Fatal(err)
	}
	device, listener := newIdentity(b, now), newIdentity(b, now)
	deviceCfg := secure.HandshakeConfig{
		Identity:   device,
		Credential: issue(b, authority, device, map[string]string{"role": "sensor", "site": "plant-7"}, now),
		Verifier:   verifier,
		Random:     bytes.NewReader(bytes.Repeat([]byte{1}, 32)),
	}
	listenerCfg := func() secure.HandshakeConfig {
		return secure.HandshakeConfig{
			Identity:   listener,
			Credential: issue(b, authority, listener, map[string]string{"role": "listener"}, now),
			Verifier:   verifier,
			Random:     bytes.NewReader(bytes.Repeat([]byte{2}, 32)),
		}
	}
	cfg := listenerCfg()

	// Record messages 1 and 3 once.
	initiator, err := secure.NewInitiator(deviceCfg)
	if err != nil {
		b.Fatal(err)
	}
	msg1, err := initiator.Start()
	if err != nil {
		b.Fatal(err)
	}
	msg2, err := respond(cfg, msg1)
	if err != nil {
		b.Fatal(err)
	}
	msg3, _, err := initiator.Finish(msg2)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("listener", func(b *testing.B) {
		cpu := cpuTime(b)
		for b.Loop() {
			cfg.Random = bytes.NewReader(bytes.Repeat([]byte{2}, 32))
			r, err := secure.NewResponder(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := r.Respond(msg1); err != nil {
				b.Fatal(err)
			}
			s, err := r.Finish(msg3)
			if err != nil {
				b.Fatal(err)
			}
			if s.Peer().Identifier != device.Identifier() {
				b.Fatal("wrong peer")
			}
		}
		reportCPU(b, cpu)
		b.ReportMetric(float64(b.N)/(cpuTime(b)-cpu).Seconds(), "handshakes/cpu-s")
	})
}

// BenchmarkHandshakeLatency measures how long a device waits for a channel:
// secure.Dial over loopback TCP to inputs.ockam_listener in this process,
// both ends' work and the three messages included.
func BenchmarkHandshakeLatency(b *testing.B) {
	fleet := ockamtest.NewFleet(b)
	device := fleet.Enroll(b, "device", map[string]string{"role": "sensor"})
	verifier, err := secure.NewVerifier(fleet.Authority.Public())
	must(b, err)
	cfg := secure.HandshakeConfig{Identity: device.Identity, Credential: device.Credential, Verifier: verifier}
	addr, _ := startOckamListener(b, fleet)
	for b.Loop() {
		nc, err := net.Dial("tcp", addr)
		must(b, err)
		ch, err := secure.Dial(context.Background(), secure.NewStreamTransport(nc), cfg)
		must(b, err)
		ch.Close("done")
	}
}

// respond runs a responder on msg1 and returns message 2.
func respond(cfg secure.HandshakeConfig, msg1 []byte) ([]byte, error) {
	r, err := secure.NewResponder(cfg)
	if err != nil {
		return nil, err
	}
	return r.Respond(msg1)
}

// newIdentity creates an identity in a memory vault.
func newIdentity(b testing.TB, now time.Time) *secure.LocalIdentity {
	b.Helper()
	id, err := secure.CreateIdentity(vault.NewMemory(), now)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

// issue has authority issue a credential to subject, valid for a day.
func issue(b testing.TB, authority, subject *secure.LocalIdentity, attrs map[string]string, now time.Time) *secure.Credential {
	b.Helper()
	c, err := secure.IssueCredential(authority.Signer(), subject.Identifier(), attrs, now, 24*time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	return c
}
