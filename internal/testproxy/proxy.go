// Package testproxy is a TCP proxy for tests that attack or break the path
// between a device and a listener. It forwards, one frame at a time, the
// stream framing of docs/PROTOCOL.md ("Framing on byte streams": a u16
// big-endian length, then that many bytes), so that a test can flip a byte
// of frame K, drop, duplicate or inject frames, record what went by, and
// cut every connection or refuse new ones for a while. Both sides are real
// TCP connections. StartRaw forwards any other protocol (relay frames, MQTT)
// in the chunks it reads, for tests that only record or cut.
package testproxy

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
)

// Direction is the way a frame travels.
type Direction int

const (
	// ToTarget: from the client that connected to the proxy (a device) to
	// the target (a listener).
	ToTarget Direction = iota
	// ToClient: from the target back to the client.
	ToClient
)

func (d Direction) String() string {
	if d == ToTarget {
		return "to target"
	}
	return "to client"
}

// Tamper decides what the proxy writes in place of one frame. index counts
// the frames read in that direction of the connection, from 0 (for a
// device: frame 0 to the target is handshake message 1, frame 1 is message
// 3, frame 2 the first transport message). frame is the whole frame, length
// prefix included, and belongs to the Tamper. The frames returned are
// written back to back, as they are (a length prefix that no longer matches
// is written as it is); none drops the frame. A Tamper is called from one
// goroutine per direction of each connection.
type Tamper func(dir Direction, index int, frame []byte) [][]byte

// Flip returns a Tamper that flips bit (pos mod 8) of byte pos of frame
// index in direction dir, length prefix included (pos 0 and 1 are the
// length), and forwards every other frame untouched.
func Flip(dir Direction, index, pos int) Tamper {
	return func(d Direction, i int, frame []byte) [][]byte {
		if d == dir && i == index && pos < len(frame) {
			frame[pos] ^= 1 << (pos % 8)
		}
		return [][]byte{frame}
	}
}

// Proxy accepts connections on a loopback port and forwards each to the
// target through a new connection.
type Proxy struct {
	target string
	ln     net.Listener
	raw    bool // forward chunks as read, not u16 frames

	mu     sync.Mutex
	tamper Tamper
	down   bool
	conns  []*Conn
	wg     sync.WaitGroup
}

// Start listens on 127.0.0.1 and forwards to target (host:port). The proxy
// is closed, and its goroutines waited for, when the test ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testproxy: %v", err)
	}
	p := &Proxy{target: target, ln: ln}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// StartRaw is Start for a protocol other than the stream framing: each
// "frame" is a chunk as one read returned it, so Frames records the bytes
// in order (Bytes joins them) and a Tamper sees arbitrary chunks.
func StartRaw(t testing.TB, target string) *Proxy {
	t.Helper()
	p := Start(t, target)
	p.mu.Lock()
	p.raw = true
	p.mu.Unlock()
	return p
}

// Addr returns the host:port clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTamper sets the Tamper of the connections accepted from now on; nil
// forwards every frame untouched.
func (p *Proxy) SetTamper(f Tamper) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}

// SetDown cuts the path (true) or restores it (false). While it is cut, the
// proxy closes every connection it accepts at once, without connecting to
// the target. Cut ends the connections already open.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// Cut closes every open connection, both sides, and returns how many there
// were.
func (p *Proxy) Cut() int {
	p.mu.Lock()
	conns := slices.Clone(p.conns)
	p.mu.Unlock()
	n := 0
	for _, c := range conns {
		if c.close() {
			n++
		}
	}
	return n
}

// Conns returns every connection forwarded so far, in the order accepted.
func (p *Proxy) Conns() []*Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.conns)
}

// Close stops accepting, closes every connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down, tamper, raw := p.down, p.tamper, p.raw
		p.mu.Unlock()
		if down {
			client.Close()
			continue
		}
		target, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		c := &Conn{client: client, target: target, done: make(chan struct{}), raw: raw}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			c.run(tamper)
		}()
	}
}

// Conn is one forwarded connection.
type Conn struct {
	client, target net.Conn
	done           chan struct{} // closed when both directions ended
	raw            bool

	mu     sync.Mutex
	frames [2][][]byte // the frames read, by direction, before tampering
	closed bool
}

// Frames returns copies of the frames read from the given direction so
// far, as they arrived (length prefix included, before any tampering).
func (c *Conn) Frames(dir Direction) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([][]byte, len(c.frames[dir]))
	for i, f := range c.frames[dir] {
		out[i] = slices.Clone(f)
	}
	return out
}

// Bytes returns everything read from the given direction so far, joined.
func (c *Conn) Bytes(dir Direction) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b []byte
	for _, f := range c.frames[dir] {
		b = append(b, f...)
	}
	return b
}

// Done is closed once both directions of the connection ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// close closes both sides; it reports whether they were still open.
func (c *Conn) close() bool {
	c.mu.Lock()
	was := !c.closed
	c.closed = true
	c.mu.Unlock()
	c.client.Close()
	c.target.Close()
	return was
}

func (c *Conn) run(tamper Tamper) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.forward(ToTarget, c.client, c.target, tamper)
	}()
	go func() {
		defer wg.Done()
		c.forward(ToClient, c.target, c.client, tamper)
	}()
	wg.Wait()
	c.close()
	close(c.done)
}

// forward copies frames from src to dst. When src ends cleanly between
// frames, or inside one (what arrived of it is written), dst's write side
// is closed, so a half-close reaches the other end; any other error closes
// both sides.
func (c *Conn) forward(dir Direction, src, dst net.Conn, tamper Tamper) {
	read := readFrame
	if c.raw {
		read = readChunk
	}
	for index := 0; ; index++ {
		frame, err := read(src)
		if len(frame) > 0 && (err == nil) {
			c.mu.Lock()
			c.frames[dir] = append(c.frames[dir], slices.Clone(frame))
			c.mu.Unlock()
			out := [][]byte{frame}
			if tamper != nil {
				out = tamper(dir, index, frame)
			}
			for _, f := range out {
				if _, werr := dst.Write(f); werr != nil {
					c.close()
					return
				}
			}
			continue
		}
		if len(frame) > 0 { // the stream ended inside a frame: pass on what came
			_, _ = dst.Write(frame)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
				return
			}
		}
		c.close()
		return
	}
}

// readChunk reads what one Read returns, up to 32 KiB.
func readChunk(r io.Reader) ([]byte, error) {
	buf := make([]byte, 32<<10)
	n, err := r.Read(buf)
	if n > 0 {
		return buf[:n], nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return nil, err
}

// readFrame reads one frame, length prefix included. At the end of the
// stream it returns what it read with io.EOF (nothing read) or
// io.ErrUnexpectedEOF (part of a frame).
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		return hdr[:n], err
	}
	frame := make([]byte, 2+int(binary.BigEndian.Uint16(hdr[:])))
	copy(frame, hdr[:])
	n, err := io.ReadFull(r, frame[2:])
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return frame[:2+n], err
	}
	return frame, nil
}
