package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sync"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// The sequence store file, docs/PROTOCOL.md, section 17.4:
//
//	u8    version = 1
//	u32   n, 0..MaxOperators
//	n × { [32] operator identifier | u64 last applied sequence, >= 1 }
//	      identifiers strictly ascending
const (
	// MaxOperators bounds the operators a store remembers. Only operators
	// the policy allows reach the store, so a real fleet has a handful.
	MaxOperators = 1 << 16

	storeVersion = 1
	storeEntry   = secure.IdentifierSize + 8
	maxStoreSize = 1 + 4 + MaxOperators*storeEntry
)

// SequenceStore keeps, per operator, the highest sequence number the device
// accepted, in a file written 0600 by a temporary file and a rename: after a
// restart an instruction is still applied at most once, and an older one
// never after a newer one. It is safe for concurrent use. Deleting the file
// forgets the sequences: the unexpired instructions of the last MaxLifetime
// could then be applied again, so keep it with the device's vault.
type SequenceStore struct {
	path string

	mu   sync.Mutex
	last map[secure.Identifier]uint64
}

// OpenSequenceStore reads the store at path, or starts an empty one if
// there is no file. It refuses a file that others may write (a rollback
// would be one edit away) and a malformed one.
func OpenSequenceStore(path string) (*SequenceStore, error) {
	s := &SequenceStore{path: path, last: map[secure.Identifier]uint64{}}
	data, err := ReadState(path, maxStoreSize)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control: sequence store: %w", err)
	}
	if s.last, err = parseStore(data); err != nil {
		return nil, fmt.Errorf("control: sequence store %s: %w", path, err)
	}
	return s, nil
}

// parseStore decodes the store file strictly.
func parseStore(b []byte) (map[secure.Identifier]uint64, error) {
	if len(b) > maxStoreSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(b), maxStoreSize)
	}
	s := cryptobyte.String(b)
	var version uint8
	var n uint32
	if !s.ReadUint8(&version) || version != storeVersion || !s.ReadUint32(&n) || n > MaxOperators || len(s) != int(n)*storeEntry {
		return nil, fmt.Errorf("%w: not a version %d sequence store", ErrMalformed, storeVersion)
	}
	last := make(map[secure.Identifier]uint64, n)
	var prev secure.Identifier
	for i := range int(n) {
		var id secure.Identifier
		var seq uint64
		s.CopyBytes(id[:])
		s.ReadUint64(&seq)
		if seq == 0 || i > 0 && bytes.Compare(id[:], prev[:]) <= 0 {
			return nil, fmt.Errorf("%w: entry %d", ErrMalformed, i)
		}
		last[id] = seq
		prev = id
	}
	return last, nil
}

// marshalStore encodes last.
func marshalStore(last map[secure.Identifier]uint64) []byte {
	ids := slices.SortedFunc(maps.Keys(last), func(a, b secure.Identifier) int { return bytes.Compare(a[:], b[:]) })
	b := []byte{storeVersion}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
		b = binary.BigEndian.AppendUint64(b, last[id])
	}
	return b
}

// Last returns the highest sequence number accepted from operator, or 0.
func (s *SequenceStore) Last(operator secure.Identifier) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[operator]
}

// advance accepts seq from operator if it is above the last one, and
// writes the store before it returns: RefusedReplayed or RefusedRollback
// if not, a plain error if the file could not be written (nothing is then
// accepted).
func (s *SequenceStore) advance(operator secure.Identifier, seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, ok := s.last[operator]
	switch {
	case seq == last:
		return refusef(RefusedReplayed, "sequence %d of operator %s was applied before", seq, operator.Short())
	case seq < last:
		return refusef(RefusedRollback, "sequence %d of operator %s is older than %d, applied before", seq, operator.Short(), last)
	case !ok && len(s.last) >= MaxOperators:
		return fmt.Errorf("control: sequence store holds %d operators, the most it can", MaxOperators)
	}
	next := maps.Clone(s.last)
	next[operator] = seq
	if err := atomicfile.Write(s.path, marshalStore(next), 0o600); err != nil {
		return fmt.Errorf("control: sequence store: %w", err)
	}
	s.last = next
	return nil
}
