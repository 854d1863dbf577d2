package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// An outcome is a device's answer to one instruction, docs/PROTOCOL.md,
// section 17.5 (the body of the outcome message, after its type and batch):
//
//	[16]  instruction id (zero if the instruction did not parse)
//	[32]  operator identifier (zero if it did not parse)
//	u64   sequence (0 if it did not parse)
//	u8    result: 1 applied, 2 refused, 3 failed
//	u8    code: the RefusalCode if refused, else 0
//	      reason: the rest, UTF-8, at most MaxReasonSize bytes
const (
	// MaxReasonSize bounds an outcome's reason, as section 9 bounds
	// reasons; OutcomeOf cuts a longer one at a character boundary.
	MaxReasonSize = 1024

	outcomeFixed = IDSize + secure.IdentifierSize + 8 + 1 + 1
)

// Result is what became of an instruction.
type Result uint8

// Results.
const (
	// Applied: verified and applied.
	Applied Result = 1
	// Refused: not applied, for the outcome's Code.
	Refused Result = 2
	// Failed: verified, its sequence consumed, but applying it failed.
	Failed Result = 3
)

// String returns "applied", "refused" or "failed", as the outcome metric's
// result tag.
func (r Result) String() string {
	switch r {
	case Applied:
		return "applied"
	case Refused:
		return "refused"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Result(%d)", uint8(r))
}

// Outcome is a device's answer to one instruction.
type Outcome struct {
	ID       ID
	Operator secure.Identifier
	Sequence uint64
	Result   Result
	Code     RefusalCode // set iff Result is Refused
	Reason   string
}

// OutcomeOf makes the outcome of in (nil if it did not parse) from the
// error of Verifier.Verify or of an applier: nil is Applied, a
// *RefusalError Refused with its code, anything else Failed.
func OutcomeOf(in *Instruction, err error) Outcome {
	var o Outcome
	if in != nil {
		o.ID, o.Operator, o.Sequence = in.ID, in.Operator(), in.Sequence
	}
	switch code := CodeOf(err); {
	case err == nil:
		o.Result = Applied
	case code != 0:
		o.Result, o.Code = Refused, code
	default:
		o.Result = Failed
	}
	if err != nil {
		o.Reason = truncateUTF8(err.Error(), MaxReasonSize)
	}
	return o
}

// truncateUTF8 cuts s to at most n bytes, at a character boundary, and
// replaces invalid UTF-8.
func truncateUTF8(s string, n int) string {
	s = string([]rune(s)) // invalid bytes become U+FFFD
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// Marshal encodes the outcome.
func (o Outcome) Marshal() []byte {
	b := make([]byte, 0, outcomeFixed+len(o.Reason))
	b = append(b, o.ID[:]...)
	b = append(b, o.Operator[:]...)
	b = binary.BigEndian.AppendUint64(b, o.Sequence)
	b = append(b, byte(o.Result), byte(o.Code))
	return append(b, o.Reason...)
}

// ParseOutcome decodes an outcome strictly (ErrMalformed): a known result,
// a valid code exactly when refused, a reason of valid UTF-8 within bounds.
func ParseOutcome(b []byte) (Outcome, error) {
	var o Outcome
	if len(b) > outcomeFixed+MaxReasonSize {
		return o, fmt.Errorf("%w: outcome of %d bytes, at most %d", ErrMalformed, len(b), outcomeFixed+MaxReasonSize)
	}
	s := cryptobyte.String(b)
	var result, code uint8
	if !s.CopyBytes(o.ID[:]) || !s.CopyBytes(o.Operator[:]) || !s.ReadUint64(&o.Sequence) ||
		!s.ReadUint8(&result) || !s.ReadUint8(&code) {
		return o, fmt.Errorf("%w: outcome truncated", ErrMalformed)
	}
	o.Result, o.Code, o.Reason = Result(result), RefusalCode(code), string(s)
	switch {
	case o.Result < Applied || o.Result > Failed:
		return o, fmt.Errorf("%w: outcome result %d", ErrMalformed, result)
	case (o.Result == Refused) != (code != 0), code != 0 && !o.Code.Valid():
		return o, fmt.Errorf("%w: outcome %v with code %d", ErrMalformed, o.Result, code)
	case !utf8.ValidString(o.Reason):
		return o, errors.Join(ErrMalformed, errors.New("outcome reason is not UTF-8"))
	}
	return o, nil
}
