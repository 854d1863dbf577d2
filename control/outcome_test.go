package control

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestOutcomeOf(t *testing.T) {
	f := newFixtures(t)
	in := sign(t, f.operator, configTemplate(Target{Device: f.device.id.Identifier()}, 9))
	o := OutcomeOf(in, nil)
	require.Equal(t, Outcome{ID: in.ID, Operator: f.operator.id.Identifier(), Sequence: 9, Result: Applied}, o)

	o = OutcomeOf(in, refusef(RefusedExpired, "expired at then"))
	require.Equal(t, Refused, o.Result)
	require.Equal(t, RefusedExpired, o.Code)
	require.Equal(t, "instruction refused: expired: expired at then", o.Reason)

	o = OutcomeOf(in, errors.New("disk full"))
	require.Equal(t, Failed, o.Result)
	require.Zero(t, o.Code)

	// an instruction that did not parse: zero id and operator
	o = OutcomeOf(nil, refusef(RefusedMalformed, "x"))
	require.Equal(t, Outcome{Result: Refused, Code: RefusedMalformed, Reason: "instruction refused: malformed: x"}, o)

	// a long reason is cut at a character boundary; invalid UTF-8 replaced
	o = OutcomeOf(in, errors.New(strings.Repeat("é", 600)+"\xff"))
	require.Len(t, o.Reason, MaxReasonSize)
	require.True(t, utf8.ValidString(o.Reason))
	got, err := ParseOutcome(o.Marshal())
	require.NoError(t, err)
	require.Equal(t, o, got)
}

func TestParseOutcomeStrict(t *testing.T) {
	good := Outcome{ID: ID{1}, Operator: [32]byte{2}, Sequence: 3, Result: Refused, Code: RefusedReplayed, Reason: "replayed"}.Marshal()
	_, err := ParseOutcome(good)
	require.NoError(t, err)
	edit := func(i int, v byte) []byte { b := append([]byte(nil), good...); b[i] = v; return b }
	resultAt := IDSize + 32 + 8
	for name, b := range map[string][]byte{
		"empty":              nil,
		"truncated":          good[:resultAt+1],
		"result 0":           edit(resultAt, 0),
		"result 4":           edit(resultAt, 4),
		"refused, code 0":    edit(resultAt+1, 0),
		"refused, code 17":   edit(resultAt+1, 17),
		"applied, with code": edit(resultAt, byte(Applied)),
		"reason not UTF-8":   append(append([]byte(nil), good...), 0xff),
		"reason too long":    append(append([]byte(nil), good...), strings.Repeat("x", MaxReasonSize)...),
	} {
		_, err := ParseOutcome(b)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
}

// FuzzParseOutcome: a device (authenticated, but possibly compromised)
// controls every byte of its outcomes, which become metrics at the gateway.
func FuzzParseOutcome(f *testing.F) {
	requireSeedsOf(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOutcome(b)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		require.Equal(t, b, o.Marshal())
		require.True(t, utf8.ValidString(o.Reason))
		require.LessOrEqual(t, len(o.Reason), MaxReasonSize)
	})
}
