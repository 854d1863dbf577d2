package control

import (
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
)

// Fuzz targets, as in secure/fuzz_test.go: each says what the attacker
// controls, fails on an empty seed corpus (testdata/fuzz/FuzzX/, made by
// TestFuzzSeeds), and checks that whatever parses is canonical.

const seedHint = "go test ./control -run TestFuzzSeeds -update"

// requireSeedsOf fails a fuzz target whose seed corpus is missing or empty.
func requireSeedsOf(f *testing.F) { fuzzseed.Require(f, seedHint) }

// FuzzParse: the attacker (a gateway, relay or broker on the path, or
// anyone who can reach the device's channel) controls every byte of an
// instruction. Whatever parses re-encodes to the same bytes, and the
// device's Verifier refuses it with a code unless it is a genuine
// instruction (the seeds include accepted ones; a mutation is not).
func FuzzParse(f *testing.F) {
	requireSeedsOf(f)
	fx := newFixtures(f)
	genuine := map[string]bool{}
	for _, b := range fuzzSeeds(f, fx)["FuzzParse"] {
		genuine[string(b)] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := Parse(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge), "%v", err)
			return
		}
		require.Equal(t, b, in.Marshal())
		require.Equal(t, b[:len(b)-64], in.appendBody(nil), "the fields encode to the same bytes")
		require.LessOrEqual(t, len(in.Payload), MaxPayloadSize)
		v, _, _ := fx.deviceVerifier(t, RateLimit{})
		_, err = v.Verify(b, vectorNow)
		if !genuine[string(b)] {
			require.NotZero(t, CodeOf(err), "a mutated instruction was accepted: %v", err)
		}
	})
}

// FuzzParseManifest: the attacker controls every byte of an artifact
// manifest (an operator's instruction carries it; the release signature
// is what the device trusts).
func FuzzParseManifest(f *testing.F) {
	requireSeedsOf(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		require.Equal(t, b, m.Marshal())
		require.Equal(t, b[:len(b)-64], m.appendBody(nil))
		require.NoError(t, CheckName(m.Name))
	})
}

// FuzzParseNamed: the attacker controls a config or command payload (the
// name becomes a file name).
func FuzzParseNamed(f *testing.F) {
	requireSeedsOf(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseNamed(b)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		again, err := MarshalNamed(p.Name, p.Data)
		require.NoError(t, err)
		require.Equal(t, b, again)
		require.NotContains(t, p.Name, "/")
		require.NotEqual(t, '.', rune(p.Name[0]))
	})
}

// fuzzSeeds are the seed corpora: the vectors' instructions and their
// payloads.
func fuzzSeeds(t testing.TB, f *fixtures) map[string]map[string][]byte {
	seeds := map[string]map[string][]byte{"FuzzParse": {}, "FuzzParseManifest": {}, "FuzzParseNamed": {}, "FuzzParseOutcome": {}}
	for _, sc := range instructionVectors {
		in := sign(t, sc.signer(f), sc.template(t, f))
		seeds["FuzzParse"][sc.file] = in.Marshal()
		if in.Kind == KindArtifact {
			seeds["FuzzParseManifest"][sc.file] = in.Payload
		} else {
			seeds["FuzzParseNamed"][sc.file] = in.Payload
		}
	}
	m, err := SignManifest(releaseSigner(), "a", 1, sha256.Sum256([]byte{0}))
	require.NoError(t, err)
	seeds["FuzzParseManifest"]["short-name"] = m.Marshal()
	seeds["FuzzParseOutcome"]["applied"] = Outcome{ID: ID{1}, Operator: [32]byte{2}, Sequence: 3, Result: Applied}.Marshal()
	seeds["FuzzParseOutcome"]["refused"] = Outcome{ID: ID{1}, Sequence: 3, Result: Refused, Code: RefusedRollback, Reason: "older"}.Marshal()
	seeds["FuzzParseOutcome"]["failed"] = Outcome{Result: Failed, Reason: "disk full"}.Marshal()
	return seeds
}

func TestFuzzSeeds(t *testing.T) {
	f := newFixtures(t)
	for target, seeds := range fuzzSeeds(t, f) {
		fuzzseed.Check(t, target, "[]byte", seeds, *update, seedHint)
	}
}
