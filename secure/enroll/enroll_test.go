package enroll

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// testKeys is an authority's prekeys for OpenEnrollmentRequest: one signed
// prekey and any number of one-time prekeys, in memory.
type testKeys struct {
	spk        vault.DH
	spkExpires time.Time
	oneTime    map[[32]byte]vault.DH
	used       map[[32]byte]bool
}

func newTestKeys(n int) *testKeys {
	k := &testKeys{spk: randomDH(), spkExpires: t0.Add(24 * time.Hour), oneTime: map[[32]byte]vault.DH{}, used: map[[32]byte]bool{}}
	for range n {
		d := randomDH()
		k.oneTime[d.PublicKey()] = d
	}
	return k
}

func randomDH() vault.DH {
	var s [32]byte
	rand.Read(s[:])
	return vault.NewDHFromScalar(s)
}

func (k *testKeys) SignedPrekey(pub [32]byte, now time.Time) (vault.DH, error) {
	if pub != k.spk.PublicKey() {
		return nil, ErrUnknownPrekey
	}
	if !now.Before(k.spkExpires) {
		return nil, secure.ErrExpired
	}
	return k.spk, nil
}

func (k *testKeys) OneTimePrekey(pub [32]byte, now time.Time) (vault.DH, error) {
	d, ok := k.oneTime[pub]
	switch {
	case !ok:
		return nil, ErrUnknownPrekey
	case k.used[pub]:
		return nil, ErrPrekeyUsed
	}
	return d, nil
}

func (k *testKeys) pubs() [][32]byte {
	var out [][32]byte
	for p := range k.oneTime {
		out = append(out, p)
	}
	return out
}

// enrollEnv is an authority with prekeys, a bundle of them, a device and a
// token.
type enrollEnv struct {
	authority, device *secure.LocalIdentity
	keys              *testKeys
	bundle            *Bundle
	token             Token
	verifier          *secure.Verifier
}

func newEnrollEnv(t *testing.T, oneTime int) *enrollEnv {
	t.Helper()
	e := &enrollEnv{authority: newIdentity(t), device: newIdentity(t), keys: newTestKeys(oneTime)}
	var err error
	e.bundle, err = NewBundle(e.authority.Signer(), e.keys.spk.PublicKey(), e.keys.pubs(), t0, e.keys.spkExpires)
	require.NoError(t, err)
	e.token, err = GenerateToken(e.authority.Identifier(), nil)
	require.NoError(t, err)
	e.verifier = newVerifier(t, e.authority)
	return e
}

// enroll makes the device's request with one-time prekey i (-1: none).
func (e *enrollEnv) enroll(t *testing.T, i int) *Enrollment {
	t.Helper()
	enr, err := NewEnrollment(e.device, e.bundle, e.token, i, randomDH())
	require.NoError(t, err)
	return enr
}

// answer opens a request as the authority and answers it with a credential.
func (e *enrollEnv) answer(t *testing.T, request []byte) ([]byte, *secure.Credential) {
	t.Helper()
	r, err := OpenEnrollmentRequest(request, e.authority.Identifier(), e.keys, t0)
	require.NoError(t, err)
	c := issue(t, e.authority, r.Subject(), map[string]string{"role": "sensor"})
	answer, err := r.SealAnswer(c, nil)
	require.NoError(t, err)
	return answer, c
}

func TestEnrollmentRoundTrip(t *testing.T) {
	for _, oneTime := range []int{-1, 0} {
		t.Run(fmt.Sprint("one-time ", oneTime), func(t *testing.T) {
			e := newEnrollEnv(t, 1)
			enr := e.enroll(t, oneTime)
			request := enr.Request()
			want := RequestSize
			if oneTime >= 0 {
				want = RequestSizeOneTime
			}
			require.Len(t, request, want)

			r, err := OpenEnrollmentRequest(request, e.authority.Identifier(), e.keys, t0)
			require.NoError(t, err)
			require.Equal(t, e.device.Identifier(), r.Subject())
			require.Equal(t, e.token.Hash(), r.Token.Hash())
			require.Equal(t, oneTime >= 0, r.HasOneTimePrekey)
			require.Equal(t, enr.RequestHash(), r.Hash)
			require.Equal(t, RequestHash(request), r.Hash)

			c := issue(t, e.authority, r.Subject(), map[string]string{"role": "sensor", "site": "plant-7"})
			answer, err := r.SealAnswer(c, nil)
			require.NoError(t, err)
			require.Len(t, answer, 1+32+32+len(c.Marshal())+16)
			_, err = r.SealAnswer(c, nil)
			require.Error(t, err, "a request is answered once")

			got, err := enr.OpenAnswer(answer, e.verifier, t0)
			require.NoError(t, err)
			require.Equal(t, c.Marshal(), got.Marshal())
			_, err = enr.OpenAnswer(answer, e.verifier, t0)
			require.Error(t, err, "an answer is opened once")
		})
	}
}

// TestEnrollmentAnswerKeyFresh is the attack of a store restored from a
// backup (issue 23, item 5): a recorded request without a one-time prekey is
// opened and answered twice, with two credentials. With an answer key that
// came from the request alone and a zero nonce, the XOR of the two
// ciphertexts was the XOR of the two credentials: one known credential
// gave away the other. The authority's salt makes the keys differ.
func TestEnrollmentAnswerKeyFresh(t *testing.T) {
	e := newEnrollEnv(t, 0)
	request := e.enroll(t, -1).Request()
	var answers, creds [2][]byte
	for i := range answers {
		r, err := OpenEnrollmentRequest(request, e.authority.Identifier(), e.keys, t0)
		require.NoError(t, err)
		c := issue(t, e.authority, r.Subject(), map[string]string{"role": "sensor", "n": fmt.Sprint(i)})
		answers[i], err = r.SealAnswer(c, nil)
		require.NoError(t, err)
		creds[i] = c.Marshal()
	}
	require.Equal(t, len(creds[0]), len(creds[1]))
	require.NotEqual(t, answers[0][1+32:answerHeaderSize], answers[1][1+32:answerHeaderSize], "each answer has its own salt")
	xor := func(a, b []byte) []byte {
		out := make([]byte, len(a))
		for i := range a {
			out[i] = a[i] ^ b[i]
		}
		return out
	}
	n := len(creds[0])
	leaked := xor(answers[0][answerHeaderSize:answerHeaderSize+n], answers[1][answerHeaderSize:answerHeaderSize+n])
	require.NotEqual(t, xor(creds[0], creds[1]), leaked, "the two answers share a keystream")
}

// TestEnrollmentRefusals: each check of NewEnrollment and
// OpenEnrollmentRequest, with its sentinel.
func TestEnrollmentRefusals(t *testing.T) {
	e := newEnrollEnv(t, 1)
	other := newEnrollEnv(t, 1)
	request := e.enroll(t, 0).Request()
	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"token of another authority (device)", func() error {
			_, err := NewEnrollment(e.device, e.bundle, other.token, -1, randomDH())
			return err
		}, ErrWrongAuthority},
		{"request for another authority", func() error {
			_, err := OpenEnrollmentRequest(request, other.authority.Identifier(), e.keys, t0)
			return err
		}, ErrWrongAuthority},
		{"unknown signed prekey", func() error {
			_, err := OpenEnrollmentRequest(request, e.authority.Identifier(), other.keys, t0)
			return err
		}, ErrUnknownPrekey},
		{"expired signed prekey", func() error {
			_, err := OpenEnrollmentRequest(request, e.authority.Identifier(), e.keys, e.keys.spkExpires)
			return err
		}, secure.ErrExpired},
		{"used one-time prekey", func() error {
			k := *e.keys
			k.used = map[[32]byte]bool{e.bundle.OneTimePrekeys[0]: true}
			_, err := OpenEnrollmentRequest(request, e.authority.Identifier(), &k, t0)
			return err
		}, ErrPrekeyUsed},
		{"expired device attestation", func() error {
			_, err := OpenEnrollmentRequest(request, e.authority.Identifier(), e.keys, e.device.Public().Attestation().Expires)
			return err
		}, secure.ErrExpired},
		{"malformed", func() error {
			_, err := OpenEnrollmentRequest(request[1:], e.authority.Identifier(), e.keys, t0)
			return err
		}, secure.ErrMalformed},
		{"flags without a one-time prekey", func() error {
			_, err := OpenEnrollmentRequest(flip(e.enroll(t, -1).Request(), 65, 1), e.authority.Identifier(), e.keys, t0)
			return err
		}, secure.ErrMalformed},
		{"low-order ephemeral key", func() error {
			r := bytes.Clone(request)
			clear(r[RequestSizeOneTime-requestCiphertextSize-32 : RequestSizeOneTime-requestCiphertextSize])
			_, err := OpenEnrollmentRequest(r, e.authority.Identifier(), e.keys, t0)
			return err
		}, secure.ErrMalformed},
		{"one-time prekey out of the bundle", func() error {
			_, err := NewEnrollment(e.device, e.bundle, e.token, 1, randomDH())
			return err
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			require.Error(t, err)
			if tc.want != nil {
				require.ErrorIs(t, err, tc.want)
			}
		})
	}
}

// TestEnrollmentRequestTampering flips each byte of a request: the
// authority refuses every one, and never with a credential's worth of
// trust.
func TestEnrollmentRequestTampering(t *testing.T) {
	e := newEnrollEnv(t, 1)
	request := e.enroll(t, 0).Request()
	for i := range request {
		_, err := OpenEnrollmentRequest(flip(request, i, 0x20), e.authority.Identifier(), e.keys, t0)
		require.Error(t, err, "byte %d", i)
		require.True(t, errorIsAny(err, secure.ErrMalformed, ErrWrongAuthority, ErrUnknownPrekey, secure.ErrDecrypt), "byte %d: %v", i, err)
	}
}

// TestEnrollmentRetargeting: a request whose clear purpose key is swapped
// for another device's cannot be opened, so no credential can be issued to
// an identity that did not ask for it.
func TestEnrollmentRetargeting(t *testing.T) {
	e := newEnrollEnv(t, 0)
	request := e.enroll(t, -1).Request()
	victim := newIdentity(t).PurposeKey().PublicKey()
	off := RequestSize - requestCiphertextSize - 64
	copy(request[off:], victim[:])
	_, err := OpenEnrollmentRequest(request, e.authority.Identifier(), e.keys, t0)
	require.ErrorIs(t, err, secure.ErrDecrypt)
}

func TestEnrollmentAnswerRefusals(t *testing.T) {
	e := newEnrollEnv(t, 0)
	enr := e.enroll(t, -1)
	answer, _ := e.answer(t, enr.Request())
	otherAnswer, _ := e.answer(t, e.enroll(t, -1).Request())

	_, err := enr.OpenAnswer(otherAnswer, e.verifier, t0)
	require.ErrorIs(t, err, ErrAnswerMismatch)
	for i := range answer {
		_, err := enr.OpenAnswer(flip(answer, i, 1), e.verifier, t0)
		require.True(t, errorIsAny(err, secure.ErrMalformed, ErrAnswerMismatch, secure.ErrDecrypt), "byte %d: %v", i, err)
	}
	_, err = enr.OpenAnswer(answer[:40], e.verifier, t0)
	require.ErrorIs(t, err, secure.ErrMalformed)
	// A credential verifies only with a verifier that trusts its issuer.
	_, err = enr.OpenAnswer(answer, newVerifier(t, newIdentity(t)), t0)
	require.ErrorIs(t, err, secure.ErrUnknownIssuer)
	_, err = enr.OpenAnswer(answer, e.verifier, t0)
	require.NoError(t, err)
}

func TestEnrollmentSealAnswerOtherSubject(t *testing.T) {
	e := newEnrollEnv(t, 0)
	r, err := OpenEnrollmentRequest(e.enroll(t, -1).Request(), e.authority.Identifier(), e.keys, t0)
	require.NoError(t, err)
	_, err = r.SealAnswer(issue(t, e.authority, newIdentity(t).Identifier(), nil), nil)
	require.ErrorIs(t, err, secure.ErrWrongSubject)
}

func TestResumeEnrollment(t *testing.T) {
	e := newEnrollEnv(t, 1)
	eph := randomDH()
	enr, err := NewEnrollment(e.device, e.bundle, e.token, 0, eph)
	require.NoError(t, err)
	answer, _ := e.answer(t, enr.Request())

	resumed, err := ResumeEnrollment(e.device, enr.Request(), eph)
	require.NoError(t, err)
	_, err = resumed.OpenAnswer(answer, e.verifier, t0)
	require.NoError(t, err)

	_, err = ResumeEnrollment(e.device, enr.Request(), randomDH())
	require.ErrorContains(t, err, "another ephemeral key")
	_, err = ResumeEnrollment(newIdentity(t), enr.Request(), eph)
	require.ErrorContains(t, err, "another purpose key")
}

func TestParseRequestPlaintext(t *testing.T) {
	e := newEnrollEnv(t, 0)
	att := e.device.Public().Attestation()
	p := e.token.appendTo(att.Marshal())
	r, err := parseRequestPlaintext(p, att.PurposeKey, e.authority.Identifier(), t0)
	require.NoError(t, err)
	require.Equal(t, e.device.Identifier(), r.Subject())

	other, err := GenerateToken(newIdentity(t).Identifier(), nil)
	require.NoError(t, err)
	_, err = parseRequestPlaintext(other.appendTo(att.Marshal()), att.PurposeKey, e.authority.Identifier(), t0)
	require.ErrorIs(t, err, ErrWrongAuthority)
	_, err = parseRequestPlaintext(p, [32]byte{1}, e.authority.Identifier(), t0)
	require.ErrorIs(t, err, secure.ErrWrongSubject)
	_, err = parseRequestPlaintext(flip(p, 100, 1), att.PurposeKey, e.authority.Identifier(), t0)
	require.ErrorIs(t, err, secure.ErrBadSignature)
	_, err = parseRequestPlaintext(p[1:], att.PurposeKey, e.authority.Identifier(), t0)
	require.ErrorIs(t, err, secure.ErrMalformed)
}

func TestBundle(t *testing.T) {
	authority, other := newIdentity(t), newIdentity(t)
	keys := newTestKeys(3)
	b, err := NewBundle(authority.Signer(), keys.spk.PublicKey(), keys.pubs(), t0, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, b.raw, bundleHeaderSize+3*32+64)
	parsed, err := ParseBundle(b.Marshal())
	require.NoError(t, err)
	require.Equal(t, b.OneTimePrekeys, parsed.OneTimePrekeys)
	require.Equal(t, authority.Identifier(), parsed.Authority())
	again, err := ParseBundleFile(b.MarshalFile())
	require.NoError(t, err)
	require.Equal(t, b.raw, again.raw)

	require.NoError(t, parsed.Verify(authority.Public(), t0))
	require.ErrorIs(t, parsed.Verify(other.Public(), t0), secure.ErrUnknownIssuer)
	require.ErrorIs(t, parsed.Verify(authority.Public(), t0.Add(time.Hour)), secure.ErrExpired)
	require.ErrorIs(t, parsed.Verify(authority.Public(), t0.Add(-2*secure.ClockSkew)), secure.ErrNotYetValid)

	_, err = ParseBundle(flip(b.raw, len(b.raw)-1, 1))
	require.ErrorIs(t, err, secure.ErrBadSignature, "forged signature")
	_, err = ParseBundle(flip(b.raw, 40, 1))
	require.ErrorIs(t, err, secure.ErrBadSignature, "substituted signed prekey")
	_, err = ParseBundle(b.raw[:len(b.raw)-1])
	require.ErrorIs(t, err, secure.ErrMalformed)
	_, err = ParseBundle(flip(b.raw, 82, 1)) // the count
	require.ErrorIs(t, err, secure.ErrMalformed)

	_, err = NewBundle(authority.Signer(), keys.spk.PublicKey(), [][32]byte{{1}, {1}}, t0, t0.Add(time.Hour))
	require.Error(t, err, "repeated one-time prekey")
	_, err = NewBundle(authority.Signer(), keys.spk.PublicKey(), nil, t0, t0)
	require.Error(t, err, "empty period")
}

func TestToken(t *testing.T) {
	authority := newIdentity(t).Identifier()
	tok, err := GenerateToken(authority, vectorfile.NewHashStream("token"))
	require.NoError(t, err)
	text := tok.Reveal()
	require.Len(t, text, len(TokenTextPrefix)+64)
	require.Regexp(t, `^enroll-token:[a-z2-7]{64}$`, text)
	parsed, err := ParseToken(" " + text + "\n")
	require.NoError(t, err)
	require.Equal(t, tok.Hash(), parsed.Hash())
	require.True(t, parsed.MintedBy(authority))
	require.False(t, parsed.MintedBy(newIdentity(t).Identifier()))

	for _, bad := range []string{
		"", text[1:], strings.ToUpper(text), text + "a", text[:len(text)-1],
		text[:len(text)-1] + "1", text[:len(text)-1] + "=", strings.Replace(text, ":", "-", 1),
		text[:20] + "\n" + text[21:],
	} {
		_, err := ParseToken(bad)
		require.ErrorIs(t, err, secure.ErrMalformed, "%q", bad)
		require.NotContains(t, err.Error(), text[len(TokenTextPrefix):], "an error never repeats the secret")
	}
}

// TestTokenRedacted: no fmt verb and no slog handler prints the secret.
func TestTokenRedacted(t *testing.T) {
	tok, err := GenerateToken(newIdentity(t).Identifier(), nil)
	require.NoError(t, err)
	secret := tok.Reveal()[len(TokenTextPrefix):]
	raw := fmt.Sprintf("%x", tok.secret[:])
	type holder struct {
		T Token
		t Token
	}
	h := holder{tok, tok}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T"} {
		for _, v := range []any{tok, &tok, h, &h} {
			out := fmt.Sprintf(verb, v)
			require.NotContains(t, out, secret, verb)
			require.NotContains(t, out, raw, verb)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", tok, "h", h)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "token", tok)
	require.NotContains(t, buf.String(), secret)
	require.NotContains(t, buf.String(), raw)
	require.Contains(t, fmt.Sprint(tok), "redacted")
}

func TestEnrollmentFiles(t *testing.T) {
	e := newEnrollEnv(t, 0)
	r1, r2 := e.enroll(t, -1).Request(), e.enroll(t, -1).Request()
	file := append(MarshalRequestFile(r1), MarshalRequestFile(r2)...)
	got, err := ParseRequestFile(file)
	require.NoError(t, err)
	require.Equal(t, [][]byte{r1, r2}, got)

	a1, _ := e.answer(t, r1)
	answers, err := ParseAnswerFile(append([]byte("\n"), MarshalAnswerFile(a1)...))
	require.NoError(t, err)
	require.Equal(t, [][]byte{a1}, answers)

	for _, bad := range [][]byte{
		nil, []byte("  \n"), append(MarshalRequestFile(r1), 'x'), MarshalAnswerFile(a1),
		MarshalRequestFile(r1[1:]), append(MarshalRequestFile(r1), MarshalAnswerFile(a1)...),
	} {
		_, err := ParseRequestFile(bad)
		require.ErrorIs(t, err, secure.ErrMalformed, "%q", bad)
	}
}
