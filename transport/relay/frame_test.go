package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// vectorRoute is the test vector of docs/PROTOCOL.md, section 15.2: a ROUTE
// from relay A's connection #0123456789abcdef on its way to relay B, then
// to the name plant-7-gateway, carrying "hello".
const vectorRoute = "0000003e" + "0101" +
	"02" + "12" + "7463703a2f2f72656c61792d623a34303030" + "0f" + "706c616e742d372d67617465776179" +
	"01" + "11" + "2330313233343536373839616263646566" +
	"68656c6c6f"

// vectorFrame is the frame of vectorRoute.
var vectorFrame = &frame{Type: typeRoute, Onward: []string{"tcp://relay-b:4000", "plant-7-gateway"},
	Return: []string{"#0123456789abcdef"}, Payload: []byte("hello")}

func TestVector(t *testing.T) {
	want, err := hex.DecodeString(vectorRoute)
	require.NoError(t, err)
	require.Equal(t, want, appendFrame(nil, vectorFrame))
	f, err := readFrame(bytes.NewReader(want))
	require.NoError(t, err)
	require.Equal(t, vectorFrame, f)

	// The vector as docs/PROTOCOL.md prints it.
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	require.NoError(t, err)
	require.Contains(t, strings.Join(strings.Fields(string(doc)), ""), vectorRoute)
}

// validFrames are one of each type, at the limits where there are some.
func validFrames() []*frame {
	var hops []string
	for i := range MaxHops {
		hops = append(hops, strings.Repeat("n", 60)+string(rune('a'+i)))
	}
	return []*frame{
		vectorFrame,
		{Type: typeRoute, Onward: []string{"x"}, Payload: []byte{0}},
		{Type: typeRoute, Onward: hops, Return: hops, Payload: bytes.Repeat([]byte{7}, MaxPayload)},
		{Type: typeRoute, Onward: []string{"tcp://[::1]:1", "tcp://10.0.0.1:65535", "#ffffffffffffffff"}, Payload: []byte("p")},
		{Type: typeError, Return: []string{"#0000000000000000"}, Payload: []byte("relay 127.0.0.1:4000: no listener")},
		{Type: typeError, Payload: []byte{}},
		{Type: typeRegisterBegin},
		{Type: typeChallenge, Payload: bytes.Repeat([]byte{1}, challengeSize)},
		{Type: typeRegister, Name: "plant-7-gateway", Key: bytes.Repeat([]byte{2}, 32), Credential: []byte{3, 4},
			Signature: bytes.Repeat([]byte{5}, 64)},
		{Type: typeRegister, Name: "a", Key: bytes.Repeat([]byte{2}, 32), Credential: []byte{}, Signature: bytes.Repeat([]byte{5}, 64)},
		{Type: typeRegistered, Name: strings.Repeat("z", maxName)},
		{Type: typeRefused, Payload: []byte(strings.Repeat("é", MaxReason/2))},
		{Type: typePing},
		{Type: typePong},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range validFrames() {
		b := appendFrame(nil, f)
		require.LessOrEqual(t, len(b)-4, MaxFrame)
		got, err := readFrame(iotest.OneByteReader(bytes.NewReader(b)))
		require.NoError(t, err, "%v", f.Type)
		require.Equal(t, b, appendFrame(nil, got), "%v", f.Type)
	}
}

func TestFrameMalformed(t *testing.T) {
	route := func(rest ...byte) []byte { return append([]byte{1, 1}, rest...) }
	hop := func(h string) []byte { return append([]byte{byte(len(h))}, h...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"empty", nil, "no version and type"},
		{"version only", []byte{1}, "no version and type"},
		{"version 2", []byte{2, 8}, "version 2"},
		{"version 0", []byte{0, 8}, "version 0"},
		{"type 0", []byte{1, 0}, "unknown frame type 0"},
		{"type 10", []byte{1, 10}, "unknown frame type 10"},
		{"ping trailing", []byte{1, 8, 0}, "1 trailing bytes after PING"},
		{"begin trailing", []byte{1, 3, 9}, "trailing"},
		{"no onward", route(), "onward hop count"},
		{"17 hops", route(17), "17 hops"},
		{"empty hop", route(1, 0), "empty"},
		{"short hop", route(1, 5, 'a'), "onward hop"},
		{"no return", route(cat([]byte{1}, hop("a"))...), "return hop count"},
		{"empty payload", route(cat([]byte{1}, hop("a"), []byte{0})...), "ROUTE payload of 0 bytes"},
		{"big payload", route(cat([]byte{1}, hop("a"), []byte{0}, make([]byte, MaxPayload+1))...), "ROUTE payload of 65538"},
		{"bad name", route(cat([]byte{1}, hop("-a"), []byte{0}, []byte("p"))...), "name"},
		{"name 65", route(cat([]byte{1}, hop(strings.Repeat("a", 65)), []byte{0}, []byte("p"))...), "name"},
		{"upper id", route(cat([]byte{1}, hop("#0123456789ABCDEF"), []byte{0}, []byte("p"))...), "connection id"},
		{"short id", route(cat([]byte{1}, hop("#0123"), []byte{0}, []byte("p"))...), "connection id"},
		{"no port", route(cat([]byte{1}, hop("tcp://host"), []byte{0}, []byte("p"))...), "tcp://HOST:PORT"},
		{"port 0", route(cat([]byte{1}, hop("tcp://host:0"), []byte{0}, []byte("p"))...), "port"},
		{"port 01", route(cat([]byte{1}, hop("tcp://host:01"), []byte{0}, []byte("p"))...), "port"},
		{"port 65536", route(cat([]byte{1}, hop("tcp://host:65536"), []byte{0}, []byte("p"))...), "port"},
		{"host slash", route(cat([]byte{1}, hop("tcp://a/b:1"), []byte{0}, []byte("p"))...), "host"},
		{"no host", route(cat([]byte{1}, hop("tcp://:1"), []byte{0}, []byte("p"))...), "no host"},
		{"bad return hop", route(cat([]byte{1}, hop("a"), []byte{1}, hop("a b"), []byte("p"))...), "return hop 0"},
		{"error not utf8", []byte{1, 2, 0, 0, 0xff}, "not UTF-8"},
		{"error control", []byte{1, 2, 0, 0, 'a', '\n', 'b'}, "control character"},
		{"error long", []byte(string([]byte{1, 2, 0, 0}) + strings.Repeat("r", MaxReason+1)), "longer than 512"},
		{"challenge short", append([]byte{1, 4}, make([]byte, 31)...), "challenge"},
		{"challenge long", append([]byte{1, 4}, make([]byte, 33)...), "trailing"},
		{"register no key", []byte{1, 5, 1, 'a'}, "identity key"},
		{"register bad name", []byte{1, 5, 1, '.'}, "name"},
		{"register short cred", cat([]byte{1, 5, 1, 'a'}, make([]byte, 32), []byte{0, 9, 1}), "credential"},
		{"register no sig", cat([]byte{1, 5, 1, 'a'}, make([]byte, 32), []byte{0, 0}, make([]byte, 63)), "signature"},
		{"register trailing", cat([]byte{1, 5, 1, 'a'}, make([]byte, 32), []byte{0, 0}, make([]byte, 65)), "trailing"},
		{"registered empty name", []byte{1, 6, 0}, "name"},
		{"refused control", []byte{1, 7, 0x1b}, "control"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFrame(tc.body)
			require.ErrorIs(t, err, errProtocol)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestReadFrameLength(t *testing.T) {
	frameOf := func(n int) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(n))
		return append(b, make([]byte, n)...)
	}
	for _, n := range []int{0, MaxFrame + 1, 1 << 31} {
		_, err := readFrame(bytes.NewReader(binary.BigEndian.AppendUint32(nil, uint32(n))))
		require.ErrorIs(t, err, errProtocol, "length %d", n)
		require.ErrorContains(t, err, "frame length")
	}
	// MaxFrame and MaxFrame-1 pass the length check (then the body is wrong).
	for _, n := range []int{MaxFrame - 1, MaxFrame} {
		_, err := readFrame(bytes.NewReader(frameOf(n)))
		require.ErrorContains(t, err, "version 0", "length %d", n)
	}
	// Cut short: the reader's error, not a protocol error.
	b := appendFrame(nil, vectorFrame)
	for i := 1; i < len(b); i++ {
		_, err := readFrame(bytes.NewReader(b[:i]))
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", i)
	}
	_, err := readFrame(iotest.DataErrReader(bytes.NewReader(b)))
	require.NoError(t, err)
}

func TestParseRoute(t *testing.T) {
	require.NoError(t, ParseRoute([]string{"tcp://relay-a:4000", "tcp://relay-b:4000", "plant-7-gateway"}))
	require.NoError(t, ParseRoute([]string{"tcp://127.0.0.1:4000", "#0123456789abcdef"}))
	for _, tc := range []struct {
		route []string
		want  string
	}{
		{nil, "empty route"},
		{[]string{"tcp://r:1"}, "ends at a relay"},
		{[]string{"r", "name"}, `hop 0 "r": the first hop must be tcp://HOST:PORT`},
		{[]string{"udp://r:1", "name"}, "hop 0"},
		{[]string{"tcp://r:1", "bad name!"}, `route hop 1: name "bad name!"`},
		{[]string{"tcp://r:1", ""}, "route hop 1: empty hop"},
		{[]string{"tcp://r:1", "#12"}, "route hop 1: connection id"},
		{[]string{"tcp://r:1", "tcp://r:99999", "n"}, "route hop 1"},
		{append([]string{"tcp://r:1"}, strings.Split(strings.Repeat("n,", MaxHops+1), ",")[:MaxHops+1]...), "17 hops"},
	} {
		err := ParseRoute(tc.route)
		require.ErrorContains(t, err, tc.want, "%q", tc.route)
	}
}

func TestConnIDs(t *testing.T) {
	re := regexp.MustCompile(`^#[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for range 1000 {
		h := newConnID().hop()
		require.Regexp(t, re, h)
		require.False(t, seen[h], "id %s twice", h)
		seen[h] = true
		k, err := parseHop(h)
		require.NoError(t, err)
		require.Equal(t, hopConn, k)
		require.Equal(t, h, parseConnID(h).hop())
	}
}

func TestReason(t *testing.T) {
	require.Equal(t, "a b", string(reason("a\nb")))
	r := reason(strings.Repeat("é", MaxReason))
	require.LessOrEqual(t, len(r), MaxReason)
	require.NoError(t, checkReason(r))
	require.NoError(t, checkReason(reason("x\x00\xff")))
}

// FuzzParseFrame: the attacker controls every byte of a frame body (any
// client of a relay, or a relay towards an endpoint). parseFrame must not
// panic, must reject what it cannot re-encode exactly (the encoding is
// canonical), and what it accepts must re-encode to the same bytes.
func FuzzParseFrame(f *testing.F) {
	entries, err := os.ReadDir("testdata/fuzz/FuzzParseFrame")
	if err != nil || len(entries) == 0 {
		f.Fatalf("empty seed corpus testdata/fuzz/FuzzParseFrame: %v", err)
	}
	for _, fr := range validFrames() {
		f.Add(appendFrame(nil, fr)[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := parseFrame(body)
		if err != nil {
			if !errors.Is(err, errProtocol) {
				t.Fatalf("error %v does not wrap errProtocol", err)
			}
			return
		}
		if got := appendFrame(nil, fr)[4:]; !bytes.Equal(got, body) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, body)
		}
	})
}
