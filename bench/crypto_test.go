package bench

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
)

// BenchmarkCrypto measures the primitives the protocol is built from, as
// ceilings for the figures above them: ChaCha20-Poly1305 (the Noise cipher,
// x/crypto as flynn/noise uses it), one X25519 operation (crypto/ecdh, and
// x/crypto's curve25519.X25519, which flynn/noise's own DH25519 calls), and
// one Ed25519 verification of a credential-sized message. Each reports the
// CPU time per operation beside the wall-clock time (see reportCPU).
func BenchmarkCrypto(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("chacha20poly1305-seal-%dKiB", size>>10), func(b *testing.B) {
			aead, err := chacha20poly1305.New(make([]byte, chacha20poly1305.KeySize))
			if err != nil {
				b.Fatal(err)
			}
			nonce := make([]byte, chacha20poly1305.NonceSize)
			plaintext := make([]byte, size)
			out := make([]byte, 0, size+chacha20poly1305.Overhead)
			b.SetBytes(int64(size))
			defer reportCPU(b, cpuTime(b))
			for b.Loop() {
				out = aead.Seal(out[:0], nonce, plaintext, nil)
			}
		})
	}
	b.Run("x25519-ecdh", func(b *testing.B) {
		priv, peer := newX25519(b), newX25519(b).PublicKey()
		defer reportCPU(b, cpuTime(b))
		for b.Loop() {
			if _, err := priv.ECDH(peer); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x25519-xcrypto", func(b *testing.B) {
		priv, peer := newX25519(b), newX25519(b).PublicKey()
		defer reportCPU(b, cpuTime(b))
		for b.Loop() {
			if _, err := curve25519.X25519(priv.Bytes(), peer.Bytes()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ed25519-verify", func(b *testing.B) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		msg := make([]byte, 200) // about a credential with two attributes
		sig := ed25519.Sign(priv, msg)
		defer reportCPU(b, cpuTime(b))
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("signature does not verify")
			}
		}
	})
}

func newX25519(b *testing.B) *ecdh.PrivateKey {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return k
}
