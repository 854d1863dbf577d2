package secure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// ErrDecrypt: a transport message failed authentication. It is opaque on
// purpose; the channel is unusable after it and the caller closes it.
var ErrDecrypt = errors.New("secure: message authentication failed")

// ErrClosed is returned by Receive when the peer closed the channel; the
// peer's reason is in the wrapping error's text.
var ErrClosed = errors.New("secure: channel closed by peer")

// Channel is an established, mutually authenticated channel over a
// Transport. Send may be called from several goroutines; Receive from one.
type Channel struct {
	t       Transport
	session *Session

	sendMu  sync.Mutex
	sendBuf []byte
	sendErr error // first write error: the nonce moved on, so every later Send fails

	reasm  reassembler
	failed error // first receive error, returned on every later call
}

// plaintexts holds the buffers Receive decrypts into. A fragment is copied
// out at once (reassembler.add), so a channel waiting for its next message
// holds no buffer: a listener has thousands of idle ones (docs/BENCHMARKS.md,
// memory per idle channel).
var plaintexts = sync.Pool{New: func() any { return new([MaxPlaintext]byte) }}

// DefaultHandshakeTimeout bounds a handshake whose context has no deadline.
const DefaultHandshakeTimeout = 10 * time.Second

// Dial runs the initiator's handshake over t. ctx bounds the handshake (if
// it has no deadline, DefaultHandshakeTimeout does): when it ends first, t
// is closed. On error t is closed.
func Dial(ctx context.Context, t Transport, cfg HandshakeConfig) (*Channel, error) {
	return runHandshake(ctx, t, cfg.MaxMessageSize, func() (*Session, error) {
		i, err := NewInitiator(cfg)
		if err != nil {
			return nil, err
		}
		msg1, err := i.Start()
		if err != nil {
			return nil, err
		}
		if err := t.WriteMessage(msg1); err != nil {
			return nil, fmt.Errorf("send message 1: %w", err)
		}
		msg2, err := t.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("read message 2: %w", err)
		}
		msg3, s, err := i.Finish(msg2)
		if err != nil {
			return nil, err
		}
		if err := t.WriteMessage(msg3); err != nil {
			return nil, fmt.Errorf("send message 3: %w", err)
		}
		return s, awaitAccept(t, s)
	})
}

// awaitAccept reads the listener's first transport message: accept, or a
// refuse that Dial returns as a *RefusedError.
func awaitAccept(t Transport, s *Session) error {
	ct, err := t.ReadMessage()
	if err != nil {
		return fmt.Errorf("read accept: %w", err)
	}
	p, err := s.open(nil, ct, time.Now())
	if err != nil {
		return err
	}
	f, err := parsePlaintext(p)
	switch {
	case err != nil:
		return err
	case f.Type == TypeAccept:
		return nil
	case f.Type == TypeRefuse:
		return &RefusedError{Listener: s.peer.Identifier, Code: f.Code, Reason: f.Reason}
	}
	return fmt.Errorf("%w: %v message before accept", ErrMalformed, f.Type)
}

// Accept runs the responder's handshake over t, like Dial.
func Accept(ctx context.Context, t Transport, cfg HandshakeConfig) (*Channel, error) {
	return runHandshake(ctx, t, cfg.MaxMessageSize, func() (*Session, error) {
		r, err := NewResponder(cfg)
		if err != nil {
			return nil, err
		}
		msg1, err := t.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("read message 1: %w", err)
		}
		msg2, err := r.Respond(msg1)
		if err != nil {
			return nil, err
		}
		if err := t.WriteMessage(msg2); err != nil {
			return nil, fmt.Errorf("send message 2: %w", err)
		}
		msg3, err := t.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("read message 3: %w", err)
		}
		s, err := r.Finish(msg3)
		if err != nil {
			// The initiator proved its static key: tell it why (best
			// effort, runHandshake closes t).
			if refuse, rerr := r.Refuse(RefusalCodeOf(err), ""); rerr == nil {
				_ = t.WriteMessage(refuse)
			}
			return nil, err
		}
		if cfg.Admit != nil {
			if err := cfg.Admit(s.peer); err != nil {
				code := RefusedUnauthorized
				if re, ok := errors.AsType[*RefusalError](err); ok {
					code = re.Code
				}
				return nil, refuseSession(t, s, code, err)
			}
		}
		return s, sendControl(t, s, Message{Type: TypeAccept})
	})
}

// refuseSession sends a refuse on an established session and returns err
// wrapped with the peer's identity.
func refuseSession(t Transport, s *Session, code RefusalCode, err error) error {
	_ = sendControl(t, s, Message{Type: TypeRefuse, Code: code})
	return &PeerError{Identifier: s.peer.Identifier, Err: err}
}

// sendControl seals and writes one control message on a session that no
// Channel holds yet.
func sendControl(t Transport, s *Session, m Message) error {
	p, err := appendControl(nil, m)
	if err != nil {
		return err
	}
	ct, err := s.seal(nil, p)
	if err != nil {
		return err
	}
	if err := t.WriteMessage(ct); err != nil {
		return fmt.Errorf("send %v: %w", m.Type, err)
	}
	return nil
}

// runHandshake runs steps with t closed if ctx ends first.
func runHandshake(ctx context.Context, t Transport, maxMessage int, steps func() (*Session, error)) (*Channel, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHandshakeTimeout)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() { t.Close() })
	s, err := steps()
	if !stop() {
		// ctx ended and closed t: whatever steps returned, it is late.
		if err == nil {
			err = errors.New("closed")
		}
		return nil, fmt.Errorf("handshake: %w (%v)", context.Cause(ctx), err)
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return &Channel{t: t, session: s, reasm: reassembler{max: cmp.Or(maxMessage, DefaultMaxMessageSize)}}, nil
}

// Peer returns the verified peer of the channel.
func (c *Channel) Peer() *Peer { return c.session.peer }

// ChannelBinding returns the handshake hash, equal on both ends.
func (c *Channel) ChannelBinding() []byte { return c.session.ChannelBinding() }

// Send seals and writes m, splitting a data payload into fragments.
func (c *Channel) Send(m Message) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if m.Type != TypeData {
		p, err := appendControl(nil, m)
		if err != nil {
			return err
		}
		return c.writeLocked(p)
	}
	payload := m.Payload
	for {
		n := min(len(payload), maxFragment)
		more := n < len(payload)
		if err := c.writeLocked(appendFragment(nil, m.Batch, more, payload[:n])); err != nil {
			return err
		}
		if payload = payload[n:]; !more {
			return nil
		}
	}
}

// writeLocked rekeys when a soft limit passed, then seals and writes one
// plaintext.
func (c *Channel) writeLocked(plaintext []byte) error {
	now := time.Now()
	if c.session.needRekey(now) {
		if err := c.sealAndWrite([]byte{byte(TypeRekey)}); err != nil {
			return err
		}
		c.session.rekeySend(now)
	}
	return c.sealAndWrite(plaintext)
}

// sealAndWrite seals and writes one plaintext. A failure is sticky: the
// sealed message consumed a nonce the peer will never see, so nothing sent
// after it could be opened.
func (c *Channel) sealAndWrite(plaintext []byte) error {
	if c.sendErr != nil {
		return c.sendErr
	}
	var err error
	c.sendBuf, err = c.session.seal(c.sendBuf[:0], plaintext)
	if err == nil {
		err = c.t.WriteMessage(c.sendBuf)
	}
	if err != nil {
		c.sendErr = fmt.Errorf("secure: channel unusable after a failed send: %w", err)
	}
	return err
}

// Receive returns the next whole message. Rekey messages are handled
// inside. A data payload is owned by the caller. After any error (a failed
// authentication, a malformed message, the peer's close) the channel is
// unusable and Receive keeps returning that error; the caller closes it
// (after sending whatever answers it still owes the peer).
func (c *Channel) Receive() (Message, error) {
	if c.failed != nil {
		return Message{}, c.failed
	}
	m, err := c.receive()
	if err != nil {
		c.failed = err
	}
	return m, err
}

func (c *Channel) receive() (Message, error) {
	for {
		ct, err := c.t.ReadMessage()
		if err != nil {
			return Message{}, err
		}
		m, ok, err := c.take(ct, time.Now())
		if err != nil || ok {
			return m, err
		}
	}
}

// take opens one transport message and handles it: it returns a whole
// message (ok), or nothing yet after a rekey or a fragment.
func (c *Channel) take(ct []byte, now time.Time) (m Message, ok bool, err error) {
	buf := plaintexts.Get().(*[MaxPlaintext]byte)
	defer plaintexts.Put(buf)
	plaintext, err := c.session.open(buf[:0], ct, now)
	if err != nil {
		return m, false, err
	}
	f, err := parsePlaintext(plaintext)
	if err != nil {
		return m, false, err
	}
	switch f.Type {
	case TypeRekey:
		c.session.rekeyRecv(now)
		return m, false, nil
	case TypeAccept, TypeRefuse:
		// Only as the listener's first message, which Dial read.
		return m, false, fmt.Errorf("%w: %v message on an open channel", ErrMalformed, f.Type)
	}
	if m, ok, err = c.reasm.add(f); err != nil || !ok {
		return Message{}, false, err
	}
	if m.Type == TypeClose {
		return Message{}, false, fmt.Errorf("%w: %q", ErrClosed, m.Reason)
	}
	return m, true, nil
}

// Close sends a close message with reason (best effort) and closes the
// transport. It does not wait for a Send in progress: it sends no close
// message then, and closing the transport ends that Send.
func (c *Channel) Close(reason string) error {
	// A Send blocked on a peer that stopped reading holds sendMu until the
	// carrier is closed, so waiting for it could take forever.
	if c.sendMu.TryLock() {
		if len(reason) > MaxReason {
			cut := MaxReason
			for cut > 0 && !utf8.RuneStart(reason[cut]) {
				cut-- // do not split a rune: the reason must stay UTF-8
			}
			reason = reason[:cut]
		}
		if p, err := appendControl(nil, Message{Type: TypeClose, Reason: reason}); err == nil {
			_ = c.writeLocked(p)
		}
		c.sendMu.Unlock()
	}
	return c.t.Close()
}
