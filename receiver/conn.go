package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/influxdata/telegraf/plugins/parsers/influx"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

const (
	// writeTimeout bounds one reply: a sender that stops reading for this
	// long loses its channel (and redelivers what was not acked).
	writeTimeout = 30 * time.Second
	// closeGrace bounds the close message sent when a channel is shut down,
	// so Stop returns promptly even when a peer does not read.
	closeGrace = 500 * time.Millisecond

	// CloseStopping and CloseIdle are close reasons sent to the peer.
	CloseStopping = "listener stopping"
	CloseIdle     = "idle timeout"
)

var errClosing = errors.New("channel closing")

// conn is one accepted connection and, after the handshake, its channel.
//
// Three goroutines use it: the reader (serve), the writer (writeLoop, the
// only caller of Channel.Send and Channel.Close after the handshake), and
// the delivery loop, which queues replies. shutdown may come from any of
// them, from the idle timer or from Stop. The writer runs only while there
// is something to send or the channel is to be closed: an idle channel
// costs one goroutine, not two (docs/BENCHMARKS.md, memory per idle
// channel).
type conn struct {
	nc     net.Conn
	remote string
	ctx    context.Context // canceled by shutdown only, so the reason is set first
	cancel context.CancelFunc

	// Set after the handshake, before the writer starts. The reader alone
	// uses peer (Authorize updates its cache), parser, grant and tags.
	ch     *secure.Channel
	peer   *secure.Peer
	parser *influx.Parser
	grant  grant             // what the policy lets this peer write
	tags   map[string]string // tags to stamp; "" values are removed
	key    string            // the peer's identifier, the key of its byte budget

	heldBytes int64 // of the byte budget, guarded by its mu

	ctl ctlState // control instructions (control.go)

	inflight   atomic.Int64 // data messages received and not yet answered
	lastActive atomic.Int64 // Unix nanoseconds of the last message in or out

	mu      sync.Mutex
	closing bool
	reason  string // close reason, set by the first shutdown
	queue   []outgoing
	opened  bool // the channel is set up: the writer may run
	writing bool // the writer runs

	writerDone chan struct{} // closed once the writer closed the channel
}

// outgoing is a queued reply, or the order to close the channel after the
// replies queued before it.
type outgoing struct {
	msg         secure.Message
	close       bool
	closeReason string
	artifact    *artifactSend // the chunks of an artifact, sent after msg
}

func newConn(nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		nc:         nc,
		remote:     nc.RemoteAddr().String(),
		ctx:        ctx,
		cancel:     cancel,
		writerDone: make(chan struct{}),
	}
}

// shutdown ends the connection: the writer sends a close message with
// reason and closes the transport, which ends the reader's Receive (during
// the handshake, canceling ctx closes it). The write deadline bounds the
// close message, and a reply in progress, by closeGrace. Only the first
// call counts.
func (c *conn) shutdown(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	for _, o := range c.queue {
		if o.artifact != nil {
			o.artifact.f.Close()
		}
	}
	c.closing, c.reason, c.queue = true, reason, nil
	c.cancel()
	_ = c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
	c.startWriterLocked()
}

// open lets the writer run, once the channel is set up.
func (c *conn) open() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opened = true
	c.startWriterLocked()
}

// startWriterLocked starts the writer if it has work and is not running.
func (c *conn) startWriterLocked() {
	if c.opened && !c.writing && (c.closing || len(c.queue) > 0) {
		c.writing = true
		go c.writeLoop()
	}
}

// closeReason returns the reason given to the first shutdown.
func (c *conn) closeReason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

// reply queues an answer to one data message. It is dropped if the
// connection is closing: the sender delivers the message again.
func (c *conn) reply(m secure.Message) {
	// activity first: the idle timer that sees no message in flight must
	// not count the time the message waited for Telegraf as idle time, and
	// clear this answer from the queue
	c.touch()
	c.inflight.Add(-1)
	c.enqueue(outgoing{msg: m})
}

// closeAfterReplies makes the writer close the channel once it has sent
// the replies queued so far.
func (c *conn) closeAfterReplies(reason string) {
	c.enqueue(outgoing{close: true, closeReason: reason})
}

func (c *conn) enqueue(o outgoing) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.queue = append(c.queue, o)
	c.startWriterLocked()
}

// next pops the next queued item. It returns closing once the channel is to
// be closed, and ok false when the queue is empty: the writer then ends.
func (c *conn) next() (o outgoing, closing, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing:
		return o, true, true
	case len(c.queue) == 0:
		c.writing = false
		return o, false, false
	}
	o = c.queue[0]
	c.queue[0] = outgoing{}
	c.queue = c.queue[1:]
	return o, false, true
}

// writeLoop sends the queued replies in order and ends when the queue is
// empty; once the connection is shut down, it closes the channel instead,
// and stays the writer for good.
func (c *conn) writeLoop() {
	for {
		o, closing, ok := c.next()
		switch {
		case closing:
			c.ch.Close(c.closeReason())
			close(c.writerDone)
			return
		case !ok:
			return
		case o.close:
			c.shutdown(o.closeReason)
		case c.send(o.msg) != nil:
			if o.artifact != nil {
				o.artifact.f.Close()
			}
			c.shutdown("")
		case o.artifact != nil && c.sendArtifact(o.artifact) != nil:
			c.shutdown("")
		default:
			c.touch()
		}
	}
}

// send writes one reply within writeTimeout.
func (c *conn) send(m secure.Message) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return errClosing
	}
	// Under mu, so that shutdown's shorter deadline is never overwritten.
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	c.mu.Unlock()
	return c.ch.Send(m)
}

// touch records activity for the idle timeout.
func (c *conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// watchIdle shuts the connection down once it has been idle for d: nothing
// received or sent, and no message awaiting its answer.
func (c *conn) watchIdle(d time.Duration) *time.Timer {
	var t *time.Timer
	assigned := make(chan struct{})
	t = time.AfterFunc(d, func() {
		<-assigned // t is set
		if c.ctx.Err() != nil {
			return
		}
		if c.inflight.Load() > 0 {
			t.Reset(d)
			return
		}
		idle := time.Since(time.Unix(0, c.lastActive.Load()))
		if idle < d {
			t.Reset(d - idle)
			return
		}
		c.shutdown(CloseIdle)
	})
	close(assigned)
	return t
}

// helloGuard rejects at once a connection whose first frame cannot be
// message 1 of the handshake (48 bytes in telegraf-ockam/2): plaintext line
// protocol or an HTTP request would otherwise make the framing wait for
// kilobytes until handshake_timeout.
type helloGuard struct {
	net.Conn
	header  [2]byte
	seen    int
	checked bool
}

// Bounds of the first frame. It holds at least an ephemeral key; anything
// up to maxHello is left to the handshake, which reports a version mismatch
// precisely.
const (
	minHello = 32
	maxHello = 512
)

// errNotHandshake: the first bytes are not the frame of a handshake message.
var errNotHandshake = errors.New("first frame is not a handshake message")

// Read reads from the connection, and fails once the first two bytes are
// in if they are not the length of a handshake message.
func (g *helloGuard) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if g.checked || n == 0 {
		return n, err
	}
	g.seen += copy(g.header[g.seen:], p[:n])
	if g.seen < len(g.header) {
		return n, err
	}
	g.checked = true
	if size := int(g.header[0])<<8 | int(g.header[1]); size < minHello || size > maxHello {
		return 0, fmt.Errorf("%w (length %d, first bytes %q)", errNotHandshake, size, g.header[:])
	}
	return n, err
}

// isEOF reports whether err means the connection ended.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// newParser returns a line protocol parser for one connection.
func newParser() (*influx.Parser, error) {
	p := &influx.Parser{}
	if err := p.Init(); err != nil {
		return nil, err
	}
	return p, nil
}
