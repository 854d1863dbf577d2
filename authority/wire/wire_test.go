package wire

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora")

func TestServiceFraming(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteServiceFrame(&buf, ServiceBundle, nil))
	require.NoError(t, WriteServiceFrame(&buf, ServiceEnroll, make([]byte, enroll.RequestSize)))
	typ, body, err := ReadServiceFrame(&buf, ServiceBodyLimit)
	require.NoError(t, err)
	require.Equal(t, ServiceBundle, typ)
	require.Empty(t, body)
	typ, body, err = ReadServiceFrame(&buf, ServiceBodyLimit)
	require.NoError(t, err)
	require.Equal(t, ServiceEnroll, typ)
	require.Len(t, body, enroll.RequestSize)

	for _, tc := range []struct {
		in   []byte
		want error
	}{
		{[]byte{}, io.EOF},
		{[]byte{1, 0}, io.ErrUnexpectedEOF},
		{[]byte{0x42, 0, 0, 0, 0}, secure.ErrMalformed},                      // unknown type
		{[]byte{ServiceBundle, 0, 0, 0, 1, 0}, secure.ErrMalformed},          // body where none is allowed
		{[]byte{ServiceEnroll, 0xff, 0xff, 0xff, 0xff}, secure.ErrMalformed}, // length over the bound, before any allocation
		{[]byte{ServiceEnroll, 0, 0, 1, 0, 1, 2}, io.ErrUnexpectedEOF},
	} {
		_, _, err := ReadServiceFrame(bytes.NewReader(tc.in), ServiceBodyLimit)
		require.ErrorIs(t, err, tc.want, "%x", tc.in)
	}
}

func TestRefusal(t *testing.T) {
	for _, sentinel := range refusalCodes {
		err := ParseRefusal(AppendRefusal(nil, fmt.Errorf("context: %w", sentinel), "the reason"))
		require.ErrorIs(t, err, sentinel)
		require.Contains(t, err.Error(), `"the reason"`)
	}
	err := ParseRefusal(AppendRefusal(nil, fmt.Errorf("disk on fire"), strings.Repeat("é", secure.MaxReason)))
	require.ErrorIs(t, err, ErrAuthorityUnavailable)
	require.LessOrEqual(t, len(AppendRefusal(nil, err, strings.Repeat("é", secure.MaxReason))), 1+secure.MaxReason)
	require.ErrorIs(t, ParseRefusal(nil), secure.ErrMalformed)
	require.ErrorIs(t, ParseRefusal([]byte{1, 0xff}), secure.ErrMalformed)
	require.NotErrorIs(t, ParseRefusal([]byte{200, 'x'}), secure.ErrMalformed, "an unknown code is a refusal")
}

// FuzzReadServiceFrame: the attacker controls the byte stream of the
// service protocol, either end. Every frame read is a prefix of the input
// that writes back the same; reading stops at the first bad frame.
func FuzzReadServiceFrame(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var rebuilt bytes.Buffer
		for {
			typ, body, err := ReadServiceFrame(r, ServiceBodyLimit)
			if err != nil {
				require.True(t, errorIsAny(err, secure.ErrMalformed, io.EOF, io.ErrUnexpectedEOF), "%v", err)
				break
			}
			require.LessOrEqual(t, len(body), ServiceBodyLimit(typ))
			require.NoError(t, WriteServiceFrame(&rebuilt, typ, body))
		}
		require.True(t, bytes.HasPrefix(b, rebuilt.Bytes()), "frames are the input's")
	})
}

// FuzzParseRefusal: the attacker controls a refusal (it is not
// authenticated). A known code keeps its sentinel; the reason is quoted.
func FuzzParseRefusal(f *testing.F) {
	requireSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ParseRefusal(b)
		require.Error(t, err)
		if len(b) == 0 || len(b) > 1+secure.MaxReason || !utf8.Valid(b[1:]) {
			require.ErrorIs(t, err, secure.ErrMalformed)
			return
		}
		if code := int(b[0]); code >= 1 && code <= len(refusalCodes) {
			require.ErrorIs(t, err, refusalCodes[code-1])
			require.Equal(t, b, AppendRefusal(nil, err, string(b[1:])))
		}
	})
}

func errorIsAny(err error, targets ...error) bool {
	return slices.ContainsFunc(targets, func(target error) bool { return errors.Is(err, target) })
}

// requireSeeds fails a fuzz target whose seed corpus is missing or empty.
func requireSeeds(f *testing.F) { fuzzseed.Require(f, seedHint) }

// seedHint is the command that writes the seed corpora.
const seedHint = "go test ./authority/wire -run TestFuzzSeeds -update"

// fuzzSeeds returns the seed corpus of each target. The bodies are of the
// sizes of real ones; the framing does not look inside them.
func fuzzSeeds(t *testing.T) map[string]map[string][]byte {
	frames := func(parts ...[]byte) []byte {
		var b bytes.Buffer
		for i := 0; i < len(parts); i += 2 {
			require.NoError(t, WriteServiceFrame(&b, parts[i][0], parts[i+1]))
		}
		return b.Bytes()
	}
	filled := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	request, answer := filled(enroll.RequestSizeOneTime, 0x5a), filled(300, 0xa5)
	return map[string]map[string][]byte{
		"FuzzReadServiceFrame": {
			"bundle-exchange": frames([]byte{ServiceBundle}, nil, []byte{ServiceBundle | ServiceReply}, filled(179, 0x42)),
			"enroll":          frames([]byte{ServiceEnroll}, request, []byte{ServiceEnroll | ServiceReply}, answer),
			"refusal":         frames([]byte{ServiceRefusal}, AppendRefusal(nil, enroll.ErrTokenUsed, "used")),
			"too-long":        {ServiceEnroll, 0, 0, 1, 0},
			"cut":             frames([]byte{ServiceEnroll}, request)[:100],
			"empty":           {},
		},
		"FuzzParseRefusal": {
			"token-used":  AppendRefusal(nil, enroll.ErrTokenUsed, "token 1234… already used"),
			"unavailable": AppendRefusal(nil, errors.New("x"), "internal error"),
			"bad-utf8":    {1, 0xff, 0xfe},
			"code-0":      {0, 'x'},
			"unknown":     {200},
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
