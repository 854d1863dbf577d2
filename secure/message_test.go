package secure

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

func TestMessageEncoding(t *testing.T) {
	const batch = 0x0102030405060708
	for _, tc := range []struct {
		name  string
		f     fragment
		plain string
	}{
		{"data", fragment{Message: Message{Type: TypeData, Batch: batch, Payload: []byte("abc")}}, "01 0102030405060708 00 616263"},
		{"data, more", fragment{Message: Message{Type: TypeData, Batch: batch, Payload: []byte("a")}, more: true}, "01 0102030405060708 01 61"},
		{"data, empty", fragment{Message: Message{Type: TypeData, Batch: 0, Payload: []byte{}}}, "01 0000000000000000 00"},
		{"ack", fragment{Message: Message{Type: TypeAck, Batch: 7}}, "02 0000000000000007"},
		{"nack, permanent", fragment{Message: Message{Type: TypeNack, Batch: 9, Permanent: true, Reason: "policy"}}, "03 0000000000000009 01 706f6c696379"},
		{"nack, transient", fragment{Message: Message{Type: TypeNack, Batch: 1 << 63}}, "03 8000000000000000 02"},
		{"close", fragment{Message: Message{Type: TypeClose, Reason: "bye ✓"}}, "04 627965 20 e29c93"},
		{"close, no reason", fragment{Message: Message{Type: TypeClose}}, "04"},
		{"rekey", fragment{Message: Message{Type: TypeRekey}}, "05"},
		{"ready", fragment{Message: Message{Type: TypeReady, Kinds: 0b101, MaxChunk: 65493}}, "08 05 0000ffd5"},
		{"ready, config only", fragment{Message: Message{Type: TypeReady, Kinds: 1, MaxChunk: 1}}, "08 01 00000001"},
		{"instruction", fragment{Message: Message{Type: TypeInstruction, Payload: []byte{1, 2, 3}}}, "09 010203"},
		{"chunk", fragment{Message: Message{Type: TypeChunk, Payload: unhex(t, "00112233445566778899aabbccddeeff 0000000000000010 01 6162")}},
			"0a 00112233445566778899aabbccddeeff 0000000000000010 01 6162"},
		{"chunk, empty", fragment{Message: Message{Type: TypeChunk, Payload: unhex(t, "00112233445566778899aabbccddeeff 0000000000000000 00")}},
			"0a 00112233445566778899aabbccddeeff 0000000000000000 00"},
		{"outcome", fragment{Message: Message{Type: TypeOutcome, Batch: 5, Payload: bytes.Repeat([]byte{2}, 58)}},
			"0b 0000000000000005 " + strings.Repeat("02", 58)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			if tc.f.Type == TypeData {
				b = appendFragment(nil, tc.f.Batch, tc.f.more, tc.f.Payload)
			} else {
				var err error
				b, err = appendControl(nil, tc.f.Message)
				require.NoError(t, err)
			}
			require.Equal(t, unhex(t, tc.plain), b)
			f, err := parsePlaintext(b)
			require.NoError(t, err)
			require.Equal(t, tc.f, f)
		})
	}
}

func TestAppendControlErrors(t *testing.T) {
	_, err := appendControl(nil, Message{Type: TypeClose, Reason: strings.Repeat("r", MaxReason)})
	require.NoError(t, err, "a reason of MaxReason bytes")
	for _, m := range []Message{
		{Type: TypeClose, Reason: strings.Repeat("r", MaxReason+1)},
		{Type: TypeNack, Reason: "\xff"},
		{Type: TypeData},
		{Type: 0},
		{Type: 12},
		{Type: TypeReady, Kinds: 8, MaxChunk: 1},
		{Type: TypeReady, Kinds: 1},
		{Type: TypeReady, Kinds: 1, MaxChunk: MaxChunkData + 1},
		{Type: TypeInstruction},
		{Type: TypeInstruction, Payload: make([]byte, MaxPlaintext)},
		{Type: TypeChunk, Payload: make([]byte, ChunkHeaderSize-1)},
		{Type: TypeChunk, Payload: append(make([]byte, ChunkHeaderSize-1), 2)},
		{Type: TypeChunk, Payload: make([]byte, ChunkHeaderSize+MaxChunkData+1)},
		{Type: TypeOutcome, Payload: make([]byte, 57)},
		{Type: TypeRefuse},
		{Type: TypeRefuse, Code: 8},
	} {
		b, err := appendControl(nil, m)
		require.Error(t, err, "%+v", m)
		require.Nil(t, b)
	}
}

func TestParsePlaintextStrict(t *testing.T) {
	for _, tc := range []struct{ name, plain string }{
		{"empty", ""},
		{"type 0", "00"},
		{"type 12", "0c"},
		{"ready of 1 byte", "08"},
		{"ready of 5 bytes", "08 01 000001"},
		{"ready of 7 bytes", "08 01 00000001 00"},
		{"ready kind bit 3", "08 09 00000001"},
		{"ready max chunk 0", "08 01 00000000"},
		{"ready max chunk over 65493", "08 01 0000ffd6"},
		{"empty instruction", "09"},
		{"chunk of 24 bytes", "0a 00112233445566778899aabbccddeeff 0000000000000000"},
		{"chunk flags 2", "0a 00112233445566778899aabbccddeeff 0000000000000000 02"},
		{"outcome without batch", "0b 00000000"},
		{"outcome body of 57 bytes", "0b 0000000000000001 " + strings.Repeat("00", 57)},
		{"accept with a byte", "06 00"},
		{"refuse without a code", "07"},
		{"refuse code 0", "07 00"},
		{"refuse code 8", "07 08"},
		{"refuse reason not UTF-8", "07 01 ff"},
		{"type 255", "ff 00"},
		{"data of 9 bytes", "01 0000000000000001"},
		{"data of 1 byte", "01"},
		{"data flags 2", "01 0000000000000001 02 61"},
		{"data flags 0x81", "01 0000000000000001 81"},
		{"ack of 8 bytes", "02 00000000000001"},
		{"ack of 10 bytes", "02 0000000000000001 00"},
		{"ack of 1 byte", "02"},
		{"nack of 9 bytes", "03 0000000000000001"},
		{"nack kind 0", "03 0000000000000001 00"},
		{"nack kind 3", "03 0000000000000001 03"},
		{"nack reason not UTF-8", "03 0000000000000001 01 c3"},
		{"close reason not UTF-8", "04 ff"},
		{"close reason a lone continuation byte", "04 61 80"},
		{"rekey with a byte", "05 00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parsePlaintext(unhex(t, tc.plain))
			require.ErrorIs(t, err, ErrMalformed)
		})
	}
	long := append([]byte{byte(TypeClose)}, strings.Repeat("r", MaxReason+1)...)
	_, err := parsePlaintext(long)
	require.ErrorIs(t, err, ErrMalformed, "reason of MaxReason+1 bytes")
	_, err = parsePlaintext(long[:len(long)-1])
	require.NoError(t, err, "reason of MaxReason bytes")
}

func TestMessageTypeString(t *testing.T) {
	for typ, want := range map[MessageType]string{
		TypeData: "data", TypeAck: "ack", TypeNack: "nack", TypeClose: "close", TypeRekey: "rekey",
		TypeReady: "ready", TypeInstruction: "instruction", TypeChunk: "chunk", TypeOutcome: "outcome",
		0: "MessageType(0)", 200: "MessageType(200)",
	} {
		require.Equal(t, want, typ.String())
	}
}

func data(batch uint64, more bool, payload string) fragment {
	return fragment{Message: Message{Type: TypeData, Batch: batch, Payload: []byte(payload)}, more: more}
}

func TestReassembler(t *testing.T) {
	type step struct {
		f    fragment
		want *Message // nil: no message yet
		err  bool
	}
	msg := func(batch uint64, payload string) *Message {
		return &Message{Type: TypeData, Batch: batch, Payload: []byte(payload)}
	}
	tooLarge := func(batch uint64) *Message { return &Message{Type: TypeData, Batch: batch, TooLarge: true} }
	ack := fragment{Message: Message{Type: TypeAck, Batch: 1}}
	for _, tc := range []struct {
		name  string
		max   int
		steps []step
	}{
		{"one fragment", 10, []step{{f: data(1, false, "abc"), want: msg(1, "abc")}}},
		{"three fragments", 10, []step{
			{f: data(1, true, "ab")}, {f: data(1, true, "")}, {f: data(1, false, "cd"), want: msg(1, "abcd")},
		}},
		{"at the bound", 4, []step{{f: data(1, true, "ab")}, {f: data(1, false, "cd"), want: msg(1, "abcd")}}},
		// Over the bound: read to the last fragment and discarded, then the
		// next message as usual.
		{"over the bound", 4, []step{
			{f: data(1, true, "ab")}, {f: data(1, true, "cde")}, {f: data(1, false, "f"), want: tooLarge(1)},
			{f: data(2, false, "abcd"), want: msg(2, "abcd")},
		}},
		{"one fragment over the bound", 4, []step{{f: data(1, false, "abcde"), want: tooLarge(1)}}},
		{"over the bound, then another batch inside", 4, []step{{f: data(1, true, "abcde")}, {f: data(2, false, "b"), err: true}}},
		{"batches back to back", 10, []step{
			{f: data(1, true, "a")}, {f: data(1, false, "b"), want: msg(1, "ab")},
			{f: ack, want: &ack.Message},
			{f: data(2, false, "c"), want: msg(2, "c")},
			{f: data(1, false, "d"), want: msg(1, "d")},
		}},
		{"interleaved batches", 10, []step{{f: data(1, true, "a")}, {f: data(2, false, "b"), err: true}}},
		{"interleaved, both with more", 10, []step{{f: data(1, true, "a")}, {f: data(2, true, "b"), err: true}}},
		{"ack between fragments", 10, []step{{f: data(1, true, "a")}, {f: ack, err: true}}},
		{"close between fragments", 10, []step{{f: data(1, true, "a")}, {f: fragment{Message: Message{Type: TypeClose}}, err: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reassembler{max: tc.max}
			for i, s := range tc.steps {
				m, ok, err := r.add(s.f)
				if s.err {
					require.ErrorIs(t, err, ErrMalformed, "step %d", i)
					return
				}
				require.NoError(t, err, "step %d", i)
				require.Equal(t, s.want != nil, ok, "step %d", i)
				if s.want != nil {
					require.Equal(t, *s.want, m, "step %d", i)
				}
			}
		})
	}
}

// TestReassemblerOwnership: a payload does not alias the fragment buffers,
// which the channel reuses for the next message.
func TestReassemblerOwnership(t *testing.T) {
	r := reassembler{max: 100}
	buf := []byte("abc")
	m, ok, err := r.add(fragment{Message: Message{Type: TypeData, Batch: 1, Payload: buf}})
	require.NoError(t, err)
	require.True(t, ok)
	copy(buf, "xyz")
	require.Equal(t, []byte("abc"), m.Payload)
	m2, _, err := r.add(data(2, false, "def"))
	require.NoError(t, err)
	require.Equal(t, []byte("abc"), m.Payload)
	require.False(t, bytes.Equal(m.Payload, m2.Payload))
}

// TestReassemblerDiscardBound: a message over the bound is discarded as it
// arrives, but not without end: past maxDiscarded bytes the sender streams
// rather than sends a message, and the channel fails.
func TestReassemblerDiscardBound(t *testing.T) {
	r := reassembler{max: 4}
	chunk := data(1, true, strings.Repeat("x", maxFragment))
	n := 0
	var err error
	for ; err == nil && n <= maxDiscarded/maxFragment+1; n++ {
		_, _, err = r.add(chunk)
	}
	require.ErrorIs(t, err, ErrMalformed)
	require.Equal(t, maxDiscarded/maxFragment+1, n, "fragments taken before the error")
	require.Nil(t, r.buf, "nothing kept")
}

// TestControlPayloadOwned: the payload of an instruction, chunk or outcome
// is a copy, not the (pooled) plaintext buffer Receive decrypts into.
func TestControlPayloadOwned(t *testing.T) {
	for _, plain := range []string{"09 010203", "0a 00112233445566778899aabbccddeeff 0000000000000000 01 61",
		"0b 0000000000000001 " + strings.Repeat("00", 58)} {
		p := unhex(t, plain)
		f, err := parsePlaintext(p)
		require.NoError(t, err)
		want := bytes.Clone(f.Payload)
		for i := range p {
			p[i] = 0xee
		}
		require.Equal(t, want, f.Payload, plain)
	}
}
