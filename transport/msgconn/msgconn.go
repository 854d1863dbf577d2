// Package msgconn turns a carrier of messages (a relay route, an MQTT topic
// pair) into a net.Conn, so that the channel code, which frames Noise
// messages on a byte stream with read and write deadlines, runs unchanged
// over it.
//
// Each Write becomes one or more messages of at most MaxPayload bytes, in
// order; the bytes of received messages are read back in the order they
// were delivered. The carrier keeps the order; it need not keep message
// boundaries, since the stream framing above it carries its own.
package msgconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Send hands one message to the carrier. It may block until abort closes
// (the write deadline passed or the connection closed; the Write then
// returns the matching error whatever Send returned), and must not keep p
// after it returns.
type Send func(p []byte, abort <-chan struct{}) error

// ErrBufferFull is the error of a connection whose reader fell more than
// MaxBuffered bytes behind the carrier: the connection is closed rather
// than stall the carrier, which other connections share.
var ErrBufferFull = errors.New("receive buffer full: the reader fell behind")

// ErrBudgetFull is the error of a connection whose carrier's Budget had no
// room for the bytes it received: the sessions of one carrier together
// buffer at most the budget, whoever opens them.
var ErrBudgetFull = errors.New("receive budget of the carrier exhausted: its sessions' readers fell behind")

// Budget bounds the bytes that many Conns, the sessions of one carrier,
// buffer together unread. It is safe for concurrent use.
type Budget struct {
	mu        sync.Mutex
	max, used int
}

// NewBudget returns a Budget of max bytes.
func NewBudget(max int) *Budget { return &Budget{max: max} }

// DefaultBudget is the budget a listening carrier gives its sessions
// together: a handful of full sessions, whatever their number.
const DefaultBudget = 256 << 20

// Used returns the bytes buffered under b now.
func (b *Budget) Used() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *Budget) reserve(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return false
	}
	b.used += n
	return true
}

func (b *Budget) release(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// Options tune a Conn; the zero value of a field takes its default.
type Options struct {
	// MaxPayload is the largest message Write hands to Send (default
	// 65537: one stream frame of the largest Noise message).
	MaxPayload int
	// MaxBuffered bounds the bytes delivered and not yet read (default
	// 8 MiB). Deliver beyond it closes the connection with ErrBufferFull.
	MaxBuffered int
	// Budget, if set, is shared with the carrier's other sessions: a
	// Deliver for which it has no room fails the connection with
	// ErrBudgetFull.
	Budget *Budget
	// OnClose runs once, at the first Close (not at Fail: the carrier
	// that calls Fail knows already), so the carrier can forget the
	// connection and tell the other end.
	OnClose func()
}

// Defaults of Options.
const (
	DefaultMaxPayload  = 65537
	DefaultMaxBuffered = 8 << 20
)

// Conn is a net.Conn over a message carrier. It is safe for the concurrent
// use net.Conn allows: one reader, writers serialised by the caller or not.
type Conn struct {
	local, remote net.Addr
	send          Send
	opts          Options

	wmu sync.Mutex // one Write at a time, so that messages stay in order

	mu            sync.Mutex
	buf           [][]byte // delivered messages not yet read; buf[0] may be partly read
	buffered      int
	readable      chan struct{} // closed and replaced when buf grows or the state changes
	readDeadline  time.Time
	writeDeadline time.Time
	writeTimer    *time.Timer
	abort         chan struct{} // closed when writeDeadline passes or at Close and Fail
	aborted       bool
	rerr          error // the error reads return once buf is drained
	closed        bool
	onClose       sync.Once
}

// New returns a Conn that hands written bytes to send. The carrier gives it
// the bytes it receives with Deliver and reports the carrier's end with
// Fail.
func New(local, remote net.Addr, send Send, opts Options) *Conn {
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if opts.MaxBuffered <= 0 {
		opts.MaxBuffered = DefaultMaxBuffered
	}
	return &Conn{local: local, remote: remote, send: send, opts: opts,
		readable: make(chan struct{}), abort: make(chan struct{})}
}

// Deliver queues a copy of p for Read. It returns false when the
// connection is closed, or when p would put more than MaxBuffered bytes
// behind the reader: then the connection fails with ErrBufferFull.
func (c *Conn) Deliver(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	c.mu.Lock()
	if c.closed || c.rerr != nil {
		c.mu.Unlock()
		return false
	}
	if c.buffered+len(p) > c.opts.MaxBuffered {
		c.mu.Unlock()
		c.Fail(ErrBufferFull)
		return false
	}
	if c.opts.Budget != nil && !c.opts.Budget.reserve(len(p)) {
		c.mu.Unlock()
		c.Fail(ErrBudgetFull)
		return false
	}
	c.buf = append(c.buf, append([]byte(nil), p...))
	c.buffered += len(p)
	c.wake()
	c.mu.Unlock()
	return true
}

// Fail ends the connection from the carrier's side: reads return the bytes
// already delivered, then err (io.EOF for an orderly end); writes fail at
// once. The first call wins.
func (c *Conn) Fail(err error) {
	if err == nil {
		err = io.EOF
	}
	c.mu.Lock()
	if c.rerr == nil {
		c.rerr = err
		c.wake()
		c.abortWrites()
	}
	c.mu.Unlock()
}

// abortWrites closes abort, once. c.mu is held.
func (c *Conn) abortWrites() {
	if !c.aborted {
		c.aborted = true
		close(c.abort)
	}
}

// wake tells a blocked Read and Write that something changed. c.mu is held.
func (c *Conn) wake() {
	close(c.readable)
	c.readable = make(chan struct{})
}

// Read reads delivered bytes, waiting for some until the read deadline.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	for {
		switch {
		case c.closed:
			c.mu.Unlock()
			return 0, net.ErrClosed
		case len(c.buf) > 0:
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			n := 0
			for n < len(p) && len(c.buf) > 0 {
				k := copy(p[n:], c.buf[0])
				n += k
				if k == len(c.buf[0]) {
					c.buf[0] = nil
					c.buf = c.buf[1:]
				} else {
					c.buf[0] = c.buf[0][k:]
				}
			}
			c.buffered -= n
			c.mu.Unlock()
			if c.opts.Budget != nil {
				c.opts.Budget.release(n)
			}
			return n, nil
		case c.rerr != nil:
			err := c.rerr
			c.mu.Unlock()
			return 0, err
		}
		deadline, wait := c.readDeadline, c.readable
		c.mu.Unlock()
		if err := waitUntil(deadline, wait); err != nil {
			return 0, err
		}
		c.mu.Lock()
	}
}

// Write hands p to the carrier in messages of at most MaxPayload bytes.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for {
		c.mu.Lock()
		err, abort := c.writeErr(), c.abort
		c.mu.Unlock()
		if err != nil || n == len(p) {
			return n, err
		}
		end := min(n+c.opts.MaxPayload, len(p))
		if err := c.send(p[n:end], abort); err != nil {
			c.mu.Lock()
			if werr := c.writeErr(); werr != nil {
				err = werr // the reason the carrier gave up
			} else if isClosed(abort) {
				err = os.ErrDeadlineExceeded // a deadline since moved
			}
			c.mu.Unlock()
			return n, err
		}
		n = end
	}
}

// writeErr is the error a Write returns now, if any. c.mu is held.
func (c *Conn) writeErr() error {
	switch {
	case c.closed:
		return net.ErrClosed
	case c.rerr != nil:
		return &net.OpError{Op: "write", Net: c.remote.Network(), Addr: c.remote, Err: c.rerr}
	case !c.writeDeadline.IsZero() && !time.Now().Before(c.writeDeadline):
		return os.ErrDeadlineExceeded
	}
	return nil
}

// Close closes the connection; a blocked Read returns net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	if c.opts.Budget != nil {
		c.opts.Budget.release(c.buffered)
	}
	c.buf, c.buffered = nil, 0
	c.wake()
	c.abortWrites()
	if c.writeTimer != nil {
		c.writeTimer.Stop()
	}
	c.mu.Unlock()
	if c.opts.OnClose != nil {
		c.onClose.Do(c.opts.OnClose)
	}
	return nil
}

// Buffered returns the number of bytes delivered and not yet read.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buffered
}

// LocalAddr returns the address given to New.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the address given to New.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the deadline of Read, also of one already waiting.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.wake()
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline sets the deadline of Write, also of one under way: a
// Send in progress is aborted when it passes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.rerr != nil {
		return nil
	}
	c.writeDeadline = t
	if c.writeTimer != nil {
		c.writeTimer.Stop()
		c.writeTimer = nil
	}
	if c.aborted { // a past deadline aborted the writes; this one is new
		c.aborted = false
		c.abort = make(chan struct{})
	}
	switch d := time.Until(t); {
	case t.IsZero():
	case d <= 0:
		c.abortWrites()
	default:
		abort := c.abort
		c.writeTimer = time.AfterFunc(d, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.abort == abort {
				c.abortWrites()
			}
		})
	}
	return nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// waitUntil waits for wait to close or deadline to pass.
func waitUntil(deadline time.Time, wait <-chan struct{}) error {
	if deadline.IsZero() {
		<-wait
		return nil
	}
	d := time.Until(deadline)
	if d <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-wait:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// Addr is a net.Addr of a carrier: Net names it ("relay", "mqtt") and Text
// says where (a route, a topic).
type Addr struct {
	Net  string
	Text string
}

// Network returns a.Net.
func (a Addr) Network() string { return a.Net }

// String returns a.Text.
func (a Addr) String() string { return a.Text }
