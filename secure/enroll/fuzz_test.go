package enroll

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"
)

// Fuzz targets of the enrollment decoders, as in fuzz_test.go: each says
// what the attacker controls, fails on an empty seed corpus, and checks
// that what parses is canonical.

// FuzzParseBundle: the attacker controls a bundle: one fetched from a
// service it impersonates, or a bundle file handed to a device.
func FuzzParseBundle(f *testing.F) {
	requireSeeds(f)
	fx := newEnrollFixtures(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		bundle, err := ParseBundle(b)
		if err != nil {
			require.True(t, errorIsAny(err, secure.ErrMalformed, secure.ErrBadSignature), "%v", err)
			return
		}
		require.Equal(t, b, bundle.Marshal())
		require.Equal(t, b[:len(b)-64], bundleBody(bundle), "the fields encode to the same bytes")
		_ = bundle.Verify(fx.authority.Public(), vectorNow)
	})
}

// bundleBody re-encodes a parsed bundle's signed part from its fields.
func bundleBody(b *Bundle) []byte {
	body := append([]byte{bundleVersion}, b.IdentityKey...)
	body = append(body, b.SignedPrekey[:]...)
	body = binary.BigEndian.AppendUint64(body, uint64(b.Created.Unix()))
	body = binary.BigEndian.AppendUint64(body, uint64(b.Expires.Unix()))
	body = binary.BigEndian.AppendUint16(body, uint16(len(b.OneTimePrekeys)))
	for _, k := range b.OneTimePrekeys {
		body = append(body, k[:]...)
	}
	return body
}

// FuzzParseToken: the attacker controls a token's text: a file or an
// argument handed to the device or to ockam.
func FuzzParseToken(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			require.ErrorIs(t, err, secure.ErrMalformed)
			return
		}
		require.Equal(t, strings.TrimSpace(s), tok.Reveal())
	})
}

// FuzzOpenEnrollmentRequest: the attacker controls a whole request, which
// anyone who can reach the service may send. It cannot forge the AEAD of
// a request to the fixtures' prekeys; the seeds hold genuine requests, so
// the fuzzer also explores the decrypting path.
func FuzzOpenEnrollmentRequest(f *testing.F) {
	requireSeeds(f)
	fx := newEnrollFixtures(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := OpenEnrollmentRequest(b, fx.authority.Identifier(), fx.keys(), vectorNow)
		if err != nil {
			require.True(t, errorIsAny(err, secure.ErrMalformed, ErrWrongAuthority, ErrUnknownPrekey, secure.ErrExpired,
				secure.ErrDecrypt), "%v", err)
			return
		}
		h, header, _, err := parseRequestHeader(b)
		require.NoError(t, err)
		require.Equal(t, header, h.append(nil), "the header encodes to the same bytes")
		require.Equal(t, RequestHash(b), r.Hash)
		c, err := secure.IssueCredential(fx.authority.Signer(), r.Subject(), nil, vectorNow, vectorCredentialTTL, nil)
		require.NoError(t, err)
		_, err = r.SealAnswer(c, nil)
		require.NoError(t, err)
	})
}

// FuzzParseRequestPlaintext: the attacker controls the decrypted body of
// a request: anyone can encrypt to the authority's signed prekey.
func FuzzParseRequestPlaintext(f *testing.F) {
	requireSeeds(f)
	fx := newEnrollFixtures(f)
	purpose := fx.device.Public().Attestation().PurposeKey
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequestPlaintext(b, purpose, fx.authority.Identifier(), vectorNow)
		if err != nil {
			require.True(t, errorIsAny(err, secure.ErrMalformed, secure.ErrBadSignature, secure.ErrWrongSubject, secure.ErrExpired,
				secure.ErrNotYetValid, ErrWrongAuthority), "%v", err)
			return
		}
		require.Equal(t, b, r.Token.appendTo(r.Attestation.Marshal()))
	})
}

// FuzzOpenAnswer: the attacker controls the answer a device reads: a
// service it impersonates, or an answer file. Only the genuine answer
// opens.
func FuzzOpenAnswer(f *testing.F) {
	requireSeeds(f)
	fx := newEnrollFixtures(f)
	run := fx.run(f, 0)
	v := newVerifier(f, fx.authority)
	f.Fuzz(func(t *testing.T, b []byte) {
		enr, err := ResumeEnrollment(fx.device, run.request, fx.ephemeral)
		require.NoError(t, err)
		c, err := enr.OpenAnswer(b, v, vectorNow)
		if err != nil {
			require.True(t, errorIsAny(err, secure.ErrMalformed, ErrAnswerMismatch, secure.ErrDecrypt, secure.ErrBadSignature,
				secure.ErrUnknownIssuer, secure.ErrWrongSubject, secure.ErrExpired, secure.ErrNotYetValid), "%v", err)
			return
		}
		require.Equal(t, run.answer, b)
		require.Equal(t, run.credential.Marshal(), c.Marshal())
	})
}

// FuzzEnrollmentFile: the attacker controls a file of requests (given to
// the authority) or of answers (given to a device). Writing what was read
// and reading it again is a fixed point.
func FuzzEnrollmentFile(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if requests, err := ParseRequestFile(b); err == nil {
			var file []byte
			for _, r := range requests {
				file = append(file, MarshalRequestFile(r)...)
			}
			again, err := ParseRequestFile(file)
			require.NoError(t, err)
			require.Equal(t, requests, again)
		} else {
			require.ErrorIs(t, err, secure.ErrMalformed)
		}
		if answers, err := ParseAnswerFile(b); err == nil {
			var file []byte
			for _, a := range answers {
				file = append(file, MarshalAnswerFile(a)...)
			}
			again, err := ParseAnswerFile(file)
			require.NoError(t, err)
			require.Equal(t, answers, again)
		} else {
			require.ErrorIs(t, err, secure.ErrMalformed)
		}
	})
}

// enrollFuzzSeeds returns the seed corpus of each enrollment target.
func enrollFuzzSeeds(t *testing.T) map[string]map[string][]byte {
	fx := newEnrollFixtures(t)
	withOneTime, without := fx.run(t, 0), fx.run(t, -1)
	bundle := fx.bundle.Marshal()
	empty, err := NewBundle(fx.authority.Signer(), fx.signedPrekey.PublicKey(), nil, vectorCreated, vectorCreated.Add(vectorSignedPrekeyTTL))
	require.NoError(t, err)
	att := fx.device.Public().Attestation()
	plaintext := fx.token.appendTo(att.Marshal())
	other, err := GenerateToken(fx.stranger.Identifier(), vectorfile.NewHashStream("seed"))
	require.NoError(t, err)
	reqFile := slices.Concat(MarshalRequestFile(withOneTime.request), []byte("\n"), MarshalRequestFile(without.request))
	return map[string]map[string][]byte{
		"FuzzParseBundle": {
			"two-one-time":  bundle,
			"no-one-time":   empty.Marshal(),
			"forged":        flip(bundle, len(bundle)-1, 1),
			"truncated":     bundle[:len(bundle)-1],
			"count-too-big": flip(bundle, bundleHeaderSize-1, 4),
			"version-2":     flip(bundle, 0, 3),
		},
		"FuzzParseToken": {
			"token":      []byte(fx.token.Reveal()),
			"whitespace": []byte(" " + fx.token.Reveal() + "\n"),
			"uppercase":  []byte(strings.ToUpper(fx.token.Reveal())),
			"short":      []byte(fx.token.Reveal()[:40]),
			"empty":      {},
		},
		"FuzzOpenEnrollmentRequest": {
			"one-time":      withOneTime.request,
			"no-one-time":   without.request,
			"tampered":      flip(without.request, RequestSize-1, 1),
			"flags":         flip(without.request, 65, 1),
			"other-version": flip(withOneTime.request, 0, 2),
			"empty":         {},
		},
		"FuzzParseRequestPlaintext": {
			"genuine":       plaintext,
			"other-token":   other.appendTo(att.Marshal()),
			"bad-signature": flip(plaintext, secure.AttestationSize-1, 1),
			"short":         plaintext[:secure.AttestationSize],
		},
		"FuzzOpenAnswer": {
			"genuine":       withOneTime.answer,
			"other-request": without.answer,
			"tampered":      flip(withOneTime.answer, len(withOneTime.answer)-1, 1),
			"truncated":     withOneTime.answer[:48],
		},
		"FuzzEnrollmentFile": {
			"requests":  reqFile,
			"answers":   MarshalAnswerFile(withOneTime.answer),
			"trailing":  append(slices.Clone(reqFile), 'x'),
			"mixed":     slices.Concat(MarshalRequestFile(without.request), MarshalAnswerFile(without.answer)),
			"headers":   []byte("-----BEGIN OCKAM ENROLLMENT ANSWER-----\nA: b\n\nAQ==\n-----END OCKAM ENROLLMENT ANSWER-----\n"),
			"too-short": MarshalRequestFile(without.request[:10]),
		},
	}
}

// TestEnrollmentFuzzSeeds writes the enrollment seed corpora with -update;
// otherwise it checks that the committed seeds are what the code makes now.
func TestEnrollmentFuzzSeeds(t *testing.T) {
	for target, seeds := range enrollFuzzSeeds(t) {
		typ := "[]byte"
		if target == "FuzzParseToken" {
			typ = "string"
		}
		fuzzseed.Check(t, target, typ, seeds, *update, seedHint)
	}
}
