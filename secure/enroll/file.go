package enroll

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Enrollment requests and answers travel in files for the offline flow
// (docs/PROTOCOL.md, "Enrollment files"): each is one PEM block, and a file
// holds one or more blocks of one type, so that files of many devices can
// be concatenated.

// MaxBatchFileEntries bounds the blocks of one request or answer file.
const MaxBatchFileEntries = 1 << 20

// MarshalRequestFile returns the PEM form of one enrollment request.
func MarshalRequestFile(request []byte) []byte { return secure.Armor(pemEnrollmentRequest, request) }

// MarshalAnswerFile returns the PEM form of one enrollment answer.
func MarshalAnswerFile(answer []byte) []byte { return secure.Armor(pemEnrollmentAnswer, answer) }

// ParseRequestFile returns the requests of a request file, in order. Each
// has the exact size of a request; its content is checked when it is opened.
func ParseRequestFile(data []byte) ([][]byte, error) {
	blocks, err := unarmorAll(pemEnrollmentRequest, data, RequestSizeOneTime)
	if err != nil {
		return nil, fmt.Errorf("enrollment request file: %w", err)
	}
	for i, b := range blocks {
		if len(b) != RequestSize && len(b) != RequestSizeOneTime {
			return nil, fmt.Errorf("enrollment request file: block %d: %w: %d bytes", i+1, secure.ErrMalformed, len(b))
		}
	}
	return blocks, nil
}

// ParseAnswerFile returns the answers of an answer file, in order.
func ParseAnswerFile(data []byte) ([][]byte, error) {
	blocks, err := unarmorAll(pemEnrollmentAnswer, data, MaxAnswerSize)
	if err != nil {
		return nil, fmt.Errorf("enrollment answer file: %w", err)
	}
	for i, b := range blocks {
		if _, err := AnswerRequestHash(b); err != nil {
			return nil, fmt.Errorf("enrollment answer file: block %d: %w", i+1, err)
		}
	}
	return blocks, nil
}

// unarmorAll decodes a file of one or more PEM blocks of blockType, without
// headers, each of at most maxBlock bytes, with nothing but whitespace
// around and between them.
func unarmorAll(blockType string, data []byte, maxBlock int) ([][]byte, error) {
	if len(data) > secure.MaxFileSize {
		return nil, fmt.Errorf("%w: file of %d bytes is larger than %d", secure.ErrMalformed, len(data), secure.MaxFileSize)
	}
	var blocks [][]byte
	rest := bytes.TrimLeft(data, " \t\r\n")
	for len(rest) > 0 {
		if len(blocks) == MaxBatchFileEntries {
			return nil, fmt.Errorf("%w: more than %d blocks", secure.ErrMalformed, MaxBatchFileEntries)
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: block %d: not a PEM block (want -----BEGIN %s-----)", secure.ErrMalformed, len(blocks)+1, blockType)
		}
		block, next := pem.Decode(rest)
		switch {
		case block == nil:
			return nil, fmt.Errorf("%w: block %d: bad PEM encoding", secure.ErrMalformed, len(blocks)+1)
		case block.Type != blockType:
			return nil, fmt.Errorf("%w: block %d holds %q, want %q", secure.ErrMalformed, len(blocks)+1, block.Type, blockType)
		case len(block.Headers) != 0:
			return nil, fmt.Errorf("%w: block %d: PEM headers are not allowed", secure.ErrMalformed, len(blocks)+1)
		case len(block.Bytes) > maxBlock:
			return nil, fmt.Errorf("%w: block %d of %d bytes is larger than %d", secure.ErrMalformed, len(blocks)+1, len(block.Bytes), maxBlock)
		}
		blocks = append(blocks, block.Bytes)
		rest = bytes.TrimLeft(next, " \t\r\n")
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%w: no %s block", secure.ErrMalformed, blockType)
	}
	return blocks, nil
}
