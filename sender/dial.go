package sender

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// closeReason is the reason of the close message the sender sends when it
// is closed (docs/PROTOCOL.md quotes it).
const closeReason = "telegraf output closing"

// Backoff between dial attempts: it doubles from minBackoff to maxBackoff,
// with jitter so that a fleet of devices does not reconnect in step after a
// listener restart. A Send without a channel cuts the wait short.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	// MinRefusedBackoff is the shortest wait after a listener refused the
	// device for good (revoked, expired, unknown issuer, ...): it refuses
	// it again until its operator acts, so the device backs off from
	// MinRefusedBackoff to maxRefusedBackoff, and a Send does not cut the
	// wait short (it fails at once with the refusal). The credential is
	// read again before each attempt, so a renewed one is used at the next.
	MinRefusedBackoff = 5 * time.Second
	maxRefusedBackoff = 5 * time.Minute
	// relogRefusal: the same refusal is logged again at most this often.
	relogRefusal = time.Hour
)

// refusedForGood returns the listener's permanent refusal in err, if any.
func refusedForGood(err error) (*secure.RefusedError, bool) {
	re, ok := errors.AsType[*secure.RefusedError](err)
	return re, ok && re.Code.Permanent()
}

// backoffFor returns the wait before the next attempt after one that ended
// with err, given the current wait: it doubles, within the bounds of a
// permanent refusal or of any other failure.
func backoffFor(cur time.Duration, err error) time.Duration {
	if _, ok := refusedForGood(err); ok {
		return min(max(2*cur, MinRefusedBackoff), maxRefusedBackoff)
	}
	return min(max(2*cur, minBackoff), maxBackoff)
}

// runDialer keeps one channel open: it dials, waits for the channel to end,
// and dials again, with backoff, until ctx ends.
func (s *Sender) runDialer(ctx context.Context) {
	defer close(s.dialerDone)
	backoff := minBackoff
	connected := false
	lastLogged, lastLoggedAt := "", time.Time{}
	for {
		select {
		case <-s.kick: // this attempt answers it
		default:
		}
		s.mu.Lock()
		s.started++
		attempt := s.started
		s.mu.Unlock()
		l, err := s.dial(ctx)
		if ctx.Err() != nil {
			if l != nil {
				l.shutdown(closeReason, s.cfg.Timeout)
			}
			return
		}
		refused := false
		if err != nil {
			// Say it once (an hour); a listener that stays down is one problem.
			if msg := err.Error(); msg != lastLogged || time.Since(lastLoggedAt) >= relogRefusal {
				s.log.Warnf("Cannot open a channel: %v", err)
				lastLogged, lastLoggedAt = msg, time.Now()
			} else {
				s.log.Debugf("Cannot open a channel: %v", err)
			}
			if _, refused = refusedForGood(err); refused {
				backoff = max(backoff, MinRefusedBackoff)
			} else {
				backoff = min(backoff, maxBackoff) // refused before, not now
			}
		}
		s.publish(l, err, attempt)
		if err == nil {
			lastLogged = ""
			if connected {
				s.stats.Reconnects.Incr(1)
			}
			connected = true
			s.log.Infof("Channel open to listener %s at %s", l.peer.Short(), s.cfg.Target)
			opened := time.Now()
			if !s.watchLink(ctx, l) {
				return // Close shuts the current link down
			}
			switch {
			case l.closedLocally():
				s.log.Debugf("Channel to listener %s closed: %v", l.peer.Short(), l.cause())
			case errors.Is(l.cause(), secure.ErrClosed):
				// The listener said why (idle, shutting down, ...).
				s.log.Infof("Channel to listener %s ended: %v", l.peer.Short(), l.cause())
			default:
				s.log.Warnf("Channel to listener %s lost: %v", l.peer.Short(), l.cause())
			}
			s.publish(nil, l.cause(), 0)
			// A channel that ends right after the handshake (say, the
			// listener refuses our credential) must not make us spin.
			if time.Since(opened) >= maxBackoff {
				backoff = minBackoff
			}
		}
		if !s.sleep(ctx, backoff/2+rand.N(backoff/2), !refused) {
			return
		}
		backoff = backoffFor(backoff, err)
	}
}

// watchLink waits until l ends, checking every revocation_check_interval
// that the listener's credential is still valid and not revoked: a
// listener revoked while the channel is open loses it at once, and its
// unanswered messages do not count as written. It returns false when ctx
// ended first.
func (s *Sender) watchLink(ctx context.Context, l *link) bool {
	t := time.NewTicker(s.cfg.RevocationCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return true
		case <-ctx.Done():
			return false
		case now := <-t.C:
			if err := l.checkPeer(now); err != nil {
				l.fail(err)
			}
		}
	}
}

// sleep waits for d, or a kick if kickable; it returns false when ctx
// ended.
func (s *Sender) sleep(ctx context.Context, d time.Duration, kickable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	kick := s.kick
	if !kickable {
		kick = nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-kick:
		return true
	case <-t.C:
		return true
	}
}

// waitLink returns the current channel. Without one, it wakes the dialer and
// waits for the outcome of its next attempt, at most timeout.
func (s *Sender) waitLink() (*link, error) {
	if s.cancel == nil {
		return nil, errors.New("not connected: Connect was not called")
	}
	timer := time.NewTimer(s.cfg.Timeout)
	defer timer.Stop()
	s.mu.Lock()
	// Only an attempt begun after this call says whether the listener is
	// reachable now; one under way may have started before it came up.
	start := s.started
	for {
		l, finished, lastErr, changed := s.link, s.finished, s.lastErr, s.changed
		s.mu.Unlock()
		if l != nil && !l.ended() {
			return l, nil
		}
		if finished > start && lastErr != nil {
			return nil, fmt.Errorf("no channel to %s: %w", s.cfg.Target, lastErr)
		}
		if _, ok := refusedForGood(lastErr); ok && l == nil {
			// The dialer backs off for minutes and a kick does not
			// wake it: say why at once.
			return nil, fmt.Errorf("no channel to %s: %w", s.cfg.Target, lastErr)
		}
		select {
		case s.kick <- struct{}{}:
		default:
		}
		select {
		case <-changed:
		case <-timer.C:
			if lastErr == nil {
				lastErr = errors.New("still connecting")
			}
			return nil, fmt.Errorf("no channel to %s within %v: %w", s.cfg.Target, s.cfg.Timeout, lastErr)
		}
		s.mu.Lock()
	}
}

// publish records the outcome of dial attempt number attempt, or the end of
// a link (attempt 0), and wakes the writers waiting for it.
func (s *Sender) publish(l *link, err error, attempt uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.link, s.lastErr = l, err
	if attempt > 0 {
		s.finished = attempt
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// dial connects and runs the handshake with the purpose key and the
// credential as they are now in the vault and the credential file, once a
// revocation source (if any) gave a current list.
func (s *Sender) dial(ctx context.Context) (*link, error) {
	now := time.Now()
	if err := s.cfg.Trust.Reload(now); err != nil {
		return nil, err
	}
	if err := s.cfg.Trust.Check(now); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if err := s.cfg.Trust.WaitReady(ctx); err != nil {
		return nil, err
	}
	cur := s.cfg.Trust.Current()
	conn, err := s.dialTarget(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), secure.HandshakeConfig{
		Identity:       cur.Identity,
		Credential:     cur.Credential,
		Verifier:       cur.Verifier,
		PeerIdentifier: s.cfg.ListenerIdentity,
		PeerAttributes: s.cfg.ListenerAttributes,
	})
	switch {
	case errors.Is(err, secure.ErrPeerAttributes):
		return nil, fmt.Errorf("%s: the listener's credential lacks listener_attributes: %w", s.cfg.Target, err)
	case errors.Is(err, secure.ErrUnknownIssuer):
		return nil, fmt.Errorf("%s: the listener's credential is not from the authority in authority_path %s: %w",
			s.cfg.Target, s.cfg.Trust.Authorities(), err)
	case errors.Is(err, secure.ErrRevoked):
		return nil, fmt.Errorf("%s: the listener's credential is revoked, nothing is sent to it: %w", s.cfg.Target, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", s.cfg.Target, err)
	}
	s.mu.Lock()
	s.links++
	number := s.links
	s.mu.Unlock()
	s.readers.Add(1)
	l := newLink(ch, conn, number, cur.Credential, cur.Verifier, s.cfg.Control, s.cfg.Timeout, s.log, &s.readers)
	if l.control != nil {
		// the outbox, then ready (docs/PROTOCOL.md, section 17.5)
		if err := l.control.Begin(); err != nil {
			l.fail(err)
			return nil, fmt.Errorf("%s: opting in to control instructions: %w", s.cfg.Target, err)
		}
	}
	return l, nil
}
