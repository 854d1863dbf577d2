//go:build cgo

package pkcs11

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	p11 "github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11/softhsmtest"
)

// openTestToken makes a SoftHSM token labelled "ockam" and opens it for
// the rest of the test.
func openTestToken(t *testing.T) (*Token, *softhsmtest.Tokens) {
	t.Helper()
	tk := softhsmtest.New(t, "", "ockam")
	tok, err := OpenToken(tk.Module, "ockam", []byte(softhsmtest.PIN))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, tok.Close()) })
	return tok, tk
}

func TestTokenSigner(t *testing.T) {
	tok, _ := openTestToken(t)
	s, err := tok.GenerateSigner("ockam-identity")
	require.NoError(t, err)
	require.Len(t, s.Public(), ed25519.PublicKeySize)

	msg := []byte("purpose key attestation")
	sig, err := s.Sign(msg)
	require.NoError(t, err)
	require.True(t, ed25519.Verify(s.Public(), msg, sig))

	loaded, err := tok.Signer("ockam-identity")
	require.NoError(t, err)
	require.Equal(t, s.Public(), loaded.Public())
	sig2, err := loaded.Sign(msg)
	require.NoError(t, err)
	require.Equal(t, sig, sig2, "Ed25519 is deterministic")

	other, err := tok.GenerateSigner("ockam-other")
	require.NoError(t, err)
	require.NotEqual(t, s.Public(), other.Public())
}

// TestTokenKeyNeverLeaves reads the key object with the binding directly:
// the token must keep it sensitive and not extractable, and refuse to hand
// out its value.
func TestTokenKeyNeverLeaves(t *testing.T) {
	tok, tk := openTestToken(t)
	_, err := tok.GenerateSigner("ockam-identity")
	require.NoError(t, err)
	k := tk.PrivateKey(t, "ockam", "ockam-identity")
	require.True(t, k.Sensitive, "CKA_SENSITIVE")
	require.True(t, k.AlwaysSensitive, "CKA_ALWAYS_SENSITIVE")
	require.False(t, k.Extractable, "CKA_EXTRACTABLE")
	require.True(t, k.NeverExtractable, "CKA_NEVER_EXTRACTABLE")
	require.Error(t, k.ValueErr, "C_GetAttributeValue(CKA_VALUE)")
	require.True(t, k.ValueIsSensitive(), "CKA_VALUE: %v", k.ValueErr)

	// It only signs.
	s := tok.s
	s.mu.Lock()
	defer s.mu.Unlock()
	priv, err := s.findOne(p11.CKO_PRIVATE_KEY, "ockam-identity")
	require.NoError(t, err)
	usage, err := s.mod.ctx.GetAttributeValue(s.h, priv, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SIGN, nil), p11.NewAttribute(p11.CKA_DECRYPT, nil),
		p11.NewAttribute(p11.CKA_UNWRAP, nil), p11.NewAttribute(p11.CKA_DERIVE, nil),
	})
	require.NoError(t, err)
	for i, want := range [][]byte{ckTrue, ckFalse, ckFalse, ckFalse} {
		require.Equal(t, want, usage[i].Value, "attribute %#x", usage[i].Type)
	}
}

// TestTokenRefusesExtractableKey plants keys that may exist outside the
// token: Signer refuses them.
func TestTokenRefusesExtractableKey(t *testing.T) {
	tok, _ := openTestToken(t)
	s := tok.s
	for _, tt := range []struct {
		label string
		attr  *p11.Attribute
	}{
		{"extractable", p11.NewAttribute(p11.CKA_EXTRACTABLE, true)},
		{"not-sensitive", p11.NewAttribute(p11.CKA_SENSITIVE, false)},
	} {
		t.Run(tt.label, func(t *testing.T) {
			s.mu.Lock()
			_, _, err := s.mod.ctx.GenerateKeyPair(s.h, []*p11.Mechanism{p11.NewMechanism(ckmECEdwardsKeyPairGen, nil)},
				[]*p11.Attribute{
					p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_EC_PARAMS, ecParamsOID),
					p11.NewAttribute(p11.CKA_LABEL, tt.label),
				},
				[]*p11.Attribute{
					p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_SIGN, true),
					p11.NewAttribute(p11.CKA_LABEL, tt.label), tt.attr,
				})
			s.mu.Unlock()
			require.NoError(t, err)
			_, err = tok.Signer(tt.label)
			require.ErrorContains(t, err, "may exist outside the token")
		})
	}
}

func TestTokenKeyErrors(t *testing.T) {
	tok, _ := openTestToken(t)
	_, err := tok.GenerateSigner("ockam-identity")
	require.NoError(t, err)

	_, err = tok.GenerateSigner("ockam-identity")
	require.ErrorIs(t, err, vault.ErrExists)
	_, err = tok.Signer("ockam-missing")
	require.ErrorIs(t, err, vault.ErrNotFound)
	require.ErrorIs(t, tok.DeleteKey("ockam-missing"), vault.ErrNotFound)

	require.NoError(t, tok.DeleteKey("ockam-identity"))
	_, err = tok.Signer("ockam-identity")
	require.ErrorIs(t, err, vault.ErrNotFound)
	_, err = tok.GenerateSigner("ockam-identity")
	require.NoError(t, err, "the label is free again")
}

func TestOpenTokenErrors(t *testing.T) {
	tk := softhsmtest.New(t, "", "ockam")
	notLibrary := filepath.Join(t.TempDir(), "libnot.so")
	require.NoError(t, os.WriteFile(notLibrary, []byte("not a library"), 0o600))
	const wrongPIN = "wrong-pin-4711"

	tests := []struct {
		name          string
		module, token string
		pin           string
		want          error
	}{
		{"missing module", filepath.Join(t.TempDir(), "libmissing.so"), "ockam", softhsmtest.PIN, ErrModule},
		{"not a module", notLibrary, "ockam", softhsmtest.PIN, ErrModule},
		{"missing token", tk.Module, "elsewhere", softhsmtest.PIN, ErrTokenNotFound},
		{"wrong PIN", tk.Module, "ockam", wrongPIN, ErrPIN},
		{"empty PIN", tk.Module, "ockam", "", ErrPIN},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := OpenToken(tt.module, tt.token, []byte(tt.pin))
			require.ErrorIs(t, err, tt.want)
			require.Nil(t, tok)
			require.NotContains(t, err.Error(), wrongPIN)
			t.Log(err)
		})
	}

	// A process logs in once; a second Open must give the same PIN.
	tok, err := OpenToken(tk.Module, "ockam", []byte(softhsmtest.PIN))
	require.NoError(t, err)
	defer tok.Close()
	_, err = OpenToken(tk.Module, "ockam", []byte(wrongPIN))
	require.ErrorIs(t, err, ErrPIN)
	again, err := OpenToken(tk.Module, "ockam", []byte(softhsmtest.PIN))
	require.NoError(t, err)
	require.NoError(t, again.Close())
	require.NoError(t, again.Close(), "Close is idempotent")
	_, err = tok.GenerateSigner("ockam-identity")
	require.NoError(t, err, "the other Token still works")
}

// TestOpenTokenWithoutEdDSA uses a token that offers ECDSA but not EdDSA,
// as many HSMs do.
func TestOpenTokenWithoutEdDSA(t *testing.T) {
	tk := softhsmtest.New(t, "CKM_EC_KEY_PAIR_GEN,CKM_ECDSA,CKM_SHA256", "ecdsa-only")
	_, err := OpenToken(tk.Module, "ecdsa-only", []byte(softhsmtest.PIN))
	require.ErrorIs(t, err, ErrNoEdDSA)
	t.Log(err)
}

func TestTokenClosed(t *testing.T) {
	tk := softhsmtest.New(t, "", "ockam")
	tok, err := OpenToken(tk.Module, "ockam", []byte(softhsmtest.PIN))
	require.NoError(t, err)
	s, err := tok.GenerateSigner("ockam-identity")
	require.NoError(t, err)
	require.NoError(t, tok.Close())
	_, err = s.Sign([]byte("x"))
	require.ErrorIs(t, err, errClosed)
	_, err = tok.Signer("ockam-identity")
	require.ErrorIs(t, err, errClosed)

	// The last Close finalised the module; it opens again, with the key.
	tok, err = OpenToken(tk.Module, "ockam", []byte(softhsmtest.PIN))
	require.NoError(t, err)
	defer tok.Close()
	loaded, err := tok.Signer("ockam-identity")
	require.NoError(t, err)
	require.Equal(t, s.Public(), loaded.Public())
}

func TestTokenConcurrentSign(t *testing.T) {
	tok, _ := openTestToken(t)
	s, err := tok.GenerateSigner("ockam-identity")
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan error, 8*10)
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				msg := fmt.Appendf(nil, "message %d/%d", g, i)
				sig, err := s.Sign(msg)
				if err == nil && !ed25519.Verify(s.Public(), msg, sig) {
					err = fmt.Errorf("bad signature of %q", msg)
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestSignerFormat(t *testing.T) {
	tok, _ := openTestToken(t)
	s, err := tok.GenerateSigner("ockam-identity")
	require.NoError(t, err)
	want := s.(*signer).String()
	require.True(t, strings.HasPrefix(want, "pkcs11.Signer(ed25519:"), want)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%q"} {
		require.Equal(t, want, fmt.Sprintf(verb, s), verb)
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("key", "signer", s, "token", tok)
	require.Contains(t, b.String(), "pkcs11.Signer(ed25519:")
	require.Contains(t, b.String(), `pkcs11.Token(\"ockam\"`)
}

func TestParseECPoint(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i + 1)
	}
	tests := []struct {
		name  string
		point []byte
		ok    bool
	}{
		{"DER octet string", append([]byte{0x04, 0x20}, key[:]...), true},
		{"bare", key[:], true},
		{"short", key[:31], false},
		{"wrong tag", append([]byte{0x03, 0x20}, key[:]...), false},
		{"wrong length byte", append([]byte{0x04, 0x21}, key[:]...), false},
		{"trailing byte", append(append([]byte{0x04, 0x20}, key[:]...), 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pub [32]byte
			err := parseECPoint(&pub, tt.point)
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, key, pub)
		})
	}
}

// BenchmarkSign compares a signature in the token with one by a key in
// memory, as a file vault holds it once loaded.
func BenchmarkSign(b *testing.B) {
	msg := make([]byte, 82+len("telegraf-ockam attestation v1\x00")) // an attestation's signed bytes
	b.Run("softhsm", func(b *testing.B) {
		tk := softhsmtest.New(b, "", "ockam")
		tok, err := OpenToken(tk.Module, "ockam", []byte(softhsmtest.PIN))
		require.NoError(b, err)
		defer tok.Close()
		s, err := tok.GenerateSigner("ockam-identity")
		require.NoError(b, err)
		for b.Loop() {
			if _, err := s.Sign(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("memory", func(b *testing.B) {
		s, err := vault.NewMemory().GenerateSigner("identity")
		require.NoError(b, err)
		for b.Loop() {
			if _, err := s.Sign(msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
