package secure

import "errors"

// Verification outcomes a caller acts on. Functions wrap them with context;
// test with errors.Is.
var (
	// ErrUnknownIssuer: the credential or revocation list was not issued by
	// any trusted authority.
	ErrUnknownIssuer = errors.New("secure: unknown issuer")
	// ErrBadSignature: a signature does not verify over the encoded bytes.
	ErrBadSignature = errors.New("secure: bad signature")
	// ErrNotYetValid: the credential or attestation starts in the future
	// (beyond ClockSkew).
	ErrNotYetValid = errors.New("secure: not yet valid")
	// ErrExpired: the credential or attestation has expired.
	ErrExpired = errors.New("secure: expired")
	// ErrRevoked: the subject or the credential is on the current
	// revocation list.
	ErrRevoked = errors.New("secure: revoked")
	// ErrWrongSubject: the credential names another identity than the peer
	// that presented it, or the attestation's purpose key is not the key the
	// peer proved in the handshake.
	ErrWrongSubject = errors.New("secure: wrong subject")
	// ErrStaleRevocationList: a revocation list older than (or as old as,
	// but different from) the current one was offered.
	ErrStaleRevocationList = errors.New("secure: stale revocation list")
	// ErrMalformed: an encoding is not canonical or not well formed.
	ErrMalformed = errors.New("secure: malformed")
)
