package relay

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Outbound queue bounds of a connection, and the write deadline of its
// writer. A device's connection that cannot keep up is closed, not waited
// for, since the frames for it come from connections other sessions share;
// for a listener's or a relay's connection, which many sessions share, the
// frame is dropped instead (Server.forward).
const (
	maxQueuedFrames = 1024
	maxQueuedBytes  = 8 << 20
	writeTimeout    = 10 * time.Second
)

// errQueueFull closes a connection whose outbound queue overflowed.
var errQueueFull = errors.New("relay: outbound queue full: the connection is too slow")

// link is one TCP connection carrying frames: a bounded outbound queue that
// one writer goroutine drains with a write deadline. Reading is left to the
// owner (one goroutine). It is safe for concurrent use.
type link struct {
	nc net.Conn // nil until a lazy dial succeeds

	mu       sync.Mutex
	queue    [][]byte
	bytes    int
	room     chan struct{} // closed and replaced when the writer takes the queue
	wake     chan struct{} // capacity 1: the queue is not empty
	err      error         // why the link closed
	done     chan struct{} // closed at close
	closed   bool
	draining bool // closeAfterFlush: no more frames; close once written
}

// newLink starts the writer of nc.
func newLink(nc net.Conn) *link {
	l := &link{nc: nc, room: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
	go l.writer()
	return l
}

// newPendingLink returns a link without a connection yet: frames queue
// until start dials one.
func newPendingLink() *link {
	return &link{room: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// start dials in the writer's goroutine: connected runs there once dial
// succeeded, and dialFailed gets the frames queued if it failed.
func (l *link) start(dial func(done <-chan struct{}) (net.Conn, error), connected func(),
	dialFailed func(queued [][]byte, err error)) {
	go func() {
		nc, err := dial(l.done)
		l.mu.Lock()
		if err == nil && l.closed {
			nc.Close()
			err = l.err
		}
		if err != nil {
			queued := l.queue
			l.closeLocked(err)
			l.mu.Unlock()
			dialFailed(queued, err)
			return
		}
		l.nc = nc
		l.mu.Unlock()
		connected()
		l.writer()
	}()
}

// send queues an encoded frame. With wait nil it never blocks: a full
// queue closes the link with errQueueFull (relays do this). Otherwise it
// waits for room until wait closes, and returns errQueueFull then
// (endpoints do this: the sender feels the back pressure).
func (l *link) send(b []byte, wait <-chan struct{}) error {
	for {
		l.mu.Lock()
		if l.closed || l.draining {
			err := l.err
			if err == nil {
				err = net.ErrClosed
			}
			l.mu.Unlock()
			return err
		}
		if len(l.queue) < maxQueuedFrames && l.bytes+len(b) <= maxQueuedBytes {
			l.queue = append(l.queue, b)
			l.bytes += len(b)
			l.mu.Unlock()
			select {
			case l.wake <- struct{}{}:
			default:
			}
			return nil
		}
		room := l.room
		l.mu.Unlock()
		if wait == nil {
			l.close(errQueueFull)
			return errQueueFull
		}
		select {
		case <-room:
		case <-l.done:
		case <-wait:
			return errQueueFull
		}
	}
}

// offer queues an encoded frame if the queue has room, and reports whether
// it did. A full queue drops the frame and leaves the link open: for
// frames whose loss costs one session at most (a frame forwarded to a
// listener or a relay that many sessions share; a PING or a PONG), where
// closing the link would cost every session on it.
func (l *link) offer(b []byte) bool {
	l.mu.Lock()
	if l.closed || l.draining || len(l.queue) >= maxQueuedFrames || l.bytes+len(b) > maxQueuedBytes {
		l.mu.Unlock()
		return false
	}
	l.queue = append(l.queue, b)
	l.bytes += len(b)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

// writer writes the queued frames until the link closes.
func (l *link) writer() {
	for {
		select {
		case <-l.done:
			return
		case <-l.wake:
		}
		l.mu.Lock()
		bufs := net.Buffers(l.queue)
		l.queue, l.bytes = nil, 0
		close(l.room)
		l.room = make(chan struct{})
		draining := l.draining
		l.mu.Unlock()
		if len(bufs) > 0 {
			_ = l.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := bufs.WriteTo(l.nc); err != nil {
				l.close(err)
				return
			}
		}
		if draining { // the last frames are written (no more are queued since)
			l.close(nil)
			return
		}
	}
}

// closeAfterFlush closes the link once the frames queued are written (each
// write bounded by writeTimeout): an endpoint's last frames, such as the
// channel's close message, still leave.
func (l *link) closeAfterFlush() {
	l.mu.Lock()
	if l.closed || l.draining {
		l.mu.Unlock()
		return
	}
	l.draining = true
	dialing := l.nc == nil
	l.mu.Unlock()
	if dialing {
		l.close(nil)
		return
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// close closes the connection, once; err says why (nil: closed locally).
func (l *link) close(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked(err)
}

// closeLocked is close with l.mu held.
func (l *link) closeLocked(err error) {
	if l.closed {
		return
	}
	if err == nil {
		err = net.ErrClosed
	}
	l.closed, l.err = true, err
	l.queue, l.bytes = nil, 0
	close(l.done)
	if l.nc != nil {
		_ = l.nc.Close()
	}
}

// closeErr returns why the link closed, or nil while it is open.
func (l *link) closeErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
