package secure

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// MessageType is the first byte of every transport message's plaintext.
type MessageType uint8

// Message types (docs/PROTOCOL.md, "Transport messages"):
//
//	data   1 | batch u64 | flags u8 (bit 0: more fragments follow) | payload
//	ack    2 | batch u64
//	nack   3 | batch u64 | kind u8 (1 permanent, 2 transient) | reason (UTF-8)
//	close  4 | reason (UTF-8)
//	rekey  5                      (the sender's next message uses the next key)
//	accept 6                      (the listener's first message: the channel is open)
//	refuse 7 | code u8 | reason   (the listener's first and last message instead)
//
// and those of control instructions (section 17.5), which only a device
// that opted in with ready and a gateway configured for control exchange:
//
//	ready       8  | kinds u8 (bits 0..2) | max chunk bytes u32 (1..MaxChunkData)  device → gateway
//	instruction 9  | instruction (section 17.1)                                     gateway → device
//	chunk       10 | [16] instruction id | offset u64 | flags u8 (bit 0: last) | data  gateway → device
//	outcome     11 | batch u64 | outcome body (section 17.5)                        device → gateway
const (
	TypeData   MessageType = 1
	TypeAck    MessageType = 2
	TypeNack   MessageType = 3
	TypeClose  MessageType = 4
	TypeRekey  MessageType = 5
	TypeAccept MessageType = 6
	TypeRefuse MessageType = 7
	// TypeReady is control-ready: the device applies instructions of
	// Message.Kinds, artifact chunks of at most Message.MaxChunk bytes.
	TypeReady MessageType = 8
	// TypeInstruction carries one signed instruction in Payload.
	TypeInstruction MessageType = 9
	// TypeChunk carries one chunk of an artifact: Payload is its body
	// after the type byte (id, offset, flags, data), checked for form.
	TypeChunk MessageType = 10
	// TypeOutcome carries a device's answer to one instruction: Batch, and
	// the outcome body (control.ParseOutcome) in Payload.
	TypeOutcome MessageType = 11
)

// Bounds of the control messages.
const (
	// ChunkHeaderSize is the chunk body before its data: id, offset, flags.
	ChunkHeaderSize = 16 + 8 + 1
	// MaxChunkData is the most data one chunk message carries.
	MaxChunkData = MaxPlaintext - 1 - ChunkHeaderSize
	// ReadyKinds are the kind bits a ready message may set.
	ReadyKinds = 0b111
	// chunkLast is the chunk flag of an artifact's last chunk.
	chunkLast = 1
	// minOutcomeBody is control's fixed outcome part: id, operator,
	// sequence, result, code.
	minOutcomeBody = 16 + 32 + 8 + 1 + 1
	readyLen       = 1 + 1 + 4
)

// String returns the type's name.
func (t MessageType) String() string {
	switch t {
	case TypeData:
		return "data"
	case TypeAck:
		return "ack"
	case TypeNack:
		return "nack"
	case TypeClose:
		return "close"
	case TypeRekey:
		return "rekey"
	case TypeAccept:
		return "accept"
	case TypeRefuse:
		return "refuse"
	case TypeReady:
		return "ready"
	case TypeInstruction:
		return "instruction"
	case TypeChunk:
		return "chunk"
	case TypeOutcome:
		return "outcome"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

const (
	// MaxPlaintext is the largest plaintext of one Noise transport message.
	MaxPlaintext = MaxNoiseMessage - 16
	// MaxReason bounds the reason text of nack and close messages.
	MaxReason = 1024
	// DefaultMaxMessageSize is the default bound on a reassembled data
	// payload (the sum of its fragments).
	DefaultMaxMessageSize = 4 << 20

	dataHeaderSize  = 1 + 8 + 1
	maxFragment     = MaxPlaintext - dataHeaderSize
	flagMore        = 1
	nackPermanent   = 1
	nackTransient   = 2
	ackMessageSize  = 1 + 8
	nackHeaderSize  = 1 + 8 + 1
	rekeyMessageLen = 1
	acceptLen       = 1
	refuseHeader    = 1 + 1
)

// Message is one transport message after reassembly.
type Message struct {
	Type MessageType
	// Batch identifies a data message and the ack or nack that answers it.
	Batch uint64
	// Payload is the data (line protocol for telegraf-ockam).
	Payload []byte
	// Permanent marks a nack that retrying cannot fix (policy, revocation);
	// a transient nack asks the sender to retry later.
	Permanent bool
	// Reason explains a nack, close or refuse, in UTF-8, at most MaxReason
	// bytes.
	Reason string
	// Code says why a refuse message refused the channel.
	Code RefusalCode
	// TooLarge is set by Receive on a data message whose reassembled
	// payload would exceed the bound (HandshakeConfig.MaxMessageSize): its fragments were
	// read to the last and discarded, and Payload is nil. The channel stays
	// usable; the receiver answers with a permanent nack. Send ignores it.
	TooLarge bool
	// Kinds (ready only) are the instruction kinds the device applies, bit
	// 0 config, bit 1 artifact, bit 2 command.
	Kinds uint8
	// MaxChunk (ready only) bounds the data of each chunk sent to the
	// device, 1..MaxChunkData.
	MaxChunk uint32
}

// appendFragment appends the plaintext of one data fragment.
func appendFragment(b []byte, batch uint64, more bool, payload []byte) []byte {
	b = append(b, byte(TypeData))
	b = binary.BigEndian.AppendUint64(b, batch)
	flags := byte(0)
	if more {
		flags = flagMore
	}
	return append(append(b, flags), payload...)
}

// appendControl appends the plaintext of a non-data message.
func appendControl(b []byte, m Message) ([]byte, error) {
	if len(m.Reason) > MaxReason || !utf8.ValidString(m.Reason) {
		return nil, fmt.Errorf("secure: reason must be UTF-8 of at most %d bytes", MaxReason)
	}
	b = append(b, byte(m.Type))
	switch m.Type {
	case TypeAck:
		return binary.BigEndian.AppendUint64(b, m.Batch), nil
	case TypeNack:
		b = binary.BigEndian.AppendUint64(b, m.Batch)
		kind := byte(nackTransient)
		if m.Permanent {
			kind = nackPermanent
		}
		return append(append(b, kind), m.Reason...), nil
	case TypeClose:
		return append(b, m.Reason...), nil
	case TypeRekey, TypeAccept:
		return b, nil
	case TypeReady:
		if m.Kinds&^ReadyKinds != 0 || m.MaxChunk < 1 || m.MaxChunk > MaxChunkData {
			return nil, fmt.Errorf("secure: ready with kinds %#x and max chunk %d", m.Kinds, m.MaxChunk)
		}
		return binary.BigEndian.AppendUint32(append(b, m.Kinds), m.MaxChunk), nil
	case TypeInstruction:
		if len(m.Payload) == 0 || len(m.Payload) > MaxPlaintext-1 {
			return nil, fmt.Errorf("secure: instruction of %d bytes", len(m.Payload))
		}
		return append(b, m.Payload...), nil
	case TypeChunk:
		if err := checkChunk(m.Payload); err != nil {
			return nil, err
		}
		return append(b, m.Payload...), nil
	case TypeOutcome:
		if len(m.Payload) < minOutcomeBody || len(m.Payload) > MaxPlaintext-9 {
			return nil, fmt.Errorf("secure: outcome body of %d bytes", len(m.Payload))
		}
		return append(binary.BigEndian.AppendUint64(b, m.Batch), m.Payload...), nil
	case TypeRefuse:
		if !m.Code.valid() {
			return nil, fmt.Errorf("secure: cannot encode refusal code %d", m.Code)
		}
		return append(append(b, byte(m.Code)), m.Reason...), nil
	}
	return nil, fmt.Errorf("secure: cannot encode message type %v", m.Type)
}

// fragment is one decoded transport plaintext.
type fragment struct {
	Message
	more bool // data only: more fragments of this batch follow
}

// parsePlaintext decodes one transport plaintext strictly. A data
// fragment's payload aliases p.
func parsePlaintext(p []byte) (fragment, error) {
	if len(p) == 0 {
		return fragment{}, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	f := fragment{Message: Message{Type: MessageType(p[0])}}
	switch f.Type {
	case TypeData:
		if len(p) < dataHeaderSize {
			return f, fmt.Errorf("%w: data message of %d bytes", ErrMalformed, len(p))
		}
		f.Batch = binary.BigEndian.Uint64(p[1:9])
		switch p[9] {
		case 0:
		case flagMore:
			f.more = true
		default:
			return f, fmt.Errorf("%w: data flags %#x", ErrMalformed, p[9])
		}
		f.Payload = p[dataHeaderSize:]
	case TypeAck:
		if len(p) != ackMessageSize {
			return f, fmt.Errorf("%w: ack message of %d bytes", ErrMalformed, len(p))
		}
		f.Batch = binary.BigEndian.Uint64(p[1:9])
	case TypeNack:
		if len(p) < nackHeaderSize {
			return f, fmt.Errorf("%w: nack message of %d bytes", ErrMalformed, len(p))
		}
		f.Batch = binary.BigEndian.Uint64(p[1:9])
		switch p[9] {
		case nackPermanent:
			f.Permanent = true
		case nackTransient:
		default:
			return f, fmt.Errorf("%w: nack kind %d", ErrMalformed, p[9])
		}
		if err := setReason(&f.Message, p[nackHeaderSize:]); err != nil {
			return f, err
		}
	case TypeClose:
		if err := setReason(&f.Message, p[1:]); err != nil {
			return f, err
		}
	case TypeRekey:
		if len(p) != rekeyMessageLen {
			return f, fmt.Errorf("%w: rekey message of %d bytes", ErrMalformed, len(p))
		}
	case TypeAccept:
		if len(p) != acceptLen {
			return f, fmt.Errorf("%w: accept message of %d bytes", ErrMalformed, len(p))
		}
	case TypeRefuse:
		if len(p) < refuseHeader {
			return f, fmt.Errorf("%w: refuse message of %d bytes", ErrMalformed, len(p))
		}
		if f.Code = RefusalCode(p[1]); !f.Code.valid() {
			return f, fmt.Errorf("%w: refusal code %d", ErrMalformed, p[1])
		}
		if err := setReason(&f.Message, p[refuseHeader:]); err != nil {
			return f, err
		}
	case TypeReady:
		if len(p) != readyLen {
			return f, fmt.Errorf("%w: ready message of %d bytes", ErrMalformed, len(p))
		}
		f.Kinds, f.MaxChunk = p[1], binary.BigEndian.Uint32(p[2:])
		if f.Kinds&^ReadyKinds != 0 || f.MaxChunk < 1 || f.MaxChunk > MaxChunkData {
			return f, fmt.Errorf("%w: ready with kinds %#x and max chunk %d", ErrMalformed, f.Kinds, f.MaxChunk)
		}
	case TypeInstruction:
		if len(p) < 2 {
			return f, fmt.Errorf("%w: empty instruction message", ErrMalformed)
		}
		f.Payload = bytes.Clone(p[1:]) // p is a pooled buffer
	case TypeChunk:
		if err := checkChunk(p[1:]); err != nil {
			return f, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		f.Payload = bytes.Clone(p[1:])
	case TypeOutcome:
		if len(p) < 1+8+minOutcomeBody {
			return f, fmt.Errorf("%w: outcome message of %d bytes", ErrMalformed, len(p))
		}
		f.Batch = binary.BigEndian.Uint64(p[1:9])
		f.Payload = bytes.Clone(p[9:])
	default:
		return f, fmt.Errorf("%w: unknown message type %d", ErrMalformed, p[0])
	}
	return f, nil
}

// checkChunk checks the form of a chunk body: its header, and no flag but
// last.
func checkChunk(b []byte) error {
	if len(b) < ChunkHeaderSize || len(b) > ChunkHeaderSize+MaxChunkData {
		return fmt.Errorf("secure: chunk body of %d bytes", len(b))
	}
	if b[ChunkHeaderSize-1]&^chunkLast != 0 {
		return fmt.Errorf("secure: chunk flags %#x", b[ChunkHeaderSize-1])
	}
	return nil
}

// setReason checks and copies a reason text.
func setReason(m *Message, b []byte) error {
	if len(b) > MaxReason || !utf8.Valid(b) {
		return fmt.Errorf("%w: reason must be UTF-8 of at most %d bytes", ErrMalformed, MaxReason)
	}
	m.Reason = string(b)
	return nil
}

// maxDiscarded bounds the bytes of one data message that the reassembler
// reads and discards once it is over its bound: beyond, the sender is not
// sending a message but a stream, and the channel fails.
const maxDiscarded = 1 << 30

// reassembler joins the fragments of data messages, up to a bound. A
// message over the bound is read to its last fragment and discarded.
type reassembler struct {
	max       int
	pending   bool
	batch     uint64
	buf       []byte
	discarded int // bytes of the pending message, once it went over max
}

// add takes one fragment. It returns the whole message once the last
// fragment arrived (ok true); the payload is owned by the caller.
func (r *reassembler) add(f fragment) (m Message, ok bool, err error) {
	if f.Type != TypeData {
		if r.pending {
			return m, false, fmt.Errorf("%w: %v message inside the fragments of batch %d", ErrMalformed, f.Type, r.batch)
		}
		return f.Message, true, nil
	}
	if r.pending && f.Batch != r.batch {
		return m, false, fmt.Errorf("%w: fragment of batch %d inside batch %d", ErrMalformed, f.Batch, r.batch)
	}
	switch {
	case r.discarded > 0:
		r.discarded += len(f.Payload)
	case len(r.buf)+len(f.Payload) > r.max:
		r.discarded = len(r.buf) + len(f.Payload)
		r.buf = nil
	default:
		r.buf = append(r.buf, f.Payload...)
	}
	if r.discarded > maxDiscarded {
		return m, false, fmt.Errorf("%w: data message larger than %d bytes", ErrMalformed, maxDiscarded)
	}
	if f.more {
		r.pending, r.batch = true, f.Batch
		return m, false, nil
	}
	m = Message{Type: TypeData, Batch: f.Batch, Payload: r.buf, TooLarge: r.discarded > 0}
	r.pending, r.buf, r.discarded = false, nil, 0
	return m, true, nil
}
