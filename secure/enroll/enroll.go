package enroll

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Enrollment (docs/PROTOCOL.md, "Enrollment"): a device that holds the
// authority's identity file, its bundle and a token derives a key from
//
//	DH1 = X25519(device purpose key, signed prekey)
//	DH2 = X25519(device ephemeral key, signed prekey)
//	DH3 = X25519(device ephemeral key, one-time prekey)   (when one is used)
//
// and sends one request; the authority answers with the credential,
// encrypted to the device under a key that mixes in 32 random bytes of its
// own, sent with the answer: two answers to one request (a store restored
// from a backup, a re-sent answer) never share a key. Each key encrypts
// exactly one message, so the nonce is zero. The request:
//
//	 0     1                   33                 65      66              (98)
//	+-----+-------------------+------------------+-------+---------------+
//	| ver | authority id (32) | signed prekey(32)| flags | [OTPK (32)]   |   flags 1: OTPK present
//	+-----+-------------------+------------------+-------+---------------+
//	| device purpose key (32) | ephemeral key (32) | ciphertext (146+40+16) |
//	+-------------------------+--------------------+------------------------+
//
// The header (everything before the ciphertext) is the AEAD's associated
// data and, hashed, the HKDF salt: nothing in it can be changed, and the
// device's purpose key is in DH1, so a request cannot be re-targeted. The
// plaintext is the device's purpose-key attestation (146) and the token
// (40). The answer:
//
//	+-----+-------------------+-------------------+-----------------------------+
//	| ver | request hash (32) | answer salt (32)  | ciphertext (credential + 16) |
//	+-----+-------------------+-------------------+-----------------------------+
const (
	// RequestSize and RequestSizeOneTime are the exact sizes of a request
	// without and with a one-time prekey.
	RequestSize        = requestFixedHeader + requestCiphertextSize
	RequestSizeOneTime = RequestSize + 32
	// MaxAnswerSize is the largest answer: one with the largest credential.
	MaxAnswerSize = answerHeaderSize + secure.MaxCredentialSize + chacha20poly1305.Overhead

	// enrollVersion 2: the answer carries the authority's salt (version 1
	// derived the answer key from the request alone).
	enrollVersion         = 2
	flagOneTimePrekey     = 1
	requestFixedHeader    = 1 + secure.IdentifierSize + 32 + 1 + 32 + 32
	requestPlaintextSize  = secure.AttestationSize + TokenSize
	requestCiphertextSize = requestPlaintextSize + chacha20poly1305.Overhead
	answerSaltSize        = 32
	answerHeaderSize      = 1 + sha256.Size + answerSaltSize

	enrollSaltContext    = "telegraf-ockam enrollment v2\x00"
	enrollRequestInfo    = "telegraf-ockam enrollment v2 request"
	enrollAnswerInfo     = "telegraf-ockam enrollment v2 answer"
	answerKeyInfo        = "telegraf-ockam enrollment v2 answer key"
	requestHashContext   = "telegraf-ockam enrollment request v2\x00"
	pemBundle            = "OCKAM ENROLLMENT BUNDLE"
	pemEnrollmentRequest = "OCKAM ENROLLMENT REQUEST"
	pemEnrollmentAnswer  = "OCKAM ENROLLMENT ANSWER"
)

// Enrollment outcomes a caller acts on, besides ErrExpired, ErrRevoked,
// ErrBadSignature, ErrUnknownIssuer, ErrWrongSubject and ErrMalformed.
var (
	// ErrTokenUsed: the enrollment token was already used. A replayed
	// request, or a second device with the same token, gets this.
	ErrTokenUsed = errors.New("secure: enrollment token already used")
	// ErrUnknownToken: the authority never minted this token (or it was
	// purged after it expired).
	ErrUnknownToken = errors.New("secure: unknown enrollment token")
	// ErrWrongAuthority: the token or the request is for another authority.
	ErrWrongAuthority = errors.New("secure: enrollment token or request of another authority")
	// ErrUnknownPrekey: the request names a prekey the authority does not
	// hold (rotated away, expired and purged, or never issued).
	ErrUnknownPrekey = errors.New("secure: unknown enrollment prekey")
	// ErrPrekeyUsed: the one-time prekey was already used: a replayed
	// request, or a bundle shared by two devices.
	ErrPrekeyUsed = errors.New("secure: one-time prekey already used")
	// ErrAnswerMismatch: an answer is for another request.
	ErrAnswerMismatch = errors.New("secure: enrollment answer is for another request")
)

// requestHeader is the cleartext part of a request.
type requestHeader struct {
	authority                                    secure.Identifier
	signedPrekey, oneTime, purposeKey, ephemeral [32]byte
	hasOneTime                                   bool
}

func (h *requestHeader) append(b []byte) []byte {
	b = append(b, enrollVersion)
	b = append(b, h.authority[:]...)
	b = append(b, h.signedPrekey[:]...)
	if h.hasOneTime {
		b = append(b, flagOneTimePrekey)
		b = append(b, h.oneTime[:]...)
	} else {
		b = append(b, 0)
	}
	b = append(b, h.purposeKey[:]...)
	return append(b, h.ephemeral[:]...)
}

// parseRequestHeader decodes a request strictly and returns its header
// fields, the header bytes and the ciphertext.
func parseRequestHeader(request []byte) (h requestHeader, header, ciphertext []byte, err error) {
	if len(request) != RequestSize && len(request) != RequestSizeOneTime {
		return h, nil, nil, fmt.Errorf("%w: enrollment request of %d bytes, want %d or %d", secure.ErrMalformed, len(request), RequestSize, RequestSizeOneTime)
	}
	s := cryptobyte.String(request)
	var version, flags uint8
	if !s.ReadUint8(&version) || version != enrollVersion {
		return h, nil, nil, fmt.Errorf("%w: enrollment request version %d, want %d", secure.ErrMalformed, version, enrollVersion)
	}
	s.CopyBytes(h.authority[:])
	s.CopyBytes(h.signedPrekey[:])
	s.ReadUint8(&flags)
	switch {
	case flags == flagOneTimePrekey && len(request) == RequestSizeOneTime:
		h.hasOneTime = true
		s.CopyBytes(h.oneTime[:])
	case flags == 0 && len(request) == RequestSize:
	default:
		return h, nil, nil, fmt.Errorf("%w: enrollment request flags %#x in %d bytes", secure.ErrMalformed, flags, len(request))
	}
	s.CopyBytes(h.purposeKey[:])
	s.CopyBytes(h.ephemeral[:])
	n := len(request) - len(s)
	return h, request[:n], request[n:], nil
}

// dhPair is one X25519 of the key agreement: our key and the peer's.
type dhPair struct {
	key  vault.DH
	peer [32]byte
}

// deviceSecrets returns DH1 || DH2 [|| DH3] from the device's side.
func deviceSecrets(purpose, ephemeral vault.DH, h requestHeader) ([]byte, error) {
	pairs := []dhPair{{purpose, h.signedPrekey}, {ephemeral, h.signedPrekey}}
	if h.hasOneTime {
		pairs = append(pairs, dhPair{ephemeral, h.oneTime})
	}
	return concatDH(pairs)
}

// authoritySecrets returns DH1 || DH2 [|| DH3] from the authority's side.
func authoritySecrets(spk, otpk vault.DH, h requestHeader) ([]byte, error) {
	pairs := []dhPair{{spk, h.purposeKey}, {spk, h.ephemeral}}
	if otpk != nil {
		pairs = append(pairs, dhPair{otpk, h.ephemeral})
	}
	return concatDH(pairs)
}

// concatDH computes each pair's X25519 and returns the concatenation. A
// low-order peer key (an all-zero result) is refused.
func concatDH(pairs []dhPair) ([]byte, error) {
	out := make([]byte, 0, 3*32)
	for i, p := range pairs {
		shared, err := p.key.DH(p.peer)
		if err != nil {
			clear(out)
			return nil, fmt.Errorf("%w: enrollment DH%d: %v", secure.ErrMalformed, i+1, err)
		}
		out = append(out, shared[:]...)
		clear(shared[:])
	}
	return out, nil
}

// enrollmentKeys derives the request and answer keys:
//
//	salt = SHA-256(enrollSaltContext || header)
//	prk  = HKDF-Extract(SHA-256, salt, DH1 || DH2 [|| DH3])
//	request key = HKDF-Expand(prk, enrollRequestInfo, 32)
//	answer key  = HKDF-Expand(prk, enrollAnswerInfo, 32)
func enrollmentKeys(dh, header []byte) (requestKey, answerKey *[32]byte) {
	salt := sha256.Sum256(secure.SignedMessage(enrollSaltContext, header))
	prk, err := hkdf.Extract(sha256.New, dh, salt[:])
	if err != nil {
		panic("secure: internal error: " + err.Error())
	}
	defer clear(prk)
	expand := func(info string) *[32]byte { return key32(hkdf.Expand(sha256.New, prk, info, 32)) }
	return expand(enrollRequestInfo), expand(enrollAnswerInfo)
}

// answerKey derives the key of one answer from the request's answer key
// and the authority's salt:
//
//	key = HKDF-SHA-256(ikm = answer key, salt = answer salt, info = answerKeyInfo, 32)
func answerKey(requestAnswerKey *[32]byte, salt []byte) *[32]byte {
	return key32(hkdf.Key(sha256.New, requestAnswerKey[:], salt, answerKeyInfo, 32))
}

// key32 moves a 32-byte HKDF output into an array and clears k; an HKDF
// error (none is possible for 32 bytes of SHA-256) is an internal error.
func key32(k []byte, err error) *[32]byte {
	if err != nil {
		panic("secure: internal error: " + err.Error())
	}
	out := new([32]byte)
	copy(out[:], k)
	clear(k)
	return out
}

// sealOnce returns dst || ChaCha20-Poly1305(key, zero nonce, ad, plaintext).
// The zero nonce is safe because every key seals one message.
func sealOnce(key *[32]byte, dst, ad, plaintext []byte) []byte {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		panic("secure: internal error: " + err.Error())
	}
	var nonce [chacha20poly1305.NonceSize]byte
	return aead.Seal(slices.Clip(dst), nonce[:], plaintext, ad)
}

// openOnce opens what sealOnce sealed; any failure is an opaque ErrDecrypt.
func openOnce(key *[32]byte, ad, ciphertext []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		panic("secure: internal error: " + err.Error())
	}
	var nonce [chacha20poly1305.NonceSize]byte
	p, err := aead.Open(nil, nonce[:], ciphertext, ad)
	if err != nil {
		return nil, secure.ErrDecrypt
	}
	return p, nil
}

// RequestHash returns the hash that names a request in its answer:
// SHA-256("telegraf-ockam enrollment request v2" || 0x00 || request).
func RequestHash(request []byte) [32]byte { return requestHash(request) }

// requestHash names a request: SHA-256(requestHashContext || request).
func requestHash(request []byte) [32]byte {
	return sha256.Sum256(secure.SignedMessage(requestHashContext, request))
}
