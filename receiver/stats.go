package receiver

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/trust"
)

// HandshakeReasons are the reasons of handshakes_failed, in the order handshakeReason tests them.
var HandshakeReasons = []string{
	"no_revocation_list", "timeout", "unsupported_version", "malformed", "decrypt", "unknown_issuer", "bad_signature",
	"expired", "not_yet_valid", "revoked", "wrong_subject", "eof", "other",
}

// credentialReasons are the handshake failures an operator acts on; they
// are logged at info, the others at debug.
var credentialReasons = map[string]bool{
	"unknown_issuer": true, "bad_signature": true, "expired": true, "not_yet_valid": true,
	"revoked": true, "wrong_subject": true, "unsupported_version": true,
}

// RefusalReasons are the reasons of messages_refused.
var RefusalReasons = []string{
	RefusedRevoked, RefusedExpired, RefusedUnauthorized, RefusedParse, RefusedPolicy, RefusedTooLarge,
	RefusedReservedField, RefusedInvalidPoint, RefusedOutput,
}

// ChannelFailureReasons are the reasons of channels_failed: why an established channel was closed for a
// protocol error (a tampered, replayed, injected or malformed message).
var ChannelFailureReasons = []string{"decrypt", "malformed", "truncated", "other"}

// stats are the internal metrics. Every Counter is registered by New, since
// a selfstat.Collector is not safe for concurrent use; a Stat is.
type stats struct {
	channelsOpen        Counter
	handshakesOK        Counter
	handshakesFailed    map[string]Counter // by reason
	messagesAccepted    Counter
	messagesRefused     map[string]Counter // by reason
	messagesDelivered   Counter
	messagesUndelivered Counter
	metricsEmitted      Counter
	bytesReceived       Counter
	connectionsRejected Counter
	// Added for the attack suite (docs/SECURITY.md).
	channelsFailed       map[string]Counter // by reason
	forgedTags           Counter
	connectionsThrottled Counter
	// Added for docs/SECURITY.md W5.
	channelsOverIdentityLimit Counter
	// Added for docs/SECURITY.md W14.
	undeliveredBytes Counter // estimated bytes emitted and not yet delivered
	byteLimitStalls  Counter // messages that waited for max_undelivered_bytes_*
	// Added for docs/SECURITY.md W13.
	// not delivered, emitted again alone: moved by the Sink of
	// inputs.ockam_listener, registered here so every adapter reports it
	messagesResent Counter
	// Added for docs/SECURITY.md W16: lists from revocation_source that
	// passed their next update.
	revocationListStale Counter
	// Seconds the credential in use stays valid, negative once expired.
	credentialExpiresIn Counter
}

func newStats(register Registry) *stats {
	reg := func(field string) Counter { return register(field, nil) }
	s := &stats{
		channelsOpen:        reg("channels_open"),
		handshakesOK:        reg("handshakes_ok"),
		handshakesFailed:    make(map[string]Counter, len(HandshakeReasons)),
		messagesAccepted:    reg("messages_accepted"),
		messagesRefused:     make(map[string]Counter, len(RefusalReasons)),
		messagesDelivered:   reg("messages_delivered"),
		messagesUndelivered: reg("messages_undelivered"),
		metricsEmitted:      reg("metrics_emitted"),
		bytesReceived:       reg("bytes_received"),
		connectionsRejected: reg("connections_rejected"),

		channelsFailed:       make(map[string]Counter, len(ChannelFailureReasons)),
		forgedTags:           reg("forged_tags"),
		connectionsThrottled: reg("connections_throttled"),

		channelsOverIdentityLimit: reg("channels_over_identity_limit"),

		undeliveredBytes:    reg("undelivered_bytes"),
		byteLimitStalls:     reg("byte_limit_stalls"),
		messagesResent:      reg("messages_resent"),
		revocationListStale: reg("revocation_list_stale"),
		credentialExpiresIn: reg("credential_expires_in_seconds"),
	}
	for _, r := range HandshakeReasons {
		s.handshakesFailed[r] = register("handshakes_failed", map[string]string{"reason": r})
	}
	for _, r := range RefusalReasons {
		s.messagesRefused[r] = register("messages_refused", map[string]string{"reason": r})
	}
	for _, r := range ChannelFailureReasons {
		s.channelsFailed[r] = register("channels_failed", map[string]string{"reason": r})
	}
	return s
}

// handshakeReason classifies a failed handshake for handshakes_failed.
func handshakeReason(err error) string {
	switch {
	case errors.Is(err, trust.ErrNoRevocationList):
		return "no_revocation_list"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, secure.ErrUnsupportedVersion):
		return "unsupported_version"
	case errors.Is(err, secure.ErrMalformed), errors.Is(err, errNotHandshake):
		return "malformed"
	case errors.Is(err, secure.ErrHandshake), errors.Is(err, secure.ErrDecrypt):
		return "decrypt"
	case errors.Is(err, secure.ErrUnknownIssuer):
		return "unknown_issuer"
	case errors.Is(err, secure.ErrBadSignature):
		return "bad_signature"
	case errors.Is(err, secure.ErrExpired):
		return "expired"
	case errors.Is(err, secure.ErrNotYetValid):
		return "not_yet_valid"
	case errors.Is(err, secure.ErrRevoked):
		return "revoked"
	case errors.Is(err, secure.ErrWrongSubject), errors.Is(err, secure.ErrPinMismatch):
		return "wrong_subject"
	case isEOF(err):
		return "eof"
	}
	return "other"
}

// channelFailureReason classifies the error that ended an established
// channel for channels_failed.
func channelFailureReason(err error) string {
	switch {
	case errors.Is(err, secure.ErrDecrypt):
		return "decrypt"
	case errors.Is(err, secure.ErrMalformed):
		return "malformed"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated"
	}
	return "other"
}

// onceSet remembers keys, to log something once per key. It forgets
// everything when it holds maxOnce keys, so it cannot grow without bound.
type onceSet struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

const maxOnce = 10000

// first reports whether key is new, and remembers it.
func (o *onceSet) first(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seen[key]; ok {
		return false
	}
	if o.seen == nil || len(o.seen) >= maxOnce {
		o.seen = make(map[string]struct{})
	}
	o.seen[key] = struct{}{}
	return true
}

// refusalLogInterval: a device refused at the handshake for one reason is
// logged once per interval; every refusal is counted.
const refusalLogInterval = 10 * time.Minute

// keyedRateLimit allows one event per key and period, for at most maxOnce
// keys (then it forgets them all, as onceSet does).
type keyedRateLimit struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (r *keyedRateLimit) allow(key string, now time.Time, period time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.last[key]; ok && now.Sub(last) < period {
		return false
	}
	if r.last == nil || len(r.last) >= maxOnce {
		r.last = make(map[string]time.Time)
	}
	r.last[key] = now
	return true
}

// rateLimit allows one event per period.
type rateLimit struct {
	mu   sync.Mutex
	last time.Time
}

func (r *rateLimit) allow(now time.Time, period time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < period {
		return false
	}
	r.last = now
	return true
}
