package vault

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/scrypt"
)

// A key file holds one 32-byte private key, plain or sealed with a
// passphrase (docs/PROTOCOL.md, "Vault files"):
//
//	plain (39 bytes)
//	+--------+-----+------+-----+-----------+
//	| "OCKV" | 0x01| kind | 0x00| key (32)  |
//	+--------+-----+------+-----+-----------+
//	 0        4     5      6     7         39
//
//	encrypted (96 bytes)
//	+--------+-----+------+-----+------+-----------+------------+--------------------------+
//	| "OCKV" | 0x01| kind | 0x01| logN | salt (16) | nonce (24) | sealed key (32 + tag 16) |
//	+--------+-----+------+-----+------+-----------+------------+--------------------------+
//	 0        4     5      6     7      8           24           48                       96
//
// In the encrypted form bytes 0..48 are the AEAD additional data, so the kind,
// KDF parameters, salt and nonce are all authenticated.
const (
	keyFileMagic    = "OCKV"
	keyFileVersion  = 0x01
	kindEd25519     = 0x01 // Ed25519 seed (RFC 8032)
	kindX25519      = 0x02 // X25519 scalar (RFC 7748)
	encNone         = 0x00
	encScrypt       = 0x01 // scrypt + XChaCha20-Poly1305
	keySize         = 32
	saltSize        = 16
	plainFileSize   = 7 + keySize                                           // 39
	sealedHeaderLen = 8 + saltSize + chacha20poly1305.NonceSizeX            // 48
	sealedFileSize  = sealedHeaderLen + keySize + chacha20poly1305.Overhead // 96

	// scrypt costs 2^logN (r=8, p=1) blocks of 1 KiB: 2^15 is 32 MiB and
	// about 0.1s (0.15s on a 2-core CI runner).
	defaultLogN = 15
	// A key file may come from anyone, so bound the work it can order:
	// 2^20 is 1 GiB and 1 to 7s; below 2^10 (1 MiB, ~5ms) is no real KDF.
	minLogN = 10
	maxLogN = 20
)

var (
	errMalformed    = errors.New("malformed key file")
	errLogN         = errors.New("scrypt work factor out of range")
	errNotEncrypted = errors.New("key is not encrypted but a passphrase is set")
)

// keyFile is a parsed key file. It holds the key itself only in plain form.
type keyFile struct {
	kind      byte
	encrypted bool
	key       [keySize]byte // plain only
	logN      byte
	salt      [saltSize]byte
	nonce     [chacha20poly1305.NonceSizeX]byte
	sealed    [keySize + chacha20poly1305.Overhead]byte
}

// parseKeyFile decodes b strictly: the exact length for its form, known
// version, kind and encryption bytes, logN in minLogN..maxLogN, nothing after.
// It does not run the KDF; see open.
func parseKeyFile(b []byte) (*keyFile, error) {
	if len(b) < 7 || string(b[:4]) != keyFileMagic {
		return nil, fmt.Errorf("%w: not a vault key file (no %q header)", errMalformed, keyFileMagic)
	}
	if b[4] != keyFileVersion {
		return nil, fmt.Errorf("%w: unknown version %d", errMalformed, b[4])
	}
	k := &keyFile{kind: b[5]}
	if k.kind != kindEd25519 && k.kind != kindX25519 {
		return nil, fmt.Errorf("%w: unknown key kind %d", errMalformed, k.kind)
	}
	switch b[6] {
	case encNone:
		if len(b) != plainFileSize {
			return nil, fmt.Errorf("%w: plain key file is %d bytes, want %d", errMalformed, len(b), plainFileSize)
		}
		copy(k.key[:], b[7:])
	case encScrypt:
		if len(b) != sealedFileSize {
			return nil, fmt.Errorf("%w: encrypted key file is %d bytes, want %d", errMalformed, len(b), sealedFileSize)
		}
		k.encrypted = true
		k.logN = b[7]
		if k.logN < minLogN || k.logN > maxLogN {
			return nil, fmt.Errorf("%w: %w: logN %d, want %d to %d", errMalformed, errLogN, k.logN, minLogN, maxLogN)
		}
		copy(k.salt[:], b[8:])
		copy(k.nonce[:], b[8+saltSize:])
		copy(k.sealed[:], b[sealedHeaderLen:])
	default:
		return nil, fmt.Errorf("%w: unknown encryption %d", errMalformed, b[6])
	}
	return k, nil
}

// marshal encodes k; for any b that parseKeyFile accepts,
// parseKeyFile(b).marshal() equals b.
func (k *keyFile) marshal() []byte {
	b := make([]byte, 0, sealedFileSize)
	b = append(b, keyFileMagic...)
	b = append(b, keyFileVersion, k.kind)
	if !k.encrypted {
		b = append(b, encNone)
		return append(b, k.key[:]...)
	}
	b = append(b, encScrypt, k.logN)
	b = append(b, k.salt[:]...)
	b = append(b, k.nonce[:]...)
	return append(b, k.sealed[:]...)
}

// header returns the AEAD additional data: everything before the sealed key.
func (k *keyFile) header() []byte { return k.marshal()[:sealedHeaderLen] }

// newKeyFile builds the file for key: plain if passphrase is empty, else
// sealed with a fresh random salt and nonce and scrypt cost 2^logN.
func newKeyFile(kind byte, key *[keySize]byte, passphrase []byte, logN byte) *keyFile {
	k := &keyFile{kind: kind}
	if len(passphrase) == 0 {
		k.key = *key
		return k
	}
	k.encrypted, k.logN = true, logN
	rand.Read(k.salt[:]) // never fails (Go 1.24+)
	rand.Read(k.nonce[:])
	k.seal(key, passphrase)
	return k
}

// seal encrypts key into k.sealed with k's logN, salt and nonce.
func (k *keyFile) seal(key *[keySize]byte, passphrase []byte) {
	k.aead(passphrase).Seal(k.sealed[:0], k.nonce[:], key[:], k.header())
}

// open returns the key. For a sealed file it derives the key-encryption key
// from passphrase, which costs 2^logN scrypt work. A sealed file with no
// passphrase, and any failure to open, give ErrPassphrase itself (one opaque
// error: a wrong passphrase and a modified file look the same). A plain file
// with a passphrase gives errNotEncrypted.
func (k *keyFile) open(passphrase []byte) ([keySize]byte, error) {
	var key [keySize]byte
	switch {
	case !k.encrypted && len(passphrase) != 0:
		return key, errNotEncrypted
	case !k.encrypted:
		return k.key, nil
	case len(passphrase) == 0:
		return key, ErrPassphrase
	}
	aead := k.aead(passphrase)
	if _, err := aead.Open(key[:0], k.nonce[:], k.sealed[:], k.header()); err != nil {
		clear(key[:])
		return key, ErrPassphrase
	}
	return key, nil
}

// aead derives the key-encryption key with scrypt(passphrase, salt, 2^logN,
// r=8, p=1) and returns XChaCha20-Poly1305 keyed with it.
func (k *keyFile) aead(passphrase []byte) cipher.AEAD {
	kek, err := scrypt.Key(passphrase, k.salt[:], 1<<k.logN, 8, 1, chacha20poly1305.KeySize)
	if err != nil {
		panic("vault: internal error: " + err.Error()) // parameters are checked
	}
	defer clear(kek)
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		panic("vault: internal error: " + err.Error())
	}
	return aead
}
