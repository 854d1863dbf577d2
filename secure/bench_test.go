package secure

import (
	"crypto/rand"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// revokedForBench is the size of the revocation list of the benchmarks
// below (docs/BENCHMARKS.md, per-message authorization).
const revokedForBench = 100_000

// BenchmarkAuthorize measures the per-message check of a data message, as
// the listener calls it (time.Now included), with revokedForBench
// identities revoked: "cached" is every message but the first after a new
// revocation list, "uncached" the first one (the time checks and the
// binary searches of the list).
func BenchmarkAuthorize(b *testing.B) {
	v, p := benchPeer(b)
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if err := v.Authorize(p, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			p.checkedState = nil // as after a new revocation list
			if err := v.Authorize(p, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRevocationLookup measures RevocationList.Revokes on a list of
// revokedForBench subjects, for a credential that is not on it.
func BenchmarkRevocationLookup(b *testing.B) {
	v, p := benchPeer(b)
	l := v.revocations.Load().lists[p.Credential.Issuer]
	if len(l.subjects) != revokedForBench {
		b.Fatalf("list of %d subjects", len(l.subjects))
	}
	for b.Loop() {
		if l.Revokes(p.Credential) {
			b.Fatal("revoked")
		}
	}
}

// BenchmarkCheckCurrent: a device's check of the listener's credential
// before each answer counts (expiry and the list of revokedForBench
// subjects, no signature).
func BenchmarkCheckCurrent(b *testing.B) {
	v, p := benchPeer(b)
	now := time.Now()
	for b.Loop() {
		if err := v.CheckCurrent(p.Credential, now); err != nil {
			b.Fatal(err)
		}
	}
}

// benchPeer returns a Verifier whose authority revoked revokedForBench
// random identities, and a verified peer that is not one of them.
func benchPeer(b *testing.B) (*Verifier, *Peer) {
	b.Helper()
	now := time.Now()
	create := func() *LocalIdentity {
		id, err := CreateIdentity(vault.NewMemory(), now)
		if err != nil {
			b.Fatal(err)
		}
		return id
	}
	authority, device := create(), create()
	cred, err := IssueCredential(authority.Signer(), device.Identifier(), map[string]string{"role": "sensor"}, now, time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	v, err := NewVerifier(authority.Public())
	if err != nil {
		b.Fatal(err)
	}
	revoked := make([]Identifier, revokedForBench)
	for i := range revoked {
		rand.Read(revoked[i][:])
	}
	list, err := NewRevocationList(authority.Signer(), 1, now, now.Add(DefaultRevocationListValidity), revoked, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := v.UpdateRevocations(list); err != nil {
		b.Fatal(err)
	}
	a := device.Public().Attestation()
	p, err := v.verifyPeer(a, cred, a.PurposeKey[:], now, false)
	if err != nil {
		b.Fatal(err)
	}
	return v, p
}
