package control

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Device is the verifying device: its identifier and the attributes of its
// own credential, which a selector target is matched against.
type Device struct {
	Identifier secure.Identifier
	Attributes map[string]string
}

// RateLimit bounds the instructions a device examines: a bucket of Burst
// tokens, one taken by every instruction offered (before any other check,
// so a flood costs no signature checks), one added back every Every.
type RateLimit struct {
	Burst int
	Every time.Duration
}

// DefaultRateLimit lets a device take 16 instructions at once and then one
// every 2 seconds: a rollout sends a handful; more is a flood.
var DefaultRateLimit = RateLimit{Burst: 16, Every: 2 * time.Second}

// VerifierConfig is what a Verifier needs.
type VerifierConfig struct {
	// Credentials verifies operators' credentials: the trusted authorities
	// and their current revocation lists (shared with the channel).
	Credentials *secure.Verifier
	// Policy says which operators may send which kinds.
	Policy *Policy
	// Device is this device.
	Device Device
	// Sequences is the persisted per-operator sequence store.
	Sequences *SequenceStore
	// Limit is the flood limit; zero: DefaultRateLimit.
	Limit RateLimit
}

// Verifier decides whether a device applies an instruction. It is safe for
// concurrent use.
type Verifier struct {
	credentials *secure.Verifier
	policy      *Policy
	device      Device
	sequences   *SequenceStore
	limit       RateLimit

	mu     sync.Mutex // guards the bucket
	tokens float64
	filled time.Time
}

// NewVerifier checks cfg and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	switch {
	case cfg.Credentials == nil:
		return nil, errors.New("control: verifier: no credential verifier")
	case cfg.Policy == nil:
		return nil, errors.New("control: verifier: no policy")
	case cfg.Sequences == nil:
		return nil, errors.New("control: verifier: no sequence store")
	case cfg.Device.Identifier.IsZero():
		return nil, errors.New("control: verifier: no device identifier")
	}
	if cfg.Limit == (RateLimit{}) {
		cfg.Limit = DefaultRateLimit
	}
	if cfg.Limit.Burst < 1 || cfg.Limit.Every <= 0 {
		return nil, fmt.Errorf("control: verifier: rate limit %+v: want a burst >= 1 and a positive interval", cfg.Limit)
	}
	cfg.Device.Attributes = maps.Clone(cfg.Device.Attributes)
	return &Verifier{credentials: cfg.Credentials, policy: cfg.Policy, device: cfg.Device,
		sequences: cfg.Sequences, limit: cfg.Limit, tokens: float64(cfg.Limit.Burst)}, nil
}

// Verify decides on the encoded instruction b at now, in the order of
// docs/PROTOCOL.md, section 17.2: the flood limit, the size, the form, the
// signature, the operator's credential, the kind, the policy, the target,
// the validity period, and last the sequence number, which it then
// records. A nil error means the instruction is accepted and recorded: the
// caller applies it now, and only now (an instruction is applied at most
// once; a failed application is not retried). A refusal is a
// *RefusalError; any other error (the store could not be written) is a
// failure, and nothing was recorded. With an error, the instruction is
// returned too once it parsed, for the id and sequence of the outcome; its
// fields are then the sender's claims, not verified facts.
func (v *Verifier) Verify(b []byte, now time.Time) (*Instruction, error) {
	if !v.take(now) {
		return nil, refusef(RefusedTooMany, "more than %d instructions, then one every %v", v.limit.Burst, v.limit.Every)
	}
	in, err := Parse(b)
	if errors.Is(err, ErrTooLarge) {
		return nil, refuse(RefusedTooLarge, err)
	}
	if err != nil {
		return nil, refuse(RefusedMalformed, err)
	}
	if err := v.check(in, now); err != nil {
		return in, err
	}
	if err := v.sequences.advance(in.Operator(), in.Sequence); err != nil {
		return in, err
	}
	return in, nil
}

// check runs the checks between parsing and the sequence number.
func (v *Verifier) check(in *Instruction, now time.Time) error {
	// signature, with the key it carries: nothing below is trusted before
	if err := in.CheckSignature(); err != nil {
		return refuse(RefusedBadSignature, err)
	}
	// operator's credential: trusted issuer, names the signing identity, current, not revoked
	if err := v.credentials.VerifyCredential(in.Credential, in.Operator(), now); err != nil {
		return refuse(credentialCode(err), fmt.Errorf("operator %s: %w", in.Operator().Short(), err))
	}
	if !in.Kind.Known() {
		return refusef(RefusedUnknownKind, "%v", in.Kind)
	}
	if !v.policy.Allows(in.Credential.Attributes, in.Kind) {
		return refusef(RefusedUnauthorized, "the policy lets no attribute of operator %s send %v instructions", in.Operator().Short(), in.Kind)
	}
	if !in.Target.Matches(v.device.Identifier, v.device.Attributes) {
		return refusef(RefusedWrongTarget, "target %q", in.Target.String())
	}
	if in.IssuedAt.After(now.Add(secure.ClockSkew)) {
		return refusef(RefusedNotYetValid, "issued at %s", in.IssuedAt.Format(time.RFC3339))
	}
	if !now.Before(in.ExpiresAt) {
		return refusef(RefusedExpired, "expired at %s", in.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// take takes a token from the bucket at now, if there is one.
func (v *Verifier) take(now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if now.After(v.filled) {
		if !v.filled.IsZero() {
			v.tokens += float64(now.Sub(v.filled)) / float64(v.limit.Every)
			v.tokens = min(v.tokens, float64(v.limit.Burst))
		}
		v.filled = now
	}
	if v.tokens < 1 {
		return false
	}
	v.tokens--
	return true
}
