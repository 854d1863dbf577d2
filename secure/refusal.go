package secure

import (
	"errors"
	"fmt"
	"strconv"
)

// RefusalCode says why a listener refused a channel right after the
// handshake (docs/PROTOCOL.md, section 9, "Opening"). It travels in a
// refuse message, sealed under the channel's keys, so only the device
// that completed the handshake reads it.
type RefusalCode uint8

// Refusal codes. Every code but RefusedTooManyChannels is permanent:
// dialing again with the same credential gets the same answer.
const (
	// RefusedRevoked: the device's identity or credential is revoked.
	RefusedRevoked RefusalCode = 1
	// RefusedExpired: the device's credential or attestation expired.
	RefusedExpired RefusalCode = 2
	// RefusedNotYetValid: the device's credential or attestation starts in
	// the future (a clock is wrong).
	RefusedNotYetValid RefusalCode = 3
	// RefusedUnknownIssuer: the device's credential is from an authority
	// the listener does not trust.
	RefusedUnknownIssuer RefusalCode = 4
	// RefusedInvalidCredential: a bad signature, a credential of another
	// subject, or a malformed payload.
	RefusedInvalidCredential RefusalCode = 5
	// RefusedUnauthorized: the credential is valid, but the listener's
	// policy admits no channel from it.
	RefusedUnauthorized RefusalCode = 6
	// RefusedTooManyChannels: the identity has as many channels open as the
	// listener allows (transient: one of them may close).
	RefusedTooManyChannels RefusalCode = 7
)

var refusalNames = [...]string{
	RefusedRevoked:           "revoked",
	RefusedExpired:           "credential expired",
	RefusedNotYetValid:       "credential not yet valid",
	RefusedUnknownIssuer:     "unknown issuer",
	RefusedInvalidCredential: "invalid credential",
	RefusedUnauthorized:      "unauthorized",
	RefusedTooManyChannels:   "too many channels for this identity",
}

func (c RefusalCode) valid() bool { return c > 0 && int(c) < len(refusalNames) }

// String returns the code's name, as the device logs it.
func (c RefusalCode) String() string {
	if c.valid() {
		return refusalNames[c]
	}
	return "RefusalCode(" + strconv.Itoa(int(c)) + ")"
}

// Permanent reports whether dialing again with the same credential is
// refused again: the device then backs off for minutes, not seconds.
func (c RefusalCode) Permanent() bool { return c != RefusedTooManyChannels }

// RefusalCodeOf maps a verification error of the handshake's message 3 to
// the code the responder sends.
func RefusalCodeOf(err error) RefusalCode {
	switch {
	case errors.Is(err, ErrRevoked):
		return RefusedRevoked
	case errors.Is(err, ErrExpired):
		return RefusedExpired
	case errors.Is(err, ErrNotYetValid):
		return RefusedNotYetValid
	case errors.Is(err, ErrUnknownIssuer):
		return RefusedUnknownIssuer
	}
	return RefusedInvalidCredential
}

// ErrRefused: the listener completed the handshake and refused the channel.
// The error is a *RefusedError.
var ErrRefused = errors.New("secure: refused by listener")

// RefusedError is what Dial returns when the listener refused the channel
// after the handshake. The listener is verified: the refusal came sealed
// under the channel's keys. errors.Is(err, ErrRefused) holds; it does not
// match the verification errors (ErrRevoked, ...), which speak of the
// listener's own credential.
type RefusedError struct {
	Listener Identifier  // who refused
	Code     RefusalCode // why
	Reason   string      // the listener's text, possibly empty; quote it
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("secure: refused by listener %s: %v", e.Listener.Short(), e.Code)
	if e.Reason != "" {
		s += fmt.Sprintf(" (%q)", e.Reason)
	}
	return s
}

// Is makes errors.Is(err, ErrRefused) hold.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// RefusalError is an error that refuses a channel with Code: return one
// from HandshakeConfig.Admit.
type RefusalError struct {
	Code RefusalCode
	Err  error // the cause, for the listener's log; never sent
}

func (e *RefusalError) Error() string { return fmt.Sprintf("%v: %v", e.Code, e.Err) }

// Unwrap returns the cause.
func (e *RefusalError) Unwrap() error { return e.Err }
