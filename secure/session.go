package secure

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/flynn/noise"
)

// Key limits (docs/PROTOCOL.md, "Rekey"). A sender starts using the next
// key (Noise REKEY, announced by a rekey message) after the soft limits; a
// receiver closes a channel whose peer passed a hard limit without a rekey.
// With these limits a key never comes near Noise's 2^64 nonce space.
const (
	RekeyAfterMessages  = 1 << 20
	RejectAfterMessages = 2 * RekeyAfterMessages
	RekeyAfterTime      = 10 * time.Minute
	RejectAfterTime     = 3 * RekeyAfterTime
)

// Session holds the keys of an established channel: one cipher state per
// direction. Seal is used by one goroutine at a time, and so is Open.
type Session struct {
	peer    *Peer
	binding []byte

	send, recv           *noise.CipherState
	sent, received       uint64    // messages under the current key
	sendSince, recvSince time.Time // when the current key was taken
	rekeyAfterMessages   uint64    // RekeyAfterMessages, lowered by tests
}

func newSession(send, recv *noise.CipherState, peer *Peer, binding []byte) *Session {
	now := time.Now()
	return &Session{
		peer: peer, binding: append([]byte(nil), binding...),
		send: send, recv: recv, sendSince: now, recvSince: now,
		rekeyAfterMessages: RekeyAfterMessages,
	}
}

// Format prints the session without its keys, for every verb: through %s,
// fmt would print the cipher states, keys included.
func (s *Session) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "secure.Session(peer %s, keys redacted)", s.peer.Identifier.Short())
}

// LogValue makes slog print what Format prints.
func (s *Session) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(s)) }

// Peer returns the verified peer.
func (s *Session) Peer() *Peer { return s.peer }

// ChannelBinding returns the Noise handshake hash, equal on both ends.
func (s *Session) ChannelBinding() []byte { return append([]byte(nil), s.binding...) }

// needRekey reports whether the send key passed a soft limit.
func (s *Session) needRekey(now time.Time) bool {
	return s.sent >= s.rekeyAfterMessages || now.Sub(s.sendSince) >= RekeyAfterTime
}

// seal encrypts one plaintext under the current send key.
func (s *Session) seal(dst, plaintext []byte) ([]byte, error) {
	out, err := s.send.Encrypt(dst, nil, plaintext)
	if err != nil {
		return nil, fmt.Errorf("secure: encrypt: %v", err)
	}
	s.sent++
	return out, nil
}

// rekeySend switches to the next send key, after a rekey message went out.
func (s *Session) rekeySend(now time.Time) {
	s.send.Rekey()
	s.sent, s.sendSince = 0, now
}

// open decrypts one transport message. A failure is fatal to the channel:
// flynn/noise does not advance the nonce on a failed Decrypt, and on an
// ordered carrier nothing after a bad message can be trusted.
func (s *Session) open(dst, ciphertext []byte, now time.Time) ([]byte, error) {
	if s.received >= RejectAfterMessages {
		return nil, fmt.Errorf("%w: peer did not rekey in time", ErrHandshake)
	}
	out, err := s.recv.Decrypt(dst, nil, ciphertext)
	if err != nil {
		return nil, ErrDecrypt
	}
	s.received++
	// The clock runs while the peer is idle too, and a sender checks its
	// soft limit only when it sends: after a long pause its first message
	// is a rekey, under the old key, and must get through.
	if now.Sub(s.recvSince) >= RejectAfterTime && !isRekey(out) {
		return nil, fmt.Errorf("%w: peer did not rekey in time", ErrHandshake)
	}
	return out, nil
}

// isRekey reports whether a transport plaintext is a rekey message.
func isRekey(plaintext []byte) bool {
	return len(plaintext) == rekeyMessageLen && plaintext[0] == byte(TypeRekey)
}

// rekeyRecv switches to the peer's next key, after its rekey message.
func (s *Session) rekeyRecv(now time.Time) {
	s.recv.Rekey()
	s.received, s.recvSince = 0, now
}
