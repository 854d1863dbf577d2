package secure

import (
	"bytes"
	"encoding/pem"
	"fmt"
)

// PEM block types of the files this package reads and writes
// (docs/PROTOCOL.md, "Files").
const (
	pemIdentity       = "OCKAM IDENTITY"
	pemCredential     = "OCKAM CREDENTIAL"
	pemRevocationList = "OCKAM REVOCATION LIST"
)

// maxFileSize bounds every file this package parses; the largest is a
// revocation list of MaxRevocationEntries subjects, base64-encoded.
const maxFileSize = 2 * maxRevocationListSize

// armor encodes der as a PEM block of the given type.
func armor(blockType string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
}

// unarmor decodes a file that holds exactly one PEM block of blockType,
// without headers, and nothing else but surrounding whitespace.
func unarmor(blockType string, data []byte) ([]byte, error) {
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: file of %d bytes is larger than %d", ErrMalformed, len(data), maxFileSize)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, fmt.Errorf("%w: not a PEM file (want -----BEGIN %s-----)", ErrMalformed, blockType)
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, fmt.Errorf("%w: bad PEM encoding", ErrMalformed)
	}
	if block.Type != blockType {
		return nil, fmt.Errorf("%w: file holds %q, want %q", ErrMalformed, block.Type, blockType)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("%w: PEM headers are not allowed", ErrMalformed)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrMalformed)
	}
	return block.Bytes, nil
}

// MaxFileSize bounds every file of this module's PEM forms.
const MaxFileSize = maxFileSize

// MaxRevocationListSize is the size of the largest revocation list
// (MaxRevocationEntries subjects).
const MaxRevocationListSize = maxRevocationListSize

// Armor returns der as a PEM block of blockType (docs/PROTOCOL.md, "Files").
func Armor(blockType string, der []byte) []byte { return armor(blockType, der) }

// Unarmor decodes a file that holds exactly one PEM block of blockType,
// without headers and with nothing but whitespace around it; anything else
// is ErrMalformed. data is at most MaxFileSize bytes.
func Unarmor(blockType string, data []byte) ([]byte, error) { return unarmor(blockType, data) }
