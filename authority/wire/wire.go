// Package wire is the framing of the authority service (docs/PROTOCOL.md
// §14.7): the requests a device or a listener sends to `ockam authority
// serve` (bundle, enrollment, revocation list), the replies and the
// refusals, and the client calls over any io.ReadWriter. It imports
// secure/enroll for the bodies it carries and nothing of Telegraf.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"io"
	"strings"
	"unicode/utf8"
)

// The service protocol (docs/PROTOCOL.md, "Authority service"):
// on a byte stream, the client sends requests and the service answers each
// in order, one frame each:
//
//	+-----------+---------------+----------------------+
//	| type (u8) | length (u32)  | body (length bytes)  |
//	+-----------+---------------+----------------------+
//
// Every type has its own bound on length, checked before the body is read.
// Bundles, answers and revocation lists are signed or encrypted end to end,
// so the stream needs no protection of its own; a refusal is not
// authenticated and can only deny service, which anyone on the path can.
const (
	// Requests.
	ServiceBundle         byte = 0x01 // body empty; reply: a bundle with a one-time prekey when the service has one
	ServiceEnroll         byte = 0x02 // body: an enrollment request; reply: its answer
	ServiceRevocationList byte = 0x03 // body empty; reply: the current list, or an empty body if none
	// ServiceReply is or'ed into a request's type to make its reply's.
	ServiceReply byte = 0x80
	// ServiceRefusal answers any request that failed: u8 code | reason.
	ServiceRefusal byte = 0xff

	serviceFrameHeader = 1 + 4
)

// ErrAuthorityUnavailable: the service could not handle the request now
// (overloaded, shutting down, an internal error); retrying later may help.
var ErrAuthorityUnavailable = errors.New("secure: authority unavailable")

// refusalCodes are the codes of the refusal body, in wire order from 1.
// Codes are part of the protocol: append, never reorder.
var refusalCodes = []error{
	enroll.ErrTokenUsed, enroll.ErrUnknownToken, secure.ErrExpired, enroll.ErrWrongAuthority, enroll.ErrUnknownPrekey, enroll.ErrPrekeyUsed,
	secure.ErrMalformed, secure.ErrDecrypt, secure.ErrRevoked, secure.ErrNotYetValid, secure.ErrBadSignature, secure.ErrWrongSubject,
	ErrAuthorityUnavailable,
}

// ServiceBodyLimit returns the largest body of a frame of type typ in the
// service protocol, or -1 for a type it does not know.
func ServiceBodyLimit(typ byte) int {
	switch typ {
	case ServiceBundle, ServiceRevocationList:
		return 0
	case ServiceEnroll:
		return enroll.RequestSizeOneTime
	case ServiceBundle | ServiceReply:
		return enroll.MaxBundleSize
	case ServiceEnroll | ServiceReply:
		return enroll.MaxAnswerSize
	case ServiceRevocationList | ServiceReply:
		return secure.MaxRevocationListSize
	case ServiceRefusal:
		return 1 + secure.MaxReason
	}
	return -1
}

// WriteServiceFrame writes one frame with a single Write.
func WriteServiceFrame(w io.Writer, typ byte, body []byte) error {
	b := make([]byte, 0, serviceFrameHeader+len(body))
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	_, err := w.Write(append(b, body...))
	return err
}

// ReadServiceFrame reads one frame whose type limit accepts: limit returns
// the largest body for a type, or a negative number for a type that is
// not expected (ErrMalformed). The length is checked before the body is
// allocated. A stream that ends between frames returns io.EOF; inside one,
// io.ErrUnexpectedEOF.
func ReadServiceFrame(r io.Reader, limit func(typ byte) int) (typ byte, body []byte, err error) {
	var hdr [serviceFrameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err // io.EOF between frames, io.ErrUnexpectedEOF inside
	}
	typ, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	max := limit(typ)
	if max < 0 {
		return 0, nil, fmt.Errorf("%w: service frame of unexpected type %#x", secure.ErrMalformed, typ)
	}
	if uint64(n) > uint64(max) {
		return 0, nil, fmt.Errorf("%w: service frame of type %#x and %d bytes, at most %d", secure.ErrMalformed, typ, n, max)
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return typ, body, nil
}

// AppendRefusal appends the body of a refusal for err: the code of the
// first sentinel err wraps (ErrAuthorityUnavailable if none) and reason,
// cut to MaxReason bytes at a rune boundary.
func AppendRefusal(b []byte, err error, reason string) []byte {
	code := len(refusalCodes) // ErrAuthorityUnavailable
	for i, sentinel := range refusalCodes {
		if errors.Is(err, sentinel) {
			code = i + 1
			break
		}
	}
	reason = strings.ToValidUTF8(reason, "?")
	for len(reason) > secure.MaxReason {
		_, size := utf8.DecodeLastRuneInString(reason)
		reason = reason[:len(reason)-size]
	}
	return append(append(b, byte(code)), reason...)
}

// ParseRefusal returns the error a refusal body stands for: it wraps the
// sentinel of its code, and quotes the service's reason.
func ParseRefusal(body []byte) error {
	if len(body) == 0 || len(body) > 1+secure.MaxReason || !utf8.Valid(body[1:]) {
		return fmt.Errorf("%w: refusal of %d bytes", secure.ErrMalformed, len(body))
	}
	code, reason := int(body[0]), string(body[1:])
	if code == 0 || code > len(refusalCodes) {
		return fmt.Errorf("authority refused (code %d): %q", code, reason)
	}
	return fmt.Errorf("authority refused: %q: %w", reason, refusalCodes[code-1])
}

// FetchBundle asks the service on rw for its bundle and parses it (which
// checks its signature); the caller verifies it (Bundle.Verify).
func FetchBundle(rw io.ReadWriter) (*enroll.Bundle, error) {
	body, err := serviceCall(rw, ServiceBundle, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle: %w", err)
	}
	return enroll.ParseBundle(body)
}

// SubmitEnrollment sends an enrollment request on rw and returns the
// answer, or the service's refusal (see ParseRefusal).
func SubmitEnrollment(rw io.ReadWriter, request []byte) ([]byte, error) {
	if len(request) > enroll.RequestSizeOneTime {
		return nil, fmt.Errorf("secure: enrollment request of %d bytes", len(request))
	}
	body, err := serviceCall(rw, ServiceEnroll, request)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return body, nil
}

// FetchRevocationList asks the service on rw for the authority's current
// revocation list and parses it; it returns nil, nil for an empty reply
// (a service older than the rule that it always serves a signed list). That
// reply is not signed: a caller must not take it as "nobody is revoked"
// (docs/PROTOCOL.md §14.7). The list's issuer and signature are for a
// Verifier to check.
func FetchRevocationList(rw io.ReadWriter) (*secure.RevocationList, error) {
	body, err := serviceCall(rw, ServiceRevocationList, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch revocation list: %w", err)
	}
	if len(body) == 0 {
		return nil, nil
	}
	return secure.ParseRevocationList(body)
}

// serviceCall sends one request and reads its reply or refusal.
func serviceCall(rw io.ReadWriter, op byte, body []byte) ([]byte, error) {
	if err := WriteServiceFrame(rw, op, body); err != nil {
		return nil, err
	}
	typ, reply, err := ReadServiceFrame(rw, func(typ byte) int {
		if typ != op|ServiceReply && typ != ServiceRefusal {
			return -1
		}
		return ServiceBodyLimit(typ)
	})
	if err != nil {
		return nil, err
	}
	if typ == ServiceRefusal {
		return nil, ParseRefusal(reply)
	}
	return reply, nil
}
