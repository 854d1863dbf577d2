package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// BenchmarkHandshake measures the listener's side of one handshake without
// I/O: read message 1, write message 2, read message 3 and verify the
// device's attestation and credential. Both ends draw their ephemeral keys
// from fixed bytes, so messages 1 and 3, recorded once, are valid for every
// fresh responder: the loop runs the listener's work alone. "listener" is a
// device that connected before (a reconnect: the Verifier remembers its
// attestation and credential, and checks no signature; secure/verified.go);
// "listener-first" is a device's first handshake with this Verifier (a new
// Verifier for each, so nothing is remembered). Run it with -cpu 1 for
// handshakes per second on one core (per CPU second, so that other
// processes on the machine do not count). After each handshake the loop runs
// the primitives it is made of (handshakeX25519 X25519 and, for a first
// handshake, handshakeEd25519 Ed25519 verifications), so that both are
// measured in the same conditions, microseconds apart; it reports the
// handshake's CPU time, theirs, and the ratio.
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
	cfg := secure.HandshakeConfig{
		Identity:   listener,
		Credential: issue(b, authority, listener, map[string]string{"role": "listener"}, now),
		Verifier:   verifier,
		Random:     bytes.NewReader(bytes.Repeat([]byte{2}, 32)),
	}

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

	// The primitives, on inputs like the handshake's: X25519 with fresh
	// keys, Ed25519 over a credential-sized message.
	priv, peer := newX25519(b), newX25519(b).PublicKey()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	must(b, err)
	msg := make([]byte, 200)
	sig := ed25519.Sign(key, msg)
	primitives := func(ed int) {
		for range handshakeX25519 {
			if _, err := priv.ECDH(peer); err != nil {
				b.Fatal(err)
			}
		}
		for range ed {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("signature does not verify")
			}
		}
	}

	run := func(b *testing.B, first bool) {
		var hsCPU, hsWall, primCPU time.Duration
		ed := 0
		if first {
			ed = handshakeEd25519
		}
		for b.Loop() {
			c0, t0 := cpuTime(b), time.Now()
			cfg.Random = bytes.NewReader(bytes.Repeat([]byte{2}, 32))
			if first {
				cfg.Verifier, err = secure.NewVerifier(authority.Public())
				must(b, err)
			}
			r, err := secure.NewResponder(cfg)
			must(b, err)
			_, err = r.Respond(msg1)
			must(b, err)
			s, err := r.Finish(msg3)
			must(b, err)
			if s.Peer().Identifier != device.Identifier() {
				b.Fatal("wrong peer")
			}
			c1, t1 := cpuTime(b), time.Now()
			primitives(ed)
			hsCPU, hsWall, primCPU = hsCPU+c1-c0, hsWall+t1.Sub(t0), primCPU+cpuTime(b)-c1
		}
		n := float64(b.N)
		b.ReportMetric(float64(hsWall.Nanoseconds())/n, "ns/op")
		b.ReportMetric(float64(hsCPU.Nanoseconds())/n, "cpu-ns/op")
		b.ReportMetric(n/hsCPU.Seconds(), "handshakes/cpu-s")
		b.ReportMetric(float64(primCPU.Nanoseconds())/n, "primitives-cpu-ns/op")
		b.ReportMetric(hsCPU.Seconds()/primCPU.Seconds(), "x-primitives")
	}
	// The recording above verified the device once: "listener" starts warm.
	b.Run("listener", func(b *testing.B) { cfg.Verifier = verifier; run(b, false) })
	b.Run("listener-first", func(b *testing.B) { run(b, true) })
}

// The primitives of the listener's side of a handshake: X25519 for its
// ephemeral key, ee, es and se; Ed25519 for the device's attestation and
// credential, the first time the listener's Verifier sees them.
const (
	handshakeX25519  = 4
	handshakeEd25519 = 2
)

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
