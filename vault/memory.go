package vault

import (
	"crypto/rand"
	"fmt"
	"sync"
)

// Memory is a Vault that keeps keys and records in memory, for tests and
// short-lived tools. It applies the same name rules and size limits as File.
// It is safe for concurrent use.
type Memory struct {
	mu      sync.Mutex
	keys    map[string]any // *signer or *dh
	records map[string][]byte
}

var _ Vault = (*Memory)(nil)

// NewMemory returns an empty Memory vault.
func NewMemory() *Memory {
	return &Memory{keys: make(map[string]any), records: make(map[string][]byte)}
}

// GenerateSigner creates and stores a new Ed25519 key under name.
func (m *Memory) GenerateSigner(name string) (Signer, error) {
	var seed [keySize]byte
	defer clear(seed[:])
	rand.Read(seed[:]) // never fails (Go 1.24+)
	s := NewSignerFromSeed(seed)
	if err := m.add(name, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Signer returns the Ed25519 key stored under name.
func (m *Memory) Signer(name string) (Signer, error) {
	k, err := m.get(name)
	if err != nil {
		return nil, err
	}
	s, ok := k.(*signer)
	if !ok {
		return nil, fmt.Errorf("vault: key %q: %w: it holds an X25519 key, not Ed25519", name, errWrongKind)
	}
	return s, nil
}

// GenerateDH creates and stores a new X25519 key under name.
func (m *Memory) GenerateDH(name string) (DH, error) {
	var scalar [keySize]byte
	defer clear(scalar[:])
	rand.Read(scalar[:])
	d := NewDHFromScalar(scalar)
	if err := m.add(name, d); err != nil {
		return nil, err
	}
	return d, nil
}

// DH returns the X25519 key stored under name.
func (m *Memory) DH(name string) (DH, error) {
	k, err := m.get(name)
	if err != nil {
		return nil, err
	}
	d, ok := k.(*dh)
	if !ok {
		return nil, fmt.Errorf("vault: key %q: %w: it holds an Ed25519 key, not X25519", name, errWrongKind)
	}
	return d, nil
}

// DeleteKey removes the key stored under name.
func (m *Memory) DeleteKey(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[name]; !ok {
		return fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	delete(m.keys, name)
	return nil
}

// WriteRecord stores a copy of data under name, replacing any previous record.
func (m *Memory) WriteRecord(name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(data) > MaxRecordSize {
		return fmt.Errorf("vault: %w: %q is %d bytes, the limit is %d", errTooLarge, name, len(data), MaxRecordSize)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[name] = append([]byte{}, data...)
	return nil
}

// ReadRecord returns a copy of the record stored under name.
func (m *Memory) ReadRecord(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.records[name]
	if !ok {
		return nil, fmt.Errorf("%w: record %q", ErrNotFound, name)
	}
	return append([]byte{}, r...), nil
}

// add stores k under name unless the name is invalid or taken.
func (m *Memory) add(name string, k any) error {
	if err := checkName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.keys[name]; ok {
		return fmt.Errorf("%w: key %q", ErrExists, name)
	}
	m.keys[name] = k
	return nil
}

func (m *Memory) get(name string) (any, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k, ok := m.keys[name]
	if !ok {
		return nil, fmt.Errorf("%w: key %q", ErrNotFound, name)
	}
	return k, nil
}
