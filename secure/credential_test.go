package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

type attr struct{ k, v string }

// credentialBody encodes the signed part of a credential field by field,
// with the attributes in the order given and count n, so tests can build
// any form, valid or not.
func credentialBody(version byte, id CredentialID, issuer, subject Identifier, issued, expires uint64, n byte, attrs []attr) []byte {
	b := append([]byte{version}, id[:]...)
	b = append(b, issuer[:]...)
	b = append(b, subject[:]...)
	b = binary.BigEndian.AppendUint64(b, issued)
	b = binary.BigEndian.AppendUint64(b, expires)
	b = append(b, n)
	for _, a := range attrs {
		b = append(b, byte(len(a.k)))
		b = append(b, a.k...)
		b = append(b, byte(len(a.v)))
		b = append(b, a.v...)
	}
	return b
}

var (
	testSubject  = Identifier{0x55}
	sensorAttrs  = map[string]string{"role": "sensor", "site": "plant-7"}
	sensorSorted = []attr{{"role", "sensor"}, {"site", "plant-7"}}
)

func TestIssueCredentialRoundTrip(t *testing.T) {
	authority := testSigner(1)
	attrs := map[string]string{"role": "sensor", "site": "plant-7"}
	c, err := IssueCredential(authority, testSubject, attrs, t0.Add(700*time.Millisecond), credentialTTL, vectorfile.NewHashStream("credential id"))
	require.NoError(t, err)
	attrs["role"] = "admin" // the credential keeps its own copy
	require.Equal(t, sensorAttrs, c.Attributes)

	var wantID CredentialID
	_, _ = vectorfile.NewHashStream("credential id").Read(wantID[:])
	require.Equal(t, wantID, c.ID)
	require.Equal(t, hex.EncodeToString(wantID[:]), c.ID.String())
	require.Equal(t, IdentifierOf(authority.Public()), c.Issuer)
	require.Equal(t, testSubject, c.Subject)
	require.Equal(t, t0, c.IssuedAt)
	require.Equal(t, t0.Add(credentialTTL), c.ExpiresAt)

	b := c.Marshal()
	require.Len(t, b, 187, "the size docs/PROTOCOL.md gives")
	body := credentialBody(1, wantID, c.Issuer, testSubject, uint64(t0.Unix()), uint64(t0.Add(credentialTTL).Unix()), 2, sensorSorted)
	require.Equal(t, body, b[:len(b)-64])
	require.True(t, ed25519.Verify(authority.Public(), signedMessage(credentialContext, body), b[len(body):]))

	p, err := ParseCredential(b)
	require.NoError(t, err)
	require.Equal(t, c.ID, p.ID)
	require.Equal(t, c.Issuer, p.Issuer)
	require.Equal(t, c.Subject, p.Subject)
	require.Equal(t, c.IssuedAt, p.IssuedAt)
	require.Equal(t, c.ExpiresAt, p.ExpiresAt)
	require.Equal(t, sensorAttrs, p.Attributes)
	require.Equal(t, b, p.Marshal())

	b[0] = 0xff // Marshal returns a copy
	require.Equal(t, byte(credentialVersion), c.Marshal()[0])
}

func TestCredentialLimits(t *testing.T) {
	authority := testSigner(1)
	max := map[string]string{}
	for i := range MaxAttributes {
		max[fmt.Sprintf("%02d%s", i, strings.Repeat("k", MaxAttributeKey-2))] = strings.Repeat("v", MaxAttributeValue)
	}
	for _, tc := range []struct {
		name  string
		attrs map[string]string
		size  int
	}{
		{"no attributes", nil, 162},
		{"two attributes", sensorAttrs, 187},
		{"every attribute at its bounds", max, MaxCredentialSize},
		{"empty value", map[string]string{"k": ""}, 162 + 3},
		{"UTF-8 value", map[string]string{"site": "Zürich €", "x.y_Z-9": "é"}, 162 + 1 + 4 + 1 + 11 + 1 + 7 + 1 + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := IssueCredential(authority, testSubject, tc.attrs, t0, time.Hour, nil)
			require.NoError(t, err)
			require.Len(t, c.Marshal(), tc.size)
			p, err := ParseCredential(c.Marshal())
			require.NoError(t, err)
			require.Len(t, p.Attributes, len(tc.attrs))
			for k, v := range tc.attrs {
				require.Equal(t, v, p.Attributes[k])
			}
		})
	}
	require.Equal(t, 10434, MaxCredentialSize, "the bound docs/PROTOCOL.md gives")
}

func TestIssueCredentialErrors(t *testing.T) {
	errRandom, errSign := errors.New("no entropy"), errors.New("token removed")
	tooMany := map[string]string{}
	for i := range MaxAttributes + 1 {
		tooMany[fmt.Sprint("k", i)] = ""
	}
	for _, tc := range []struct {
		name   string
		signer vault.Signer
		attrs  map[string]string
		ttl    time.Duration
		random io.Reader // nil: crypto/rand
		want   error     // nil: any error
	}{
		{name: "zero TTL", ttl: 0},
		{name: "negative TTL", ttl: -time.Second},
		{name: "TTL under a second", ttl: 999 * time.Millisecond},
		{name: "33 attributes", attrs: tooMany, want: ErrMalformed, ttl: time.Hour},
		{name: "empty key", attrs: map[string]string{"": "x"}, want: ErrMalformed, ttl: time.Hour},
		{name: "65-byte key", attrs: map[string]string{strings.Repeat("k", 65): "x"}, want: ErrMalformed, ttl: time.Hour},
		{name: "key with =", attrs: map[string]string{"a=b": "x"}, want: ErrMalformed, ttl: time.Hour},
		{name: "key with space", attrs: map[string]string{"a b": "x"}, want: ErrMalformed, ttl: time.Hour},
		{name: "key with non-ASCII", attrs: map[string]string{"é": "x"}, want: ErrMalformed, ttl: time.Hour},
		{name: "key with NUL", attrs: map[string]string{"a\x00": "x"}, want: ErrMalformed, ttl: time.Hour},
		{name: "256-byte value", attrs: map[string]string{"k": strings.Repeat("v", 256)}, want: ErrMalformed, ttl: time.Hour},
		{name: "value with newline", attrs: map[string]string{"k": "a\nb"}, want: ErrMalformed, ttl: time.Hour},
		{name: "value with NUL", attrs: map[string]string{"k": "a\x00"}, want: ErrMalformed, ttl: time.Hour},
		{name: "value with DEL", attrs: map[string]string{"k": "a\x7f"}, want: ErrMalformed, ttl: time.Hour},
		{name: "value with C1 control", attrs: map[string]string{"k": "a\u0085"}, want: ErrMalformed, ttl: time.Hour},
		{name: "value with bidi override", attrs: map[string]string{"site": "plant-\u202e7"}, want: ErrMalformed, ttl: time.Hour},
		{name: "value with ESC", attrs: map[string]string{"k": "\x1b[31m"}, want: ErrMalformed, ttl: time.Hour},
		{name: "value not UTF-8", attrs: map[string]string{"k": "\xff"}, want: ErrMalformed, ttl: time.Hour},
		{name: "random fails", random: iotest.ErrReader(errRandom), want: errRandom, ttl: time.Hour},
		{name: "random too short", random: bytes.NewReader(make([]byte, 15)), want: io.ErrUnexpectedEOF, ttl: time.Hour},
		{name: "signer fails", signer: failingSigner{testSigner(1), errSign, 0}, want: errSign, ttl: time.Hour},
		{name: "short signature", signer: failingSigner{testSigner(1), nil, 63}, ttl: time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signer := tc.signer
			if signer == nil {
				signer = testSigner(1)
			}
			c, err := IssueCredential(signer, testSubject, tc.attrs, t0, tc.ttl, tc.random)
			require.Error(t, err)
			require.Nil(t, c)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
}

func TestParseCredentialStrict(t *testing.T) {
	authority := testSigner(1)
	issuer := IdentifierOf(authority.Public())
	id := CredentialID{0xc1}
	issued, expires := uint64(t0.Unix()), uint64(t0.Add(time.Hour).Unix())
	body := func(version, n byte, attrs []attr) []byte {
		return credentialBody(version, id, issuer, testSubject, issued, expires, n, attrs)
	}
	good := signWith(t, authority, credentialContext, body(1, 2, sensorSorted))
	_, err := ParseCredential(good)
	require.NoError(t, err)

	for n := range len(good) {
		_, err := ParseCredential(good[:n])
		require.ErrorIs(t, err, ErrMalformed, "truncated to %d bytes", n)
	}
	_, err = ParseCredential(append(bytes.Clone(good), 0))
	require.ErrorIs(t, err, ErrMalformed, "trailing byte")
	_, err = ParseCredential(make([]byte, MaxCredentialSize+1))
	require.ErrorIs(t, err, ErrMalformed, "larger than MaxCredentialSize")

	var thirtyThree []attr
	for i := range MaxAttributes + 1 {
		thirtyThree = append(thirtyThree, attr{fmt.Sprintf("k%02d", i), ""})
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"version 0", body(0, 2, sensorSorted)},
		{"version 2", body(2, 2, sensorSorted)},
		{"keys not sorted", body(1, 2, []attr{{"site", "plant-7"}, {"role", "sensor"}})},
		{"duplicate key", body(1, 2, []attr{{"role", "sensor"}, {"role", "sensor"}})},
		{"key a prefix of the previous", body(1, 2, []attr{{"roles", "x"}, {"role", "y"}})},
		{"key with =", body(1, 1, []attr{{"a=b", "x"}})},
		{"key with space", body(1, 1, []attr{{"a b", "x"}})},
		{"empty key", body(1, 1, []attr{{"", "x"}})},
		{"key of 65 bytes", body(1, 1, []attr{{strings.Repeat("k", 65), "x"}})},
		{"value with newline", body(1, 1, []attr{{"k", "a\nb"}})},
		{"value with DEL", body(1, 1, []attr{{"k", "\x7f"}})},
		{"value with bidi override", body(1, 1, []attr{{"k", "\u2066x"}})},
		{"value not UTF-8", body(1, 1, []attr{{"k", "\xc3"}})},
		{"count claims 3 of 2", body(1, 3, sensorSorted)},
		{"count claims 255 of 2", body(1, 255, sensorSorted)},
		{"count claims 1 of 2", body(1, 1, sensorSorted)},
		{"count claims 0 of 2", body(1, 0, sensorSorted)},
		{"33 attributes", body(1, 33, thirtyThree)},
		{"expires = issued", credentialBody(1, id, issuer, testSubject, issued, issued, 0, nil)},
		{"expires < issued", credentialBody(1, id, issuer, testSubject, expires, issued, 0, nil)},
		{"issued past year 9999", credentialBody(1, id, issuer, testSubject, maxUnix+1, maxUnix+2, 0, nil)},
		{"expires past year 9999", credentialBody(1, id, issuer, testSubject, issued, maxUnix+1, 0, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCredential(signWith(t, authority, credentialContext, tc.body))
			require.ErrorIs(t, err, ErrMalformed)
			require.Nil(t, c)
		})
	}
}

// TestCredentialTamper flips every byte of a credential. Parsing and
// verifying must fail: ErrMalformed for a broken form, ErrUnknownIssuer for
// a changed issuer, ErrBadSignature for anything else.
func TestCredentialTamper(t *testing.T) {
	e := newTestEnv(t)
	good := e.deviceCred.Marshal()
	require.NoError(t, e.verifier.VerifyCredential(e.deviceCred, e.device.Identifier(), t0))
	const issuerAt, countAt = 1 + 16, 1 + 16 + 32 + 32 + 8 + 8
	for i := range good {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			c, err := ParseCredential(flip(good, i, mask))
			if i == 0 || i == countAt {
				require.ErrorIs(t, err, ErrMalformed, "byte %d ^ %#x", i, mask)
			}
			if err != nil {
				require.ErrorIs(t, err, ErrMalformed, "byte %d ^ %#x", i, mask)
				continue
			}
			err = e.verifier.VerifyCredential(c, e.device.Identifier(), t0)
			if issuerAt <= i && i < issuerAt+32 {
				require.ErrorIs(t, err, ErrUnknownIssuer, "byte %d ^ %#x", i, mask)
			} else {
				require.ErrorIs(t, err, ErrBadSignature, "byte %d ^ %#x", i, mask)
			}
		}
	}
}

func TestCredentialFile(t *testing.T) {
	c, err := IssueCredential(testSigner(1), testSubject, sensorAttrs, t0, time.Hour, nil)
	require.NoError(t, err)
	file := c.MarshalFile()
	require.True(t, bytes.HasPrefix(file, []byte("-----BEGIN OCKAM CREDENTIAL-----\n")))
	require.True(t, bytes.HasSuffix(file, []byte("-----END OCKAM CREDENTIAL-----\n")))

	for _, ok := range [][]byte{file, append(append([]byte(" \n\t\r\n"), file...), "\n\n  "...)} {
		p, err := ParseCredentialFile(ok)
		require.NoError(t, err)
		require.Equal(t, c.Marshal(), p.Marshal())
	}

	withHeader := pem.EncodeToMemory(&pem.Block{Type: pemCredential, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: c.Marshal()})
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"binary", c.Marshal()},
		{"identity block", armor(pemIdentity, c.Marshal())},
		{"lowercase type", armor("ockam credential", c.Marshal())},
		{"headers", withHeader},
		{"text before", append([]byte("hello\n"), file...)},
		{"text after", append(bytes.Clone(file), "x"...)},
		{"two blocks", append(bytes.Clone(file), file...)},
		{"no END line", bytes.TrimSuffix(file, []byte("-----END OCKAM CREDENTIAL-----\n"))},
		{"bad base64", bytes.Replace(file, file[len("-----BEGIN OCKAM CREDENTIAL-----\n"):][:4], []byte("!!!!"), 1)},
		{"truncated credential", armor(pemCredential, c.Marshal()[:100])},
		{"file too large", append(bytes.Clone(file), bytes.Repeat([]byte(" "), maxFileSize)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCredentialFile(tc.data)
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
}

// protocolRefusedRunes is the list of docs/PROTOCOL.md, section 4: the code
// points an attribute value may not hold.
var protocolRefusedRunes = [][2]rune{
	{0x0000, 0x001f}, {0x007f, 0x009f}, // C0, DEL, C1
	{0x061c, 0x061c}, {0x200e, 0x200f}, {0x202a, 0x202e}, {0x2066, 0x2069}, // bidirectional controls
}

// TestAttributeValueCharacters checks every code point against section 4's
// list, and the list against Go's Unicode tables (Cc and Bidi_Control).
func TestAttributeValueCharacters(t *testing.T) {
	inList := func(r rune) bool {
		for _, rg := range protocolRefusedRunes {
			if rg[0] <= r && r <= rg[1] {
				return true
			}
		}
		return false
	}
	refused := 0
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if 0xd800 <= r && r <= 0xdfff {
			continue // surrogates have no UTF-8 encoding
		}
		want := inList(r)
		if (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) != want {
			t.Fatalf("%U: Go's Unicode tables and section 4 disagree", r)
		}
		err := checkAttribute("k", "a"+string(r)+"b")
		switch {
		case want && !errors.Is(err, ErrMalformed):
			t.Fatalf("%U accepted: %v", r, err)
		case want && strings.Contains(err.Error(), string(r)):
			t.Fatalf("%U: the error prints it rather than names it: %q", r, err)
		case !want && err != nil:
			t.Fatalf("%U refused: %v", r, err)
		}
		if want {
			refused++
		}
	}
	require.Equal(t, 77, refused, "32 C0 + DEL + 32 C1 + 12 bidirectional controls")
	for _, bad := range []string{"\xff", "\xc0\x80", "\xed\xa0\x80", "a\xe2\x80"} { // not UTF-8: byte, overlong, surrogate, cut
		require.ErrorIs(t, checkAttribute("k", bad), ErrMalformed, "%q", bad)
	}
}
