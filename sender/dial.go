package ockam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Backoff between dial attempts: it doubles from minBackoff to maxBackoff,
// with jitter so that a fleet of devices does not reconnect in step after a
// listener restart. A Write without a channel cuts the wait short.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	// A listener that refused the device for good (revoked, expired,
	// unknown issuer, ...) refuses it again until its operator acts: the
	// device backs off from minRefusedBackoff to maxRefusedBackoff, and a
	// Write does not cut the wait short. The credential is read again
	// before each attempt, so a renewed one is used at the next.
	minRefusedBackoff = 5 * time.Second
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
		return min(max(2*cur, minRefusedBackoff), maxRefusedBackoff)
	}
	return min(max(2*cur, minBackoff), maxBackoff)
}

// runDialer keeps one channel open: it dials, waits for the channel to end,
// and dials again, with backoff, until ctx ends.
func (o *Ockam) runDialer(ctx context.Context) {
	defer close(o.dialerDone)
	backoff := minBackoff
	connected := false
	lastLogged, lastLoggedAt := "", time.Time{}
	for {
		select {
		case <-o.kick: // this attempt answers it
		default:
		}
		o.mu.Lock()
		o.started++
		attempt := o.started
		o.mu.Unlock()
		l, err := o.dial(ctx)
		if ctx.Err() != nil {
			if l != nil {
				l.shutdown("telegraf output closing", o.timeout)
			}
			return
		}
		refused := false
		if err != nil {
			// Say it once (an hour); a listener that stays down is one problem.
			if msg := err.Error(); msg != lastLogged || time.Since(lastLoggedAt) >= relogRefusal {
				o.Log.Warnf("Cannot open a channel: %v", err)
				lastLogged, lastLoggedAt = msg, time.Now()
			} else {
				o.Log.Debugf("Cannot open a channel: %v", err)
			}
			if _, refused = refusedForGood(err); refused {
				backoff = max(backoff, minRefusedBackoff)
			} else {
				backoff = min(backoff, maxBackoff) // refused before, not now
			}
		}
		o.publish(l, err, attempt)
		if err == nil {
			lastLogged = ""
			if connected {
				o.stats.reconnects.Incr(1)
			}
			connected = true
			o.Log.Infof("Channel open to listener %s at %s", l.peer.Short(), o.target)
			opened := time.Now()
			if !o.watchLink(ctx, l) {
				return // Close shuts the current link down
			}
			switch {
			case l.closedLocally():
				o.Log.Debugf("Channel to listener %s closed: %v", l.peer.Short(), l.cause())
			case errors.Is(l.cause(), secure.ErrClosed):
				// The listener said why (idle, shutting down, ...).
				o.Log.Infof("Channel to listener %s ended: %v", l.peer.Short(), l.cause())
			default:
				o.Log.Warnf("Channel to listener %s lost: %v", l.peer.Short(), l.cause())
			}
			o.publish(nil, l.cause(), 0)
			// A channel that ends right after the handshake (say, the
			// listener refuses our credential) must not make us spin.
			if time.Since(opened) >= maxBackoff {
				backoff = minBackoff
			}
		}
		if !o.sleep(ctx, backoff/2+rand.N(backoff/2), !refused) {
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
func (o *Ockam) watchLink(ctx context.Context, l *link) bool {
	t := time.NewTicker(time.Duration(o.RevocationCheckInterval))
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
func (o *Ockam) sleep(ctx context.Context, d time.Duration, kickable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	kick := o.kick
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
func (o *Ockam) waitLink() (*link, error) {
	if o.cancel == nil {
		return nil, errors.New("not connected: Connect was not called")
	}
	timer := time.NewTimer(o.timeout)
	defer timer.Stop()
	o.mu.Lock()
	// Only an attempt begun after this call says whether the listener is
	// reachable now; one under way may have started before it came up.
	start := o.started
	for {
		l, finished, lastErr, changed := o.link, o.finished, o.lastErr, o.changed
		o.mu.Unlock()
		if l != nil && !l.ended() {
			return l, nil
		}
		if finished > start && lastErr != nil {
			return nil, fmt.Errorf("no channel to %s: %w", o.target, lastErr)
		}
		if _, ok := refusedForGood(lastErr); ok && l == nil {
			// The dialer backs off for minutes and a kick does not
			// wake it: say why at once.
			return nil, fmt.Errorf("no channel to %s: %w", o.target, lastErr)
		}
		select {
		case o.kick <- struct{}{}:
		default:
		}
		select {
		case <-changed:
		case <-timer.C:
			if lastErr == nil {
				lastErr = errors.New("still connecting")
			}
			return nil, fmt.Errorf("no channel to %s within %v: %w", o.target, o.timeout, lastErr)
		}
		o.mu.Lock()
	}
}

// publish records the outcome of dial attempt number attempt, or the end of
// a link (attempt 0), and wakes the writers waiting for it.
func (o *Ockam) publish(l *link, err error, attempt uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.link, o.lastErr = l, err
	if attempt > 0 {
		o.finished = attempt
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

// dial connects and runs the handshake with the purpose key and the
// credential as they are now in the vault and the credential file, once a
// revocation source (if any) gave a current list.
func (o *Ockam) dial(ctx context.Context) (*link, error) {
	now := time.Now()
	if err := o.trust.Reload(now); err != nil {
		return nil, err
	}
	if err := o.trust.Check(now); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := o.trust.WaitReady(ctx); err != nil {
		return nil, err
	}
	cur := o.trust.Current()
	conn, err := o.dialTarget(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), secure.HandshakeConfig{
		Identity:       cur.Identity,
		Credential:     cur.Credential,
		Verifier:       cur.Verifier,
		PeerIdentifier: o.pin,
		PeerAttributes: o.ListenerAttributes,
	})
	switch {
	case errors.Is(err, secure.ErrPeerAttributes):
		return nil, fmt.Errorf("%s: the listener's credential lacks listener_attributes: %w", o.target, err)
	case errors.Is(err, secure.ErrUnknownIssuer):
		return nil, fmt.Errorf("%s: the listener's credential is not from the authority in authority_path %s: %w",
			o.target, o.trust.Authorities(), err)
	case errors.Is(err, secure.ErrRevoked):
		return nil, fmt.Errorf("%s: the listener's credential is revoked, nothing is sent to it: %w", o.target, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", o.target, err)
	}
	o.readers.Add(1)
	return newLink(ch, conn, cur.Verifier, o.Log, &o.readers), nil
}

// closeTrust releases the vault (a PKCS#11 token session; a directory
// needs nothing).
func (o *Ockam) closeTrust() {
	if o.trust == nil {
		return
	}
	if err := o.trust.Close(); err != nil {
		o.Log.Warnf("%v", err)
	}
	o.trust = nil
}
