package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
	"github.com/ockam-addons/telegraf-ockam/internal/vectorfile"
)

// Fuzz targets: one per decoder. Each says what the attacker controls, fails
// on an empty seed corpus (testdata/fuzz/FuzzX/, made by TestFuzzSeeds), and
// checks that whatever parses is canonical: re-encoding the parsed fields
// gives the input back.

// requireSeeds fails a fuzz target whose seed corpus is missing or empty.
func requireSeeds(f *testing.F) { fuzzseed.Require(f, seedHint) }

// seedHint is the command that writes the seed corpora.
const seedHint = "go test ./secure -run TestFuzzSeeds -update"

// FuzzParseCredential: the attacker controls every byte of a credential,
// the one a peer presents in its handshake payload or a credential file
// handed to an operator.
func FuzzParseCredential(f *testing.F) {
	requireSeeds(f)
	fx := newFixtures(f)
	v := newVerifier(f, fx.authority)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCredential(b)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		require.Equal(t, b, c.Marshal())
		require.Equal(t, b[:len(b)-64], c.appendBody(nil), "the fields encode to the same bytes")
		require.LessOrEqual(t, len(c.Attributes), MaxAttributes)
		_ = v.VerifyCredential(c, c.Subject, vectorNow)
	})
}

// FuzzParseAttestation: the attacker controls every byte of an
// attestation, from a handshake payload or an identity document.
func FuzzParseAttestation(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAttestation(b)
		if err != nil {
			require.True(t, errorIsAny(err, ErrMalformed, ErrBadSignature), "%v", err)
			return
		}
		require.Equal(t, b, a.Marshal())
		body := attestationBody(attestationVersion, a.IdentityKey, purposeSecureChannel, a.PurposeKey,
			uint64(a.Created.Unix()), uint64(a.Expires.Unix()))
		require.Equal(t, b[:attestationSignedLength], body, "the fields encode to the same bytes")
		_ = a.Verify(vectorNow)
	})
}

// FuzzParseRevocationList: the attacker controls every byte of a
// revocation list file, as fetched from wherever the authority publishes.
func FuzzParseRevocationList(f *testing.F) {
	requireSeeds(f)
	fx := newFixtures(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseRevocationList(b)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		require.Equal(t, b, l.Marshal())
		body := revocationBodyNext(revocationVersion, l.Issuer, l.Sequence, uint64(l.IssuedAt.Unix()),
			uint64(l.NextUpdate.Unix()), uint32(len(l.subjects)), l.subjects, uint32(len(l.credentials)), l.credentials)
		require.Equal(t, b[:len(b)-64], body, "the fields encode to the same bytes")
		_ = newVerifier(t, fx.authority).UpdateRevocations(l)
	})
}

// FuzzParsePayload: the attacker controls the decrypted payload of
// handshake message 2 or 3: anyone can complete the Diffie-Hellman part of
// XX, so this is reachable without any credential.
func FuzzParsePayload(f *testing.F) {
	requireSeeds(f)
	fx := newFixtures(f)
	v := newVerifier(f, fx.authority)
	static := fx.device.Public().Attestation().PurposeKey
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c, err := parsePayload(b)
		if err != nil {
			require.True(t, errorIsAny(err, ErrMalformed, ErrBadSignature), "%v", err)
			return
		}
		enc := append([]byte{payloadVersion}, a.raw[:]...)
		enc = binary.BigEndian.AppendUint16(enc, uint16(len(c.raw)))
		require.Equal(t, b, append(enc, c.raw...), "the fields encode to the same bytes")
		_, _ = v.verifyPeer(a, c, static[:], vectorNow, false)
	})
}

// FuzzParsePlaintext: the attacker is an authenticated peer and controls
// the plaintext of every transport message, and so the reassembler's input.
func FuzzParsePlaintext(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parsePlaintext(b)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		var enc []byte
		if m.Type == TypeData {
			enc = appendFragment(nil, m.Batch, m.more, m.Payload)
		} else {
			enc, err = appendControl(nil, m.Message)
			require.NoError(t, err)
		}
		require.Equal(t, b, enc, "the message encodes to the same bytes")
		if m.Type == TypeRekey {
			return
		}
		r := reassembler{max: 64, pending: true, buf: []byte("pending")}
		if _, _, err := r.add(m); err != nil {
			require.ErrorIs(t, err, ErrMalformed)
		}
		require.LessOrEqual(t, len(r.buf), r.max)
	})
}

// FuzzStreamTransport: the attacker controls the byte stream, which is read
// before anyone is authenticated. Every message read is a frame of the
// input, in order; the reading ends with the error the rest of the input
// calls for.
func FuzzStreamTransport(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		tr := NewStreamTransport(&rwc{Reader: bytes.NewReader(b)})
		msgs, err := readAll(tr)
		var rebuilt []byte
		for _, m := range msgs {
			require.NotEmpty(t, m)
			rebuilt = append(rebuilt, frame(m)...)
		}
		require.True(t, bytes.HasPrefix(b, rebuilt), "messages are the input's frames")
		rest := b[len(rebuilt):]
		switch {
		case len(rest) == 0:
			require.ErrorIs(t, err, io.EOF)
		case len(rest) >= 2 && rest[0] == 0 && rest[1] == 0:
			require.ErrorIs(t, err, ErrMalformed)
		default:
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			require.True(t, len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)))
		}
	})
}

// FuzzIdentityFile: the attacker controls an identity document (a peer's,
// or an authority file an operator is sent). PEM allows whitespace, so the
// check is a fixed point: writing what was read and reading it again gives
// the same file.
func FuzzIdentityFile(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseIdentityFile(b)
		if err != nil {
			require.True(t, errorIsAny(err, ErrMalformed, ErrBadSignature), "%v", err)
			return
		}
		file := id.MarshalFile()
		again, err := ParseIdentityFile(file)
		require.NoError(t, err)
		require.Equal(t, file, again.MarshalFile())
		require.Equal(t, id.Attestation().Marshal(), again.Attestation().Marshal())
		require.Equal(t, IdentifierOf(id.Key()), id.Identifier())
	})
}

func errorIsAny(err error, targets ...error) bool {
	return slices.ContainsFunc(targets, func(target error) bool { return errors.Is(err, target) })
}

// fuzzSeeds returns the seed corpus of each target, by file name: valid
// encodings from the vector fixtures, and a few broken ones.
func fuzzSeeds(t *testing.T) map[string]map[string][]byte {
	fx := newFixtures(t)
	cred := fx.deviceCred.Marshal()
	att := fx.device.Public().Attestation().Marshal()
	list := fx.list.Marshal()
	empty, err := NewRevocationList(fx.authority.Signer(), 1, vectorCreated, vectorCreated.Add(DefaultRevocationListValidity), nil, nil)
	require.NoError(t, err)
	noAttrs, err := IssueCredential(fx.authority.Signer(), fx.device.Identifier(), nil, vectorCreated, time.Hour, vectorfile.NewHashStream("seed"))
	require.NoError(t, err)
	max := map[string]string{}
	for i := range MaxAttributes {
		max[fmt.Sprintf("%02d%s", i, strings.Repeat("k", MaxAttributeKey-2))] = strings.Repeat("v", MaxAttributeValue)
	}
	maxCred, err := IssueCredential(fx.authority.Signer(), fx.device.Identifier(), max, vectorCreated, time.Hour, vectorfile.NewHashStream("seed"))
	require.NoError(t, err)
	signer := fx.authority.Signer()
	issuer := fx.authority.Identifier()
	h := fx.handshake(t, fx.listenerCred)
	require.NoError(t, h.err)
	identity := fx.device.Public().MarshalFile()

	return map[string]map[string][]byte{
		"FuzzParseCredential": {
			"device":         cred,
			"listener":       fx.listenerCred.Marshal(),
			"no-attributes":  noAttrs.Marshal(),
			"max":            maxCred.Marshal(),
			"truncated":      cred[:100],
			"trailing-byte":  append(bytes.Clone(cred), 0),
			"version-2":      flip(cred, 0, 3),
			"unsorted-keys":  signWith(t, signer, credentialContext, credentialBody(1, CredentialID{}, issuer, Identifier{}, 1, 2, 2, []attr{{"b", ""}, {"a", ""}})),
			"count-too-high": signWith(t, signer, credentialContext, credentialBody(1, CredentialID{}, issuer, Identifier{}, 1, 2, 3, []attr{{"a", ""}})),
		},
		"FuzzParseAttestation": {
			"device":        att,
			"authority":     fx.authority.Public().Attestation().Marshal(),
			"truncated":     att[:AttestationSize-1],
			"version-2":     flip(att, 0, 3),
			"bad-signature": flip(att, AttestationSize-1, 1),
			"expires-before-created": signWith(t, fx.device.Signer(), attestationContext,
				attestationBody(1, fx.device.Signer().Public(), 1, [32]byte{}, 2, 1)),
		},
		"FuzzParseRevocationList": {
			"list":      list,
			"empty":     empty.Marshal(),
			"truncated": list[:len(list)-1],
			"unsorted": signWith(t, signer, revocationContext,
				revocationBody(revocationVersion, issuer, 1, 1, 2, []Identifier{{2}, {1}}, 0, nil)),
			"count-overflow": signWith(t, signer, revocationContext,
				revocationBody(revocationVersion, issuer, 1, 1, 1<<32-1, nil, 0, nil)),
		},
		"FuzzParsePayload": {
			"device":        appendPayload(nil, fx.device, fx.deviceCred),
			"listener":      appendPayload(nil, fx.listener, fx.listenerCred),
			"version-2":     flip(appendPayload(nil, fx.device, fx.deviceCred), 0, 3),
			"length-long":   flip(appendPayload(nil, fx.device, fx.deviceCred), 1+AttestationSize+1, 1),
			"trailing-byte": append(appendPayload(nil, fx.device, fx.deviceCred), 0),
			"empty":         {},
		},
		"FuzzParsePlaintext": {
			"data":           vectorDataPlaintext,
			"data-more":      appendFragment(nil, 2, true, []byte("cpu ")),
			"ack":            {2, 0, 0, 0, 0, 0, 0, 0, 1},
			"nack-permanent": {3, 0, 0, 0, 0, 0, 0, 0, 1, 1, 'n', 'o'},
			"nack-transient": {3, 0, 0, 0, 0, 0, 0, 0, 1, 2},
			"close":          append([]byte{4}, "bye"...),
			"rekey":          {5},
			"bad-flags":      {1, 0, 0, 0, 0, 0, 0, 0, 1, 2},
			"bad-nack-kind":  {3, 0, 0, 0, 0, 0, 0, 0, 1, 3},
			"bad-reason":     {4, 0xff},
			"rekey-long":     {5, 0},
			"empty":          {},
		},
		"FuzzStreamTransport": {
			"handshake":   slices.Concat(frame(h.msg1), frame(h.msg2), frame(h.msg3)),
			"4097":        frame(pattern(4097, 1)),
			"zero-length": slices.Concat(frame([]byte{1}), []byte{0, 0}),
			"cut-header":  slices.Concat(frame([]byte{1}), []byte{1}),
			"cut-body":    frame(pattern(300, 2))[:200],
			"empty":       {},
		},
		"FuzzIdentityFile": {
			"device":      identity,
			"whitespace":  slices.Concat([]byte("\n\t "), identity, []byte("\r\n\n")),
			"credential":  armor(pemCredential, att),
			"trailing":    slices.Concat(identity, []byte("x")),
			"two-blocks":  slices.Concat(identity, identity),
			"truncated":   identity[:len(identity)-40],
			"bad-content": armor(pemIdentity, flip(att, 100, 1)),
		},
	}
}

// TestFuzzSeeds writes the seed corpora with -update; otherwise it checks
// that the committed seeds are what the code makes now. Files the fuzzer
// adds (crashers kept as regression seeds) are left alone.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		fuzzseed.Check(t, target, "[]byte", seeds, *update, seedHint)
	}
}
