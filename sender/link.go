package sender

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// link is one open channel to the listener and the goroutine that reads its
// acks and nacks. Once it ended (done closed) it is never used again: a
// channel whose state is half known is closed, not repaired.
type link struct {
	ch       *secure.Channel
	conn     net.Conn
	number   uint64             // 1 for the Sender's first channel (Status.Channel)
	own      *secure.Credential // the device's, presented in the handshake
	peer     secure.Identifier
	peerCred *secure.Credential // the listener's, verified in the handshake
	verifier *secure.Verifier   // its revocation lists change while the link lives

	mu      sync.Mutex
	waiters map[uint64]chan<- secure.Message // batch → where its answer goes

	// control is the control agent's session on this channel, nil without
	// one: the reader hands it instructions (docs/PROTOCOL.md, 17.5).
	control ControlSession

	once      sync.Once
	closeOnce sync.Once     // the close message is sent once
	done      chan struct{} // closed when the link ended
	err       error         // why; set before done is closed
	local     bool          // ended by shutdown
}

// newLink starts the reader of ch; wg counts it until it returns. The
// listener's credential is checked against v's revocation lists before
// every answer counts.
//
// With a control agent, its session on the channel is created before the
// reader starts; the caller Begins it.
func newLink(ch *secure.Channel, conn net.Conn, number uint64, own *secure.Credential, v *secure.Verifier,
	ctl Control, timeout time.Duration, log logger.Logger, wg *sync.WaitGroup) *link {
	l := &link{
		ch:       ch,
		conn:     conn,
		number:   number,
		own:      own,
		peer:     ch.Peer().Identifier,
		peerCred: ch.Peer().Credential,
		verifier: v,
		waiters:  make(map[uint64]chan<- secure.Message),
		done:     make(chan struct{}),
	}
	if ctl != nil {
		l.control = ctl.NewSession(controlLink{l, timeout})
		wg.Add(1)
		go func() {
			// the session ends with the channel; Close waits for an
			// instruction being applied
			defer wg.Done()
			<-l.done
			l.control.Stop()
		}()
	}
	go func() {
		defer wg.Done()
		l.read(log)
	}()
	return l
}

// controlLink is the link as the control agent speaks on it.
type controlLink struct {
	l       *link
	timeout time.Duration
}

func (c controlLink) Send(m secure.Message) error { return c.l.send(m, c.timeout) }
func (c controlLink) Expect(batch uint64, w chan<- secure.Message) {
	c.l.expect(batch, w)
}

// read routes acks and nacks to their waiters until the channel fails.
func (l *link) read(log logger.Logger) {
	for {
		m, err := l.ch.Receive()
		if err != nil {
			l.fail(err)
			return
		}
		switch {
		case m.Type == secure.TypeAck || m.Type == secure.TypeNack:
		case m.Type == secure.TypeInstruction && l.control != nil:
			// checked by the agent, whoever relayed it
			l.control.Offer(m.Payload)
			continue
		case m.Type == secure.TypeChunk && l.control != nil:
			// an artifact's chunks, to the agent's staging (or dropped)
			l.control.OfferChunk(m.Payload)
			continue
		default:
			l.fail(fmt.Errorf("unexpected %v message from the listener", m.Type))
			return
		}
		// An ack from a listener revoked since the handshake does not
		// count: the batch stays unanswered and is sent again.
		if err := l.checkPeer(time.Now()); err != nil {
			l.fail(err)
			return
		}
		l.mu.Lock()
		w, ok := l.waiters[m.Batch]
		delete(l.waiters, m.Batch)
		l.mu.Unlock()
		if !ok {
			log.Debugf("Listener %s answered batch %d, which is not waiting", l.peer.Short(), m.Batch)
			continue
		}
		w <- m // buffered for every message of its Write
	}
}

// checkPeer checks the listener's credential, verified in the handshake,
// against the current revocation lists and its expiry; it is cheap and
// safe for concurrent use.
func (l *link) checkPeer(now time.Time) error {
	if err := l.verifier.CheckCurrent(l.peerCred, now); err != nil {
		return fmt.Errorf("listener %s is no longer trusted, channel closed: %w", l.peer.Short(), err)
	}
	return nil
}

// expect registers where the answer to batch goes; call it before sending
// the batch.
func (l *link) expect(batch uint64, w chan<- secure.Message) {
	l.mu.Lock()
	l.waiters[batch] = w
	l.mu.Unlock()
}

// send writes m within timeout. A failed or late write leaves the stream in
// an unknown state, so it ends the link.
func (l *link) send(m secure.Message, timeout time.Duration) error {
	if l.ended() {
		return l.cause()
	}
	_ = l.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := l.ch.Send(m); err != nil {
		l.fail(err)
		return err
	}
	return nil
}

// shutdown ends the link and closes the channel, telling the listener why
// (best effort, within timeout). Any goroutine may call it, any number of
// times, also while others send: the dialer (on Close, or when its context
// ends mid-dial), Sender.Close, and every Send that timed out. Only the
// first call closes the channel; the others return at once. Channel.Close
// sends no close message while a Send is in progress, and closing the
// transport ends that Send, which then fails.
func (l *link) shutdown(reason string, timeout time.Duration) {
	l.end(errors.New(reason), true)
	l.closeOnce.Do(func() {
		_ = l.conn.SetWriteDeadline(time.Now().Add(timeout))
		_ = l.ch.Close(reason)
	})
}

// fail ends the link after an error, then closes the connection, which
// unblocks a concurrent send and the reader at once. The first cause is
// kept: the reader's error on the closed connection does not replace it.
func (l *link) fail(err error) {
	l.end(err, false)
	_ = l.conn.Close()
}

func (l *link) end(err error, local bool) {
	l.once.Do(func() {
		l.err, l.local = err, local
		close(l.done)
	})
}

// ended reports whether the link ended.
func (l *link) ended() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// cause returns why the link ended; call it after done is closed.
func (l *link) cause() error {
	<-l.done
	return l.err
}

// closedLocally reports whether we ended the link (a timeout, an expired
// credential, Close) rather than the listener or the network.
func (l *link) closedLocally() bool {
	<-l.done
	return l.local
}
