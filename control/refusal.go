package control

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// RefusalCode says why a device refused an instruction (docs/PROTOCOL.md,
// section 17.2). It travels upstream in the outcome (section 17.5) and
// becomes the code of the outcome metric.
type RefusalCode uint8

// Refusal codes. Nothing of a refused instruction is applied, and its
// sequence number is not consumed.
const (
	// RefusedMalformed: the instruction does not parse.
	RefusedMalformed RefusalCode = 1
	// RefusedTooLarge: the instruction or its payload is over its bound.
	RefusedTooLarge RefusalCode = 2
	// RefusedBadSignature: the signature does not verify with the operator
	// key it carries: the instruction was altered, or forged.
	RefusedBadSignature RefusalCode = 3
	// RefusedUnknownIssuer: the operator's credential is from an authority
	// the device does not trust.
	RefusedUnknownIssuer RefusalCode = 4
	// RefusedInvalidCredential: the operator's credential does not verify,
	// names another identity than the signing key, expired or is not yet
	// valid.
	RefusedInvalidCredential RefusalCode = 5
	// RefusedRevoked: the operator or its credential is revoked.
	RefusedRevoked RefusalCode = 6
	// RefusedUnknownKind: the kind is not one this device knows.
	RefusedUnknownKind RefusalCode = 7
	// RefusedUnauthorized: the policy lets no attribute of the operator's
	// credential send this kind (a gateway or a device signed it, say).
	RefusedUnauthorized RefusalCode = 8
	// RefusedWrongTarget: the instruction is for another device.
	RefusedWrongTarget RefusalCode = 9
	// RefusedNotYetValid: issued more than secure.ClockSkew in the future.
	RefusedNotYetValid RefusalCode = 10
	// RefusedExpired: the instruction expired.
	RefusedExpired RefusalCode = 11
	// RefusedReplayed: this operator's sequence number was applied before.
	RefusedReplayed RefusalCode = 12
	// RefusedRollback: a newer instruction of this operator was applied:
	// an older one would roll it back.
	RefusedRollback RefusalCode = 13
	// RefusedTooMany: more instructions than the device's rate limit: a
	// flood. Not permanent: the same instruction may be offered later.
	RefusedTooMany RefusalCode = 14
	// RefusedInvalidPayload: the applier refused the payload: a fragment
	// Telegraf does not load, a command name without a handler, a bad name.
	RefusedInvalidPayload RefusalCode = 15
	// RefusedDigestMismatch: an artifact's bytes do not match the digest its
	// release identity signed. (A manifest whose release signature does not
	// verify is RefusedBadSignature; one of an identity that is not a
	// release identity of the device, RefusedUnknownIssuer.)
	RefusedDigestMismatch RefusalCode = 16
)

var refusalNames = [...]string{
	RefusedMalformed:         "malformed",
	RefusedTooLarge:          "too large",
	RefusedBadSignature:      "bad signature",
	RefusedUnknownIssuer:     "unknown issuer",
	RefusedInvalidCredential: "invalid operator credential",
	RefusedRevoked:           "revoked",
	RefusedUnknownKind:       "unknown kind",
	RefusedUnauthorized:      "unauthorized",
	RefusedWrongTarget:       "not for this device",
	RefusedNotYetValid:       "not yet valid",
	RefusedExpired:           "expired",
	RefusedReplayed:          "replayed",
	RefusedRollback:          "older than the last applied",
	RefusedTooMany:           "too many instructions",
	RefusedInvalidPayload:    "invalid payload",
	RefusedDigestMismatch:    "digest mismatch",
}

// Valid reports whether c is a code of this version.
func (c RefusalCode) Valid() bool { return c > 0 && int(c) < len(refusalNames) }

// String returns the code's name, as the outcome metric carries it.
func (c RefusalCode) String() string {
	if c.Valid() {
		return refusalNames[c]
	}
	return "RefusalCode(" + strconv.Itoa(int(c)) + ")"
}

// Permanent reports whether offering the same instruction again is refused
// again: every code but RefusedTooMany.
func (c RefusalCode) Permanent() bool { return c != RefusedTooMany }

// RefusalError is a refused instruction: Code for the outcome, Err the
// cause for the device's log (its text goes upstream as the reason).
type RefusalError struct {
	Code RefusalCode
	Err  error
}

func (e *RefusalError) Error() string {
	return fmt.Sprintf("instruction refused: %v: %v", e.Code, e.Err)
}

// Unwrap returns the cause.
func (e *RefusalError) Unwrap() error { return e.Err }

// refuse returns a *RefusalError.
func refuse(code RefusalCode, err error) error { return &RefusalError{Code: code, Err: err} }

// refusef returns a *RefusalError with a formatted cause.
func refusef(code RefusalCode, format string, args ...any) error {
	return refuse(code, fmt.Errorf(format, args...))
}

// CodeOf returns the code of a *RefusalError in err's chain, or 0 if err
// is nil or not a refusal (a failure).
func CodeOf(err error) RefusalCode {
	var r *RefusalError
	if errors.As(err, &r) {
		return r.Code
	}
	return 0
}

// credentialCode maps an error of secure.Verifier.VerifyCredential.
func credentialCode(err error) RefusalCode {
	switch {
	case errors.Is(err, secure.ErrRevoked):
		return RefusedRevoked
	case errors.Is(err, secure.ErrUnknownIssuer):
		return RefusedUnknownIssuer
	}
	return RefusedInvalidCredential
}
