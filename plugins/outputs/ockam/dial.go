package ockam

import (
	"context"
	"errors"
	"fmt"
	"io"
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
)

// runDialer keeps one channel open: it dials, waits for the channel to end,
// and dials again, with backoff, until ctx ends.
func (o *Ockam) runDialer(ctx context.Context) {
	defer close(o.dialerDone)
	backoff := minBackoff
	connected := false
	lastLogged := ""
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
		if err != nil {
			// Say it once; a listener that stays down is one problem.
			if msg := err.Error(); msg != lastLogged {
				o.Log.Warnf("Cannot open a channel: %v", err)
				lastLogged = msg
			} else {
				o.Log.Debugf("Cannot open a channel: %v", err)
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
			select {
			case <-l.done:
			case <-ctx.Done():
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
		if !o.sleep(ctx, backoff/2+rand.N(backoff/2)) {
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// sleep waits for d or a kick; it returns false when ctx ended.
func (o *Ockam) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-o.kick:
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
// credential as they are now in the vault and the credential file. It runs
// on the dialer goroutine, which owns o.identity after Connect.
func (o *Ockam) dial(ctx context.Context) (*link, error) {
	now := time.Now()
	if err := o.reloadIdentity(now); err != nil {
		return nil, err
	}
	cred, err := o.loadCredential(now)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	conn, err := o.dialTarget(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), secure.HandshakeConfig{
		Identity:       o.identity,
		Credential:     cred,
		Verifier:       o.verifier,
		PeerIdentifier: o.pin,
		PeerAttributes: o.ListenerAttributes,
	})
	switch {
	case errors.Is(err, secure.ErrPeerAttributes):
		return nil, fmt.Errorf("%s: the listener's credential lacks listener_attributes: %w", o.target, err)
	case errors.Is(err, secure.ErrUnknownIssuer):
		return nil, fmt.Errorf("%s: the listener's credential is not from the authority in authority_path %s: %w",
			o.target, o.trusted, err)
	case err != nil:
		return nil, fmt.Errorf("%s: %w", o.target, err)
	}
	o.readers.Add(1)
	return newLink(ch, conn, o.Log, &o.readers), nil
}

// reloadIdentity picks up a purpose key rotated in the vault since the
// identity was loaded (ockam purpose-key rotate on a running device), so
// that every new channel uses the vault's current key; a channel already
// open keeps its session keys. Unless the vault changed, it costs one read
// of the attestation record. If the vault cannot be read, the key in use
// serves as long as its attestation is valid.
func (o *Ockam) reloadIdentity(now time.Time) error {
	id, err := o.identity.Reload(o.vault)
	if err != nil {
		if o.identity.CheckAttestation(now) == nil {
			o.Log.Warnf("vault_path %s: %v; keeping the purpose key in use", o.VaultPath, err)
			return nil
		}
		return fmt.Errorf("vault_path %s: %w", o.VaultPath, err)
	}
	if err := id.CheckAttestation(now); err != nil {
		return fmt.Errorf("vault_path %s: %w", o.VaultPath, err)
	}
	if id != o.identity {
		o.identity = id
		a := id.Public().Attestation()
		o.Log.Infof("Loaded the rotated purpose key %x… of %s from vault_path, valid until %s",
			a.PurposeKey[:4], id.Identifier().Short(), a.Expires.Format(time.RFC3339))
	}
	return nil
}

// closeVault releases the vault (a PKCS#11 token session; a directory needs
// nothing).
func (o *Ockam) closeVault() {
	if c, ok := o.vault.(io.Closer); ok {
		if err := c.Close(); err != nil {
			o.Log.Warnf("vault_path: %v", err)
		}
	}
	o.vault = nil
}
