// Package relay carries end-to-end encrypted channels across relays, so that
// a listener behind NAT, which no device can reach, connects out to a relay,
// registers a forwarding name there, and devices reach it through a route
// such as ["tcp://relay-a:4000", "tcp://relay-b:4000", "plant-7-gateway"].
// Relays read only routing headers and forward opaque bytes: the channel
// (secure.Dial, secure.Accept) runs end to end over the net.Conn of a
// session. The wire protocol is docs/PROTOCOL.md, section 15, "Routes and
// relays".
package relay

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"

	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

// Every TCP connection to a relay carries frames:
//
//	+-----------+---------+------+---------------------+
//	| u32 len   | u8 ver  | u8   | body of the type    |
//	| (of rest) | = 1     | type |                     |
//	+-----------+---------+------+---------------------+
//
// ROUTE and ERROR bodies: onward route, return route, payload (the rest).
// A route: u8 hop count, then per hop u8 length and the hop's bytes.
const (
	// MaxFrame bounds the length field: a ROUTE of the largest payload
	// with two full routes is under 74 KiB; 128 KiB leaves room.
	MaxFrame = 128 << 10
	// MaxHops bounds each route of a frame: a relay drops a frame whose
	// return route would grow past it (a loop between relays ends there).
	MaxHops = 16
	// MaxPayload is the largest payload of a ROUTE: one message of msgconn.
	MaxPayload = msgconn.DefaultMaxPayload
	// MaxReason bounds the reason of an ERROR and of a REFUSED.
	MaxReason = 512

	version       = 1
	challengeSize = 32
	maxHop        = 255
)

// frameType is the type byte of a frame.
type frameType uint8

// Frame types.
const (
	typeRoute         frameType = 1
	typeError         frameType = 2
	typeRegisterBegin frameType = 3
	typeChallenge     frameType = 4
	typeRegister      frameType = 5
	typeRegistered    frameType = 6
	typeRefused       frameType = 7
	typePing          frameType = 8
	typePong          frameType = 9
)

var typeNames = map[frameType]string{
	typeRoute: "ROUTE", typeError: "ERROR", typeRegisterBegin: "REGISTER_BEGIN", typeChallenge: "CHALLENGE",
	typeRegister: "REGISTER", typeRegistered: "REGISTERED", typeRefused: "REFUSED", typePing: "PING", typePong: "PONG",
}

func (t frameType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// errProtocol is wrapped by every error of a malformed frame.
var errProtocol = errors.New("relay: protocol error")

func protoErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errProtocol}, args...)...)
}

// frame is one decoded frame. Which fields are used depends on Type:
// ROUTE: Onward, Return, Payload; ERROR: Onward, Return, Payload (the
// reason); CHALLENGE: Payload (32 bytes); REGISTER: Name, Key, Credential,
// Signature; REGISTERED: Name; REFUSED: Payload (the reason).
type frame struct {
	Type       frameType
	Onward     []string
	Return     []string
	Payload    []byte
	Name       string
	Key        ed25519.PublicKey
	Credential []byte
	Signature  []byte
}

// appendFrame appends the encoding of f, length prefix included, to b. f
// must be valid (parseFrame would accept its body): the relay and the
// endpoints only encode frames they checked or built.
func appendFrame(b []byte, f *frame) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, version, byte(f.Type))
	switch f.Type {
	case typeRoute, typeError:
		b = appendRoute(b, f.Onward)
		b = appendRoute(b, f.Return)
		b = append(b, f.Payload...)
	case typeChallenge, typeRefused:
		b = append(b, f.Payload...)
	case typeRegister:
		b = append(b, byte(len(f.Name)))
		b = append(b, f.Name...)
		b = append(b, f.Key...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(f.Credential)))
		b = append(b, f.Credential...)
		b = append(b, f.Signature...)
	case typeRegistered:
		b = append(b, byte(len(f.Name)))
		b = append(b, f.Name...)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendRoute(b []byte, hops []string) []byte {
	b = append(b, byte(len(hops)))
	for _, h := range hops {
		b = append(b, byte(len(h)))
		b = append(b, h...)
	}
	return b
}

// readFrame reads one frame from r: the length, checked against MaxFrame
// before anything is allocated, then the body.
func readFrame(r io.Reader) (*frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return nil, protoErrorf("frame length %d, want 1..%d", n, MaxFrame)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return parseFrame(body)
}

// parseFrame decodes the body of a frame (what follows the length),
// strictly: known version and type, exact lengths, valid hops, no trailing
// bytes. Every error wraps errProtocol.
func parseFrame(body []byte) (*frame, error) {
	if len(body) > MaxFrame {
		return nil, protoErrorf("frame of %d bytes is larger than %d", len(body), MaxFrame)
	}
	if len(body) < 2 {
		return nil, protoErrorf("frame of %d bytes has no version and type", len(body))
	}
	if body[0] != version {
		return nil, protoErrorf("version %d, want %d", body[0], version)
	}
	f := &frame{Type: frameType(body[1])}
	d := decoder{b: body[2:]}
	switch f.Type {
	case typeRoute, typeError:
		f.Onward = d.route("onward")
		f.Return = d.route("return")
		f.Payload = d.rest()
		if d.err == nil {
			d.err = checkPayload(f)
		}
	case typeRegisterBegin, typePing, typePong:
	case typeChallenge:
		f.Payload = d.bytes(challengeSize, "challenge")
	case typeRegister:
		f.Name = d.name()
		f.Key = ed25519.PublicKey(d.bytes(ed25519.PublicKeySize, "identity key"))
		f.Credential = d.bytes(int(d.u16("credential length")), "credential")
		f.Signature = d.bytes(ed25519.SignatureSize, "signature")
	case typeRegistered:
		f.Name = d.name()
	case typeRefused:
		f.Payload = d.rest()
		if d.err == nil {
			d.err = checkReason(f.Payload)
		}
	default:
		return nil, protoErrorf("unknown frame type %d", body[1])
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = protoErrorf("%d trailing bytes after %v", len(d.b), f.Type)
	}
	if d.err != nil {
		return nil, d.err
	}
	return f, nil
}

// checkPayload checks the payload of a ROUTE or an ERROR.
func checkPayload(f *frame) error {
	if f.Type == typeError {
		return checkReason(f.Payload)
	}
	if len(f.Payload) == 0 || len(f.Payload) > MaxPayload {
		return protoErrorf("ROUTE payload of %d bytes, want 1..%d", len(f.Payload), MaxPayload)
	}
	return nil
}

// checkReason checks the reason of an ERROR or a REFUSED: UTF-8 text of at
// most MaxReason bytes without control characters (it ends up in logs).
func checkReason(r []byte) error {
	if len(r) > MaxReason {
		return protoErrorf("reason of %d bytes is longer than %d", len(r), MaxReason)
	}
	if !utf8.Valid(r) {
		return protoErrorf("reason is not UTF-8")
	}
	for _, c := range string(r) {
		if unicode.IsControl(c) {
			return protoErrorf("reason holds the control character %U", c)
		}
	}
	return nil
}

// reason makes s a valid reason: control characters become spaces, and it
// is cut to MaxReason bytes on a character boundary.
func reason(s string) []byte {
	b := []byte(sanitize(s))
	for len(b) > MaxReason {
		_, n := utf8.DecodeLastRune(b)
		b = b[:len(b)-n]
	}
	return b
}

// sanitize replaces control characters and invalid UTF-8 in s by spaces.
func sanitize(s string) string {
	out := make([]rune, 0, len(s))
	for _, c := range s {
		if unicode.IsControl(c) || c == utf8.RuneError {
			c = ' '
		}
		out = append(out, c)
	}
	return string(out)
}

// decoder reads the fields of a body, keeping the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = protoErrorf("%s: %d bytes left, want %d", what, len(d.b), n)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8(what string) int {
	b := d.bytes(1, what)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (d *decoder) u16(what string) uint16 {
	b := d.bytes(2, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	v := d.b
	d.b = nil
	return v
}

// route reads a route and checks each hop.
func (d *decoder) route(what string) []string {
	n := d.u8(what + " hop count")
	if d.err == nil && n > MaxHops {
		d.err = protoErrorf("%s route of %d hops, at most %d", what, n, MaxHops)
	}
	if d.err != nil || n == 0 {
		return nil
	}
	hops := make([]string, 0, n)
	for i := range n {
		l := d.u8(what + " hop length")
		if d.err == nil && l == 0 {
			d.err = protoErrorf("%s hop %d is empty", what, i)
		}
		h := string(d.bytes(l, what+" hop"))
		if d.err != nil {
			return nil
		}
		if _, err := parseHop(h); err != nil {
			d.err = protoErrorf("%s hop %d: %v", what, i, err)
			return nil
		}
		hops = append(hops, h)
	}
	return hops
}

// name reads a length-prefixed forwarding name and checks it.
func (d *decoder) name() string {
	n := string(d.bytes(d.u8("name length"), "name"))
	if d.err == nil {
		if err := checkName(n); err != nil {
			d.err = protoErrorf("%v", err)
		}
	}
	return n
}
