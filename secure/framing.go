package secure

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// MaxNoiseMessage is the largest Noise message, handshake or transport, in
// bytes. The Noise specification fixes it; flynn/noise does not enforce it
// (a 65535-byte payload makes a 65567-byte message), so the framing does.
const MaxNoiseMessage = 65535

// Transport carries whole Noise messages, in order, between the two ends of
// a channel: over a byte stream (NewStreamTransport) or any carrier that
// keeps message boundaries (a relay route, an MQTT topic).
type Transport interface {
	// WriteMessage sends one message of 1 to MaxNoiseMessage bytes. It is
	// not called concurrently.
	WriteMessage(msg []byte) error
	// ReadMessage returns the next message, valid until the next call. It
	// is not called concurrently.
	ReadMessage() ([]byte, error)
	// Close closes the carrier; a blocked ReadMessage returns an error.
	Close() error
}

// Stream framing (docs/PROTOCOL.md, "Framing"):
//
//	+----------------+---------------------------+
//	| length u16 BE  | Noise message (length B)  |
//	+----------------+---------------------------+
//
// length is 1..65535; a zero length is a protocol error.
const frameHeaderSize = 2

// streamTransport frames Noise messages on a byte stream.
//
// A listener holds one per channel, most of them idle, so a transport that
// waits for its next frame holds as little as it can: a small read buffer,
// and a frame larger than that in a pooled buffer, which goes back to the
// pool at the next ReadMessage (docs/BENCHMARKS.md, memory per idle
// channel).
type streamTransport struct {
	rwc io.ReadWriteCloser
	r   *bufio.Reader

	wmu   sync.Mutex
	wbuf  []byte
	large *[MaxNoiseMessage]byte // the frame last returned, if it did not fit in r
	// rerr is a read error inside a frame: the stream is out of step, so
	// every later ReadMessage returns it rather than read a length from the
	// middle of a frame. An error between frames is not kept.
	rerr error
}

// readBufferSize is the read buffer of a stream transport. A frame up to
// its size is returned from it without a copy: every message but data
// fragments (handshake messages are under 512 bytes with small credentials).
// Larger frames are read into a pooled buffer.
const readBufferSize = 512

// largeFrames holds the buffers of frames larger than readBufferSize.
var largeFrames = sync.Pool{New: func() any { return new([MaxNoiseMessage]byte) }}

// NewStreamTransport returns a Transport that frames messages on rwc with a
// two-byte big-endian length prefix.
func NewStreamTransport(rwc io.ReadWriteCloser) Transport {
	return &streamTransport{rwc: rwc, r: bufio.NewReaderSize(rwc, readBufferSize)}
}

// WriteMessage writes one frame with a single Write call.
func (t *streamTransport) WriteMessage(msg []byte) error {
	if len(msg) == 0 || len(msg) > MaxNoiseMessage {
		return fmt.Errorf("secure: message of %d bytes, want 1 to %d", len(msg), MaxNoiseMessage)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.wbuf = binary.BigEndian.AppendUint16(t.wbuf[:0], uint16(len(msg)))
	t.wbuf = append(t.wbuf, msg...)
	_, err := t.rwc.Write(t.wbuf)
	return err
}

// ReadMessage reads one frame. A stream that ends between frames returns
// io.EOF; one that ends inside a frame returns io.ErrUnexpectedEOF. An error
// inside a frame (a read deadline, say) is returned by every later call.
func (t *streamTransport) ReadMessage() ([]byte, error) {
	if t.large != nil { // the caller is done with the previous frame
		largeFrames.Put(t.large)
		t.large = nil
	}
	if t.rerr != nil {
		return nil, t.rerr
	}
	var hdr [frameHeaderSize]byte
	if k, err := io.ReadFull(t.r, hdr[:]); err != nil {
		if k > 0 {
			t.rerr = err
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 {
		return nil, fmt.Errorf("%w: zero-length frame", ErrMalformed)
	}
	var msg []byte
	var err error
	if n <= readBufferSize {
		// valid until the next read from t.r, that is the next call
		if msg, err = t.r.Peek(n); err == nil {
			_, err = t.r.Discard(n)
		}
	} else {
		t.large = largeFrames.Get().(*[MaxNoiseMessage]byte)
		msg = t.large[:n]
		_, err = io.ReadFull(t.r, msg)
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		t.rerr = err
		return nil, err
	}
	return msg, nil
}

// Close closes the stream.
func (t *streamTransport) Close() error { return t.rwc.Close() }
