package secure

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// revocationBody encodes the signed part of a revocation list field by
// field, with the counts given, so tests can build any form.
func revocationBody(version byte, issuer Identifier, seq, issued uint64, n uint32, subjects []Identifier, m uint32, creds []CredentialID) []byte {
	return revocationBodyNext(version, issuer, seq, issued, issued+86400, n, subjects, m, creds)
}

// revocationBodyNext is revocationBody with the next update given.
func revocationBodyNext(version byte, issuer Identifier, seq, issued, next uint64, n uint32, subjects []Identifier, m uint32, creds []CredentialID) []byte {
	b := append([]byte{version}, issuer[:]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, issued)
	b = binary.BigEndian.AppendUint64(b, next)
	b = binary.BigEndian.AppendUint32(b, n)
	for _, s := range subjects {
		b = append(b, s[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, m)
	for _, c := range creds {
		b = append(b, c[:]...)
	}
	return b
}

// ascendingIDs returns n strictly ascending credential ids.
func ascendingIDs(n int) []CredentialID {
	ids := make([]CredentialID, n)
	for i := range ids {
		binary.BigEndian.PutUint64(ids[i][:], uint64(i))
	}
	return ids
}

func TestNewRevocationList(t *testing.T) {
	authority := testSigner(1)
	s1, s2, s3 := Identifier{1}, Identifier{2}, Identifier{3}
	c1, c2 := CredentialID{1}, CredentialID{0, 2}
	l, err := NewRevocationList(authority, 7, t0.Add(900*time.Millisecond), t0.Add(900*time.Millisecond).Add(DefaultRevocationListValidity), []Identifier{s3, s1, s3}, []CredentialID{c1, c2, c1})
	require.NoError(t, err)
	require.Equal(t, IdentifierOf(authority.Public()), l.Issuer)
	require.Equal(t, uint64(7), l.Sequence)
	require.Equal(t, t0.Add(DefaultRevocationListValidity), l.NextUpdate, "truncated to the second")
	require.Equal(t, t0, l.IssuedAt)
	require.Equal(t, []Identifier{s1, s3}, l.Subjects())
	require.Equal(t, []CredentialID{c2, c1}, l.Credentials())
	l.Subjects()[0] = s2 // a copy
	require.Equal(t, []Identifier{s1, s3}, l.Subjects())

	b := l.Marshal()
	body := revocationBodyNext(2, l.Issuer, 7, uint64(t0.Unix()), uint64(t0.Add(DefaultRevocationListValidity).Unix()), 2, []Identifier{s1, s3}, 2, []CredentialID{c2, c1})
	require.Equal(t, body, b[:len(b)-64])
	require.True(t, ed25519.Verify(authority.Public(), signedMessage(revocationContext, body), b[len(body):]))

	p, err := ParseRevocationList(b)
	require.NoError(t, err)
	require.Equal(t, l.Issuer, p.Issuer)
	require.Equal(t, l.Sequence, p.Sequence)
	require.Equal(t, l.IssuedAt, p.IssuedAt)
	require.Equal(t, l.Subjects(), p.Subjects())
	require.Equal(t, l.Credentials(), p.Credentials())
	require.Equal(t, b, p.Marshal())

	for _, tc := range []struct {
		name    string
		subject Identifier
		id      CredentialID
		want    bool
	}{
		{"neither", s2, CredentialID{9}, false},
		{"by subject", s3, CredentialID{9}, true},
		{"by credential id", s2, c2, true},
		{"both", s1, c1, true},
	} {
		require.Equal(t, tc.want, p.Revokes(&Credential{Subject: tc.subject, ID: tc.id}), tc.name)
	}

	empty, err := NewRevocationList(authority, 1, t0, t0.Add(DefaultRevocationListValidity), nil, nil)
	require.NoError(t, err)
	require.Len(t, empty.Marshal(), revocationHeaderSize+8+64)
	require.False(t, empty.Revokes(&Credential{}))
}

func TestNewRevocationListErrors(t *testing.T) {
	errSign := errors.New("token removed")
	_, err := NewRevocationList(testSigner(1), 0, t0, t0.Add(DefaultRevocationListValidity), nil, nil)
	require.Error(t, err, "sequence 0")
	_, err = NewRevocationList(failingSigner{testSigner(1), errSign, 0}, 1, t0, t0.Add(DefaultRevocationListValidity), nil, nil)
	require.ErrorIs(t, err, errSign)
	_, err = NewRevocationList(failingSigner{testSigner(1), nil, 65}, 1, t0, t0.Add(DefaultRevocationListValidity), nil, nil)
	require.Error(t, err, "long signature")
	_, err = NewRevocationList(testSigner(1), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{{1}}, ascendingIDs(MaxRevocationEntries))
	require.Error(t, err, "one entry too many")
	_, err = NewRevocationList(testSigner(1), 1, t0, t0, nil, nil)
	require.Error(t, err, "next update at issue time")
	_, err = NewRevocationList(testSigner(1), 1, t0, t0.Add(999*time.Millisecond), nil, nil)
	require.Error(t, err, "next update within the issue second")
}

func TestParseRevocationListStrict(t *testing.T) {
	authority := testSigner(1)
	issuer := IdentifierOf(authority.Public())
	issued := uint64(t0.Unix())
	subjects, creds := []Identifier{{1}, {2}}, []CredentialID{{1}, {2}}
	good := signWith(t, authority, revocationContext, revocationBody(2, issuer, 3, issued, 2, subjects, 2, creds))
	_, err := ParseRevocationList(good)
	require.NoError(t, err)

	for n := range len(good) {
		_, err := ParseRevocationList(good[:n])
		require.ErrorIs(t, err, ErrMalformed, "truncated to %d bytes", n)
	}
	_, err = ParseRevocationList(append(bytes.Clone(good), 0))
	require.ErrorIs(t, err, ErrMalformed, "trailing byte")
	_, err = ParseRevocationList(make([]byte, maxRevocationListSize+1))
	require.ErrorIs(t, err, ErrMalformed, "larger than the bound")
	require.Equal(t, 33554561, maxRevocationListSize, "the bound docs/PROTOCOL.md gives")

	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"version 0", revocationBody(0, issuer, 3, issued, 2, subjects, 2, creds)},
		{"version 1 (no next update)", revocationBody(1, issuer, 3, issued, 2, subjects, 2, creds)},
		{"version 3", revocationBody(3, issuer, 3, issued, 2, subjects, 2, creds)},
		{"next update at issue time", revocationBodyNext(2, issuer, 3, issued, issued, 2, subjects, 2, creds)},
		{"next update before issue time", revocationBodyNext(2, issuer, 3, issued, issued-1, 2, subjects, 2, creds)},
		{"next update past year 9999", revocationBodyNext(2, issuer, 3, issued, maxUnix+1, 2, subjects, 2, creds)},
		{"sequence 0", revocationBody(2, issuer, 0, issued, 2, subjects, 2, creds)},
		{"issued past year 9999", revocationBodyNext(2, issuer, 3, maxUnix+1, maxUnix+2, 2, subjects, 2, creds)},
		{"subjects not sorted", revocationBody(2, issuer, 3, issued, 2, []Identifier{{2}, {1}}, 2, creds)},
		{"duplicate subject", revocationBody(2, issuer, 3, issued, 2, []Identifier{{1}, {1}}, 2, creds)},
		{"credential ids not sorted", revocationBody(2, issuer, 3, issued, 2, subjects, 2, []CredentialID{{2}, {1}})},
		{"duplicate credential id", revocationBody(2, issuer, 3, issued, 2, subjects, 2, []CredentialID{{2}, {2}})},
		{"subject count claims 3 of 2", revocationBody(2, issuer, 3, issued, 3, subjects, 2, creds)},
		{"subject count claims 1 of 2", revocationBody(2, issuer, 3, issued, 1, subjects, 2, creds)},
		{"subject count 2^32-1", revocationBody(2, issuer, 3, issued, 1<<32-1, subjects, 2, creds)},
		{"credential count claims 3 of 2", revocationBody(2, issuer, 3, issued, 2, subjects, 3, creds)},
		{"credential count 2^32-1", revocationBody(2, issuer, 3, issued, 2, subjects, 1<<32-1, creds)},
		{"no credential count", revocationBody(2, issuer, 3, issued, 2, subjects, 0, nil)[:revocationHeaderSize+4+64]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ParseRevocationList(signWith(t, authority, revocationContext, tc.body))
			require.ErrorIs(t, err, ErrMalformed)
			require.Nil(t, l)
		})
	}

	// The entry bound, reached with credential ids (16 bytes each) so that
	// the size bound does not catch it first.
	ids := ascendingIDs(MaxRevocationEntries + 1)
	atBound := revocationBody(2, issuer, 3, issued, 0, nil, MaxRevocationEntries, ids[:MaxRevocationEntries])
	l, err := ParseRevocationList(append(atBound, make([]byte, 64)...))
	require.NoError(t, err)
	require.Len(t, l.Credentials(), MaxRevocationEntries)
	over := revocationBody(2, issuer, 3, issued, 0, nil, MaxRevocationEntries+1, ids)
	_, err = ParseRevocationList(append(over, make([]byte, 64)...))
	require.ErrorIs(t, err, ErrMalformed, "one entry over the bound")
}

// TestRevocationTamper flips every byte of a list: parsing fails with
// ErrMalformed, or UpdateRevocations fails with ErrUnknownIssuer (issuer
// bytes) or ErrBadSignature; the list never becomes current.
func TestRevocationTamper(t *testing.T) {
	e := newTestEnv(t)
	l, err := NewRevocationList(e.authority.Signer(), 2, t0, t0.Add(DefaultRevocationListValidity), []Identifier{{1}, {2}}, []CredentialID{{1}})
	require.NoError(t, err)
	good := l.Marshal()
	for i := range good {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			p, err := ParseRevocationList(flip(good, i, mask))
			if i == 0 {
				require.ErrorIs(t, err, ErrMalformed, "byte %d ^ %#x", i, mask)
			}
			if err != nil {
				require.ErrorIs(t, err, ErrMalformed, "byte %d ^ %#x", i, mask)
				continue
			}
			err = e.verifier.UpdateRevocations(p)
			if 1 <= i && i < 33 {
				require.ErrorIs(t, err, ErrUnknownIssuer, "byte %d ^ %#x", i, mask)
			} else {
				require.ErrorIs(t, err, ErrBadSignature, "byte %d ^ %#x", i, mask)
			}
			require.Zero(t, e.verifier.RevocationSequence(l.Issuer))
		}
	}
}

func TestRevocationListFile(t *testing.T) {
	l, err := NewRevocationList(testSigner(1), 1, t0, t0.Add(DefaultRevocationListValidity), []Identifier{{1}}, nil)
	require.NoError(t, err)
	file := l.MarshalFile()
	require.True(t, bytes.HasPrefix(file, []byte("-----BEGIN OCKAM REVOCATION LIST-----\n")))
	p, err := ParseRevocationListFile(file)
	require.NoError(t, err)
	require.Equal(t, l.Marshal(), p.Marshal())

	for _, bad := range [][]byte{
		armor(pemCredential, l.Marshal()),
		armor(pemRevocationList, l.Marshal()[:50]),
		append(bytes.Clone(file), "#"...),
	} {
		_, err := ParseRevocationListFile(bad)
		require.ErrorIs(t, err, ErrMalformed)
	}
}
