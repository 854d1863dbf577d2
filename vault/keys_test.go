package vault

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func unhex32(t *testing.T, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	require.Len(t, b, 32)
	return [32]byte(b)
}

// TestSignerRFC8032 is RFC 8032 section 7.1, TEST 1 (empty message).
func TestSignerRFC8032(t *testing.T) {
	seed := unhex32(t, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	s := NewSignerFromSeed(seed)
	require.Equal(t, "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", hex.EncodeToString(s.Public()))
	sig, err := s.Sign(nil)
	require.NoError(t, err)
	require.Equal(t, "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b", hex.EncodeToString(sig))

	// Public returns a copy.
	pub := s.Public()
	pub[0] ^= 0xff
	require.Equal(t, byte(0xd7), s.Public()[0])
}

// TestDHRFC7748 is RFC 7748 section 6.1.
func TestDHRFC7748(t *testing.T) {
	alice := NewDHFromScalar(unhex32(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	bob := NewDHFromScalar(unhex32(t, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
	require.Equal(t, unhex32(t, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"), alice.PublicKey())
	require.Equal(t, unhex32(t, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"), bob.PublicKey())
	want := unhex32(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	ab, err := alice.DH(bob.PublicKey())
	require.NoError(t, err)
	require.Equal(t, want, ab)
	ba, err := bob.DH(alice.PublicKey())
	require.NoError(t, err)
	require.Equal(t, want, ba)
}

// TestDHLowOrder checks that peer keys in the small subgroup (and their
// non-canonical encodings) give an error and a zero result, never the zero
// secret as if it were a key.
func TestDHLowOrder(t *testing.T) {
	d := NewDHFromScalar(unhex32(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	peers := []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // 0
		"0100000000000000000000000000000000000000000000000000000000000000", // 1
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1, order 2
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p = 0
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1 = 1
		"0000000000000000000000000000000000000000000000000000000000000080", // 0, high bit set
	}
	for _, p := range peers {
		out, err := d.DH(unhex32(t, p))
		require.ErrorIs(t, err, errLowOrder, p)
		require.Equal(t, [32]byte{}, out, p)
	}
}

// TestRedacted prints keys with every verb, inside other values and through
// slog, and checks that no form of the private key appears.
func TestRedacted(t *testing.T) {
	seed := unhex32(t, "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	scalar := unhex32(t, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	s := NewSignerFromSeed(seed)
	d := NewDHFromScalar(scalar)
	wantS := "vault.Signer(ed25519:d75a9801..., private key redacted)"
	wantD := "vault.DH(x25519:8520f009..., private key redacted)"
	secrets := [][]byte{seed[:], scalar[:], ed25519.NewKeyFromSeed(seed[:])}

	verbs := []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%X", "%q", "%o", "%b", "% x", "%#x", "%10v", "%-40s"}
	var out strings.Builder
	for _, verb := range verbs {
		require.Equal(t, wantS, fmt.Sprintf(verb, s), verb)
		require.Equal(t, wantD, fmt.Sprintf(verb, d), verb)
		out.WriteString(fmt.Sprintf(verb, []any{s, d}))
		out.WriteString(fmt.Sprintf(verb, struct{ S, s Signer }{s, s}))
		out.WriteString(fmt.Sprintf(verb, struct{ D, d DH }{d, d}))
		out.WriteString(fmt.Sprintf(verb, map[string]any{"s": s, "d": d}))
	}
	require.Equal(t, wantS, s.(fmt.Stringer).String())
	require.Equal(t, wantS, s.(fmt.GoStringer).GoString())
	require.Equal(t, wantD, d.(fmt.Stringer).String())
	require.Equal(t, wantD, d.(fmt.GoStringer).GoString())

	var logs bytes.Buffer
	for _, h := range []slog.Handler{slog.NewTextHandler(&logs, nil), slog.NewJSONHandler(&logs, nil)} {
		l := slog.New(h)
		l.Info("keys", "signer", s, "dh", d)
		l.Info("keys", slog.Group("g", slog.Any("signer", s), slog.Any("dh", d)))
		l.With("signer", s).Info("with")
	}
	require.Contains(t, logs.String(), wantS)
	require.Contains(t, logs.String(), wantD)
	out.Write(logs.Bytes())

	printed := out.String()
	for _, secret := range secrets {
		for _, verb := range verbs {
			requireNoLeak(t, printed, fmt.Sprintf(verb, secret))
		}
	}
	// No 4-byte window of a secret appears raw or in hex. (The second half
	// of an ed25519.PrivateKey is the public key, which may be shown.)
	for _, secret := range [][]byte{seed[:], scalar[:]} {
		for i := 0; i+4 <= len(secret); i++ {
			w := secret[i : i+4]
			requireNoLeak(t, printed, string(w))
			requireNoLeak(t, strings.ToLower(printed), hex.EncodeToString(w))
		}
	}
}

func requireNoLeak(t *testing.T, printed, secretForm string) {
	t.Helper()
	if strings.Contains(printed, secretForm) {
		i := strings.Index(printed, secretForm)
		t.Fatalf("printed output contains %q: ...%s", secretForm, printed[max(0, i-200):i+len(secretForm)])
	}
}
