package authority

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/stretchr/testify/require"
)

// Fuzz targets of the store's records and of the control protocol, one per
// decoder, as in package secure: each says what the attacker controls,
// fails on an empty seed corpus (testdata/fuzz/FuzzX/, made by
// TestFuzzSeeds -update), and checks that what parses re-encodes to the
// input.

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora")

// requireSeeds fails a fuzz target whose seed corpus is missing or empty.
func requireSeeds(f *testing.F) { fuzzseed.Require(f, seedHint) }

// seedHint is the command that writes the seed corpora.
const seedHint = "go test ./authority -run TestFuzzSeeds -update"

// FuzzTokenRecord: whoever can write the store file controls its records;
// the service must refuse, not crash on, a damaged one.
func FuzzTokenRecord(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseTokenRecord(b)
		if err != nil {
			require.ErrorIs(t, err, secure.ErrMalformed)
			return
		}
		require.Equal(t, b, appendTokenRecord(nil, r))
		require.NoError(t, checkTokenOK(r))
	})
}

// checkTokenOK checks what a parsed record promises.
func checkTokenOK(r tokenRecord) error {
	if r.spec.CredentialTTL < time.Second {
		return fmt.Errorf("lifetime %v", r.spec.CredentialTTL)
	}
	return secure.CheckAttributes(r.spec.Attributes)
}

// FuzzPrekeyRecord: as FuzzTokenRecord, for one-time prekey records.
func FuzzPrekeyRecord(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePrekeyRecord(b)
		if err != nil {
			require.ErrorIs(t, err, secure.ErrMalformed)
			return
		}
		require.Equal(t, b, appendPrekeyRecord(nil, r))
	})
}

// FuzzControlRequest: a process of the service's user controls the
// control requests (the socket refuses other users): the service decodes
// them strictly.
func FuzzControlRequest(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		switch typ, body := b[0], b[1:]; typ {
		case ctlAddTokens:
			hashes, spec, err := parseAddTokens(body)
			if err != nil {
				require.ErrorIs(t, err, secure.ErrMalformed)
				return
			}
			require.Equal(t, body, appendAddTokens(nil, hashes, spec))
		case ctlRevoke:
			subjects, creds, err := parseRevoke(body)
			if err != nil {
				require.ErrorIs(t, err, secure.ErrMalformed)
				return
			}
			require.Equal(t, body, appendRevoke(nil, subjects, creds))
		default:
			st, err := parseStats(body)
			if err != nil {
				require.ErrorIs(t, err, secure.ErrMalformed)
				return
			}
			require.Equal(t, body, appendStats(nil, st))
		}
	})
}

// fuzzSeeds returns the seed corpus of each target.
func fuzzSeeds(t *testing.T) map[string]map[string][]byte {
	spec := TokenSpec{Attributes: map[string]string{"role": "sensor", "site": "plant-7"},
		Expires: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), CredentialTTL: 30 * 24 * time.Hour}
	unused := appendTokenRecord(nil, tokenRecord{spec: spec})
	used := appendTokenRecord(nil, tokenRecord{spec: spec, used: true, credID: secure.CredentialID{1, 2, 3}})
	none := appendTokenRecord(nil, tokenRecord{spec: TokenSpec{Expires: spec.Expires, CredentialTTL: time.Hour}})
	pk := appendPrekeyRecord(nil, prekeyRecord{expires: spec.Expires, scalar: [32]byte{9}})
	pkUsed := appendPrekeyRecord(nil, prekeyRecord{expires: spec.Expires, used: true})
	hashes := []enroll.TokenHash{{1}, {2}}
	add := appendAddTokens(nil, hashes, spec)
	revoke := appendRevoke(nil, []secure.Identifier{{3}}, []secure.CredentialID{{4}})
	return map[string]map[string][]byte{
		"FuzzTokenRecord": {
			"unused":        unused,
			"used":          used,
			"no-attributes": none,
			"used-no-id":    used[:len(used)-16],
			"trailing":      append(bytes.Clone(unused), 0),
			"state-3":       append([]byte{3}, unused[1:]...),
			"unsorted":      append(bytes.Clone(unused[:17]), 2, 1, 'b', 0, 1, 'a', 0),
		},
		"FuzzPrekeyRecord": {
			"unused":       pk,
			"used":         pkUsed,
			"used-scalar":  append([]byte{stateUsed}, pk[1:]...),
			"unused-short": append([]byte{stateUnused}, pkUsed[1:]...),
			"zero-expiry":  make([]byte, prekeyRecordUsed),
		},
		"FuzzControlRequest": {
			"add-tokens":   append([]byte{ctlAddTokens}, add...),
			"add-count":    append([]byte{ctlAddTokens}, add[:len(add)-1]...),
			"revoke":       append([]byte{ctlRevoke}, revoke...),
			"revoke-count": append([]byte{ctlRevoke}, binary.BigEndian.AppendUint32(nil, 1<<31)...),
			"stats":        append([]byte{ctlStats}, appendStats(nil, Stats{Tokens: 3, TokensUsed: 2, Credentials: 2})...),
		},
	}
}

// TestFuzzSeeds writes the seed corpora with -update; otherwise it checks
// that the committed seeds are what the code makes now.
func TestFuzzSeeds(t *testing.T) {
	for target, seeds := range fuzzSeeds(t) {
		fuzzseed.Check(t, target, "[]byte", seeds, *update, seedHint)
	}
}
