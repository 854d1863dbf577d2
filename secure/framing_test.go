package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rwc makes an io.ReadWriteCloser of a reader and a writer, counting
// writes and closes.
type rwc struct {
	io.Reader
	w      bytes.Buffer
	writes int
	closed bool
}

func (c *rwc) Write(p []byte) (int, error) { c.writes++; return c.w.Write(p) }
func (c *rwc) Close() error                { c.closed = true; return nil }

// frame encodes one frame: a u16 length and msg.
func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
}

// pattern returns n bytes that differ from one message to the next.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ seed
	}
	return b
}

func TestStreamTransportWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		ok   bool
	}{
		{"0 bytes", 0, false},
		{"1 byte", 1, true},
		{"MaxNoiseMessage-1", MaxNoiseMessage - 1, true},
		{"MaxNoiseMessage", MaxNoiseMessage, true},
		{"MaxNoiseMessage+1", MaxNoiseMessage + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &rwc{Reader: bytes.NewReader(nil)}
			msg := pattern(tc.n, 7)
			err := NewStreamTransport(c).WriteMessage(msg)
			if !tc.ok {
				require.Error(t, err)
				require.Zero(t, c.writes, "nothing written")
				return
			}
			require.NoError(t, err)
			require.Equal(t, 1, c.writes, "one Write per frame")
			require.Equal(t, frame(msg), c.w.Bytes())
		})
	}
}

// readAll reads messages until an error and returns them and the error.
func readAll(t Transport) ([][]byte, error) {
	var out [][]byte
	for {
		m, err := t.ReadMessage()
		if err != nil {
			return out, err
		}
		out = append(out, bytes.Clone(m))
	}
}

func TestStreamTransportRead(t *testing.T) {
	var msgs [][]byte
	var stream []byte
	for i, n := range []int{1, 2, 4094, 4095, 4096, 4097, MaxNoiseMessage - 1, MaxNoiseMessage, 3} {
		msgs = append(msgs, pattern(n, byte(i)))
		stream = append(stream, frame(msgs[i])...)
	}
	for name, r := range map[string]func() io.Reader{
		"plain":        func() io.Reader { return bytes.NewReader(stream) },
		"one byte":     func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
		"half":         func() io.Reader { return iotest.HalfReader(bytes.NewReader(stream)) },
		"data and EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(stream)) },
		"half, data and EOF": func() io.Reader {
			return iotest.DataErrReader(iotest.HalfReader(bytes.NewReader(stream)))
		},
	} {
		t.Run(name, func(t *testing.T) {
			tr := NewStreamTransport(&rwc{Reader: r()})
			got, err := readAll(tr)
			require.ErrorIs(t, err, io.EOF)
			require.Equal(t, msgs, got)
			_, err = tr.ReadMessage()
			require.ErrorIs(t, err, io.EOF)
		})
	}
}

func TestStreamTransportReadErrors(t *testing.T) {
	body := pattern(300, 1)
	for _, tc := range []struct {
		name   string
		stream []byte
		n      int // whole messages before the error
		want   error
	}{
		{"empty", nil, 0, io.EOF},
		{"between frames", frame(body), 1, io.EOF},
		{"one header byte", []byte{1}, 0, io.ErrUnexpectedEOF},
		{"header only", []byte{1, 44}, 0, io.ErrUnexpectedEOF},
		{"body cut short", frame(body)[:100], 0, io.ErrUnexpectedEOF},
		{"body one byte short", frame(body)[:301], 0, io.ErrUnexpectedEOF},
		{"second frame cut", append(frame(body), frame(body)[:5]...), 1, io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0, 1, 2}, 0, ErrMalformed},
		{"zero length after a frame", append(frame(body), 0, 0), 1, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(NewStreamTransport(&rwc{Reader: iotest.HalfReader(bytes.NewReader(tc.stream))}))
			require.ErrorIs(t, err, tc.want)
			require.Len(t, got, tc.n)
		})
	}
}

// scriptReader returns one step per Read: its bytes, then its error.
type scriptReader []struct {
	b   []byte
	err error
}

func (s *scriptReader) Read(p []byte) (int, error) {
	if len(*s) == 0 {
		return 0, io.EOF
	}
	step := &(*s)[0]
	n := copy(p, step.b)
	step.b = step.b[n:]
	if len(step.b) > 0 {
		return n, nil
	}
	err := step.err
	*s = (*s)[1:]
	return n, err
}

// TestStreamTransportTimeout: a read error between frames leaves the
// stream in step, so a later call may go on; one inside a frame does not,
// so every later call returns it again instead of reading the middle of a
// frame as a length.
func TestStreamTransportTimeout(t *testing.T) {
	first, second := frame(pattern(10, 1)), frame(pattern(5000, 2))

	t.Run("iotest.TimeoutReader inside a frame", func(t *testing.T) {
		// The first Read fills bufio's 4096 bytes; the body of the second
		// frame needs another Read, which times out.
		tr := NewStreamTransport(&rwc{Reader: iotest.TimeoutReader(bytes.NewReader(append(first, second...)))})
		m, err := tr.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, pattern(10, 1), m)
		for range 3 {
			_, err = tr.ReadMessage()
			require.ErrorIs(t, err, iotest.ErrTimeout)
		}
	})
	t.Run("inside a header", func(t *testing.T) {
		tr := NewStreamTransport(&rwc{Reader: &scriptReader{
			{append(bytes.Clone(first), second[0]), nil}, {nil, iotest.ErrTimeout}, {second[1:], nil},
		}})
		_, err := tr.ReadMessage()
		require.NoError(t, err)
		for range 3 {
			_, err = tr.ReadMessage()
			require.ErrorIs(t, err, iotest.ErrTimeout)
		}
	})
	t.Run("between frames", func(t *testing.T) {
		tr := NewStreamTransport(&rwc{Reader: &scriptReader{
			{first, nil}, {nil, iotest.ErrTimeout}, {second, nil},
		}})
		_, err := tr.ReadMessage()
		require.NoError(t, err)
		_, err = tr.ReadMessage()
		require.ErrorIs(t, err, iotest.ErrTimeout)
		m, err := tr.ReadMessage()
		require.NoError(t, err, "nothing of the frame was consumed")
		require.Equal(t, pattern(5000, 2), m)
	})
}

func TestStreamTransportPipe(t *testing.T) {
	a, b := net.Pipe()
	ta, tb := NewStreamTransport(a), NewStreamTransport(b)
	t.Cleanup(func() { ta.Close(); tb.Close() })
	msgs := [][]byte{pattern(1, 1), pattern(MaxNoiseMessage, 2), pattern(77, 3)}
	var wg sync.WaitGroup
	// Writers from several goroutines: each frame stays whole.
	for _, m := range msgs {
		wg.Go(func() { assert.NoError(t, ta.WriteMessage(m)) })
	}
	got := map[int][]byte{}
	for range msgs {
		m, err := tb.ReadMessage()
		require.NoError(t, err)
		got[len(m)] = bytes.Clone(m)
	}
	wg.Wait()
	for _, m := range msgs {
		require.Equal(t, m, got[len(m)])
	}

	require.NoError(t, ta.Close())
	_, err := tb.ReadMessage()
	require.ErrorIs(t, err, io.EOF)
	require.True(t, errors.Is(ta.WriteMessage([]byte{1}), io.ErrClosedPipe))
}
