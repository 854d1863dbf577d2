package control

import (
	"encoding/binary"
	"fmt"
)

// ChunkHeaderSize is a chunk body before its data: the instruction id, the
// offset and the flags (docs/PROTOCOL.md, section 17.5).
const ChunkHeaderSize = 16 + 8 + 1

// chunkLast is the flag of an artifact's last chunk.
const chunkLast = 1

// Chunk is one piece of an artifact's bytes, the body of a chunk message:
//
//	[16] instruction id | u64 offset | u8 flags (bit 0: last) | data
type Chunk struct {
	ID     ID
	Offset uint64
	Last   bool
	Data   []byte
}

// ParseChunk decodes a chunk body; Data aliases b.
func ParseChunk(b []byte) (Chunk, error) {
	if len(b) < ChunkHeaderSize || b[ChunkHeaderSize-1]&^chunkLast != 0 {
		return Chunk{}, fmt.Errorf("%w: chunk of %d bytes", ErrMalformed, len(b))
	}
	var c Chunk
	copy(c.ID[:], b)
	c.Offset = binary.BigEndian.Uint64(b[16:24])
	c.Last = b[24]&chunkLast != 0
	c.Data = b[ChunkHeaderSize:]
	return c, nil
}

// AppendChunk appends the body of chunk c to b.
func AppendChunk(b []byte, c Chunk) []byte {
	b = append(b, c.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, c.Offset)
	var flags byte
	if c.Last {
		flags = chunkLast
	}
	return append(append(b, flags), c.Data...)
}
