package control

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// The pending store file, docs/PROTOCOL.md, section 17.5:
//
//	u8    version = 1
//	u32   n
//	n × { u32 length l | [l] instruction (section 17.1) |
//	      u32 m | m × [32] identifiers of the devices that answered it, strictly ascending }
const pendingVersion = 1

// MaxAnswered bounds the answers a pending store remembers (which device
// answered which instruction), 32 MiB of identifiers; past it, a device
// may be offered an instruction again, and refuses it as replayed.
const MaxAnswered = 1 << 20

// PendingLimits bound a gateway's pending store: a flood of instructions
// handed to the gateway is refused at its door, not stored.
type PendingLimits struct {
	PerTarget int   // instructions pending for one target
	Total     int   // instructions pending in all
	Bytes     int64 // their encodings together
	// ArtifactBytes bounds the artifact bytes kept with pending artifact
	// instructions, together; zero is DefaultArtifactBytes.
	ArtifactBytes int64
}

// DefaultPendingLimits: 64 per target, 4,096 in all, 64 MiB, and
// DefaultArtifactBytes of artifacts.
var DefaultPendingLimits = PendingLimits{PerTarget: 64, Total: 4096, Bytes: 64 << 20, ArtifactBytes: DefaultArtifactBytes}

// DefaultArtifactBytes bounds a gateway's pending artifact bytes: 2 GiB,
// two artifacts of the largest size (section 17.3).
const DefaultArtifactBytes = 2 << 30

// ErrPendingFull: the pending store holds as much as its limits allow.
var ErrPendingFull = errors.New("control: pending store full")

// ErrDuplicate: an instruction of the same id is already pending.
var ErrDuplicate = errors.New("control: instruction already pending")

// Pending is a gateway's store of instructions waiting for their devices
// (docs/PROTOCOL.md, section 17.5): each is kept until it expires, with
// the devices that answered it, in a file written 0600 by a temporary file
// and a rename at every change. It is safe for concurrent use.
//
// The gateway is not trusted with instructions: it checks what it can so
// that junk never enters the store, and every device checks everything
// again.
type Pending struct {
	credentials *secure.Verifier
	limits      PendingLimits
	path        string

	mu            sync.Mutex
	entries       []*pendingEntry
	bytes         int64 // of the instructions' encodings
	answered      int   // answers remembered, in all
	artifactBytes int64 // of the artifacts kept, and being received
}

// pendingEntry is one pending instruction and who answered it.
type pendingEntry struct {
	in       *Instruction
	answered map[secure.Identifier]bool
	size     int64 // of its artifact, for an artifact instruction
}

// OpenPending reads the store at path (none: empty), dropping what expired
// at now. credentials verifies the operators' credentials in Add.
func OpenPending(path string, credentials *secure.Verifier, limits PendingLimits, now time.Time) (*Pending, error) {
	if limits == (PendingLimits{}) {
		limits = DefaultPendingLimits
	}
	if limits.ArtifactBytes == 0 {
		limits.ArtifactBytes = DefaultArtifactBytes
	}
	if limits.PerTarget < 1 || limits.Total < 1 || limits.Bytes < MaxInstructionSize {
		return nil, fmt.Errorf("control: pending limits %+v: want at least one instruction of the largest size", limits)
	}
	p := &Pending{credentials: credentials, limits: limits, path: path}
	data, err := ReadState(path, 5+limits.Bytes+int64(limits.Total)*8+MaxAnswered*secure.IdentifierSize)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("control: pending store: %w", err)
	}
	if p.entries, err = parsePending(data); err != nil {
		return nil, fmt.Errorf("control: pending store %s: %w", path, err)
	}
	keep := map[string]bool{}
	for _, e := range p.entries {
		p.bytes += int64(len(e.in.raw))
		p.answered += len(e.answered)
		if e.in.Kind != KindArtifact {
			continue
		}
		if e.size, err = p.checkArtifactFile(e.in); err != nil {
			return nil, fmt.Errorf("control: pending store %s: %w", path, err)
		}
		p.artifactBytes += e.size
		keep[e.in.ID.String()] = true
	}
	p.removeStrayArtifacts(keep)
	if p.answered > MaxAnswered {
		return nil, fmt.Errorf("control: pending store %s: %w: %d answers", path, ErrMalformed, p.answered)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prune(now) {
		return p, p.save()
	}
	return p, nil
}

// ReadState reads a state file of at most max bytes that only its owner
// may write (a regular file, not writable by group or others): the
// gateway's pending store, the device's sequence store and its outbox.
func ReadState(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s: mode %v: group or others may write it; want 0600", path, fi.Mode())
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, err
}

// parsePending decodes the store file strictly.
func parsePending(b []byte) ([]*pendingEntry, error) {
	s := cryptobyte.String(b)
	var version uint8
	var n uint32
	if !s.ReadUint8(&version) || version != pendingVersion || !s.ReadUint32(&n) {
		return nil, fmt.Errorf("%w: not a version %d pending store", ErrMalformed, pendingVersion)
	}
	var entries []*pendingEntry
	ids := map[ID]bool{}
	for i := range n {
		var l, m uint32
		var raw []byte
		if !s.ReadUint32(&l) || l > MaxInstructionSize || !s.ReadBytes(&raw, int(l)) || !s.ReadUint32(&m) ||
			m > MaxAnswered || len(s) < int(m)*secure.IdentifierSize {
			return nil, fmt.Errorf("%w: entry %d truncated", ErrMalformed, i)
		}
		in, err := Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if ids[in.ID] {
			return nil, fmt.Errorf("%w: instruction %s twice", ErrMalformed, in.ID)
		}
		ids[in.ID] = true
		e := &pendingEntry{in: in, answered: make(map[secure.Identifier]bool, m)}
		var prev secure.Identifier
		for j := range m {
			var id secure.Identifier
			s.CopyBytes(id[:])
			if j > 0 && bytes.Compare(id[:], prev[:]) <= 0 {
				return nil, fmt.Errorf("%w: entry %d: answered devices out of order", ErrMalformed, i)
			}
			e.answered[id], prev = true, id
		}
		entries = append(entries, e)
	}
	if len(s) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", ErrMalformed)
	}
	return entries, nil
}

// marshal encodes the store.
func (p *Pending) marshal() []byte {
	b := []byte{pendingVersion}
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.entries)))
	for _, e := range p.entries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.in.raw)))
		b = append(b, e.in.raw...)
		ids := slices.SortedFunc(maps.Keys(e.answered), func(a, b secure.Identifier) int { return bytes.Compare(a[:], b[:]) })
		b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = append(b, id[:]...)
		}
	}
	return b
}

// save writes the store; the caller holds p.mu.
func (p *Pending) save() error {
	if err := atomicfile.Write(p.path, p.marshal(), 0o600); err != nil {
		return fmt.Errorf("control: pending store: %w", err)
	}
	return nil
}

// Add checks an instruction handed to the gateway, as far as a gateway
// can, and keeps it until it expires: its form (ErrMalformed, ErrTooLarge),
// its signature and its operator's credential (the errors of
// secure.Verifier.VerifyCredential), a known kind, not expired at now. It
// refuses an id already pending (ErrDuplicate) and one over the limits
// (ErrPendingFull). The device's policy, target and sequence are the
// device's to check.
func (p *Pending) Add(b []byte, now time.Time) (*Instruction, error) {
	in, err := p.check(b, now)
	if err != nil {
		return nil, err
	}
	if in.Kind == KindArtifact {
		return nil, fmt.Errorf("%w: an artifact instruction comes with its artifact's bytes (AddArtifact)", ErrMalformed)
	}
	return p.add(in, 0, "", now)
}

// check is Add's checks of the instruction itself.
func (p *Pending) check(b []byte, now time.Time) (*Instruction, error) {
	in, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if err := in.CheckSignature(); err != nil {
		return nil, err
	}
	if err := p.credentials.VerifyCredential(in.Credential, in.Operator(), now); err != nil {
		return nil, fmt.Errorf("operator %s: %w", in.Operator().Short(), err)
	}
	if !in.Kind.Known() {
		return nil, fmt.Errorf("%w: unknown kind %v", ErrMalformed, in.Kind)
	}
	if !now.Before(in.ExpiresAt) {
		return nil, fmt.Errorf("instruction expired at %s: %w", in.ExpiresAt.Format(time.RFC3339), secure.ErrExpired)
	}
	return in, nil
}

// add keeps a checked instruction; tmp is its artifact's file, size bytes,
// for an artifact instruction, renamed into place once the instruction is
// admitted. The caller reserved size (reserve) and removes tmp and
// releases size if add fails.
func (p *Pending) add(in *Instruction, size int64, tmp string, now time.Time) (*Instruction, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.prune(now)
	sameTarget := 0
	for _, e := range p.entries {
		if e.in.ID == in.ID {
			return nil, fmt.Errorf("%w: %s", ErrDuplicate, in.ID)
		}
		if e.in.Target.String() == in.Target.String() {
			sameTarget++
		}
	}
	switch {
	case sameTarget >= p.limits.PerTarget:
		return nil, fmt.Errorf("%w: %d instructions pending for %s", ErrPendingFull, sameTarget, in.Target)
	case len(p.entries) >= p.limits.Total:
		return nil, fmt.Errorf("%w: %d instructions pending", ErrPendingFull, len(p.entries))
	case p.bytes+int64(len(in.raw)) > p.limits.Bytes:
		return nil, fmt.Errorf("%w: %d bytes pending", ErrPendingFull, p.bytes)
	}
	if tmp != "" {
		if err := os.Rename(tmp, p.artifactPath(in.ID)); err != nil {
			return nil, fmt.Errorf("control: pending artifact: %w", err)
		}
	}
	p.entries = append(p.entries, &pendingEntry{in: in, answered: map[secure.Identifier]bool{}, size: size})
	p.bytes += int64(len(in.raw))
	if err := p.save(); err != nil {
		p.entries = p.entries[:len(p.entries)-1]
		p.bytes -= int64(len(in.raw))
		if tmp != "" {
			os.Remove(p.artifactPath(in.ID))
		}
		return nil, err
	}
	return in, nil
}

// Due returns the instructions to push to a device with this verified
// identifier and these credential attributes: pending, not expired at now,
// targeted at it, not yet answered by it; ordered by operator and then
// ascending sequence, so that a device never sees an operator's older
// instruction after a newer one.
func (p *Pending) Due(device secure.Identifier, attrs map[string]string, now time.Time) []*Instruction {
	p.mu.Lock()
	defer p.mu.Unlock()
	var due []*Instruction
	for _, e := range p.entries {
		if now.Before(e.in.ExpiresAt) && !e.answered[device] && e.in.Target.Matches(device, attrs) {
			due = append(due, e.in)
		}
	}
	slices.SortFunc(due, func(a, b *Instruction) int {
		ao, bo := a.Operator(), b.Operator()
		if c := bytes.Compare(ao[:], bo[:]); c != 0 {
			return c
		}
		switch {
		case a.Sequence < b.Sequence:
			return -1
		case a.Sequence > b.Sequence:
			return 1
		}
		return 0
	})
	return due
}

// Answered records that device answered the instruction id (any result):
// it is not offered to that device again. An instruction for one device is
// then done and leaves the store; a selector's stays until it expires, for
// the devices that join.
func (p *Pending) Answered(id ID, device secure.Identifier) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, e := range p.entries {
		if e.in.ID != id {
			continue
		}
		if e.in.Target.Selector == nil {
			if !e.in.Target.Device.Equal(device) {
				return nil // not its device: nothing to record
			}
			p.entries = slices.Delete(p.entries, i, i+1)
			p.bytes -= int64(len(e.in.raw))
			p.answered -= len(e.answered)
			defer p.dropArtifact(e) // after the store no longer names it
		} else {
			if e.answered[device] || p.answered >= MaxAnswered {
				return nil
			}
			e.answered[device] = true
			p.answered++
		}
		return p.save()
	}
	return nil
}

// Prune drops the instructions expired at now.
func (p *Pending) Prune(now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prune(now) {
		return p.save()
	}
	return nil
}

// prune drops what expired and reports whether anything was; the caller
// holds p.mu.
func (p *Pending) prune(now time.Time) bool {
	n := len(p.entries)
	p.entries = slices.DeleteFunc(p.entries, func(e *pendingEntry) bool {
		if now.Before(e.in.ExpiresAt) {
			return false
		}
		p.bytes -= int64(len(e.in.raw))
		p.answered -= len(e.answered)
		p.dropArtifact(e)
		return true
	})
	return len(p.entries) != n
}

// Len returns the number of pending instructions.
func (p *Pending) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.entries)
}

// Get returns the pending instruction of this id, or nil.
func (p *Pending) Get(id ID) *Instruction {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.entries {
		if e.in.ID == id {
			return e.in
		}
	}
	return nil
}

// The artifacts of pending artifact instructions are files next to the
// store: <store>.artifacts/<instruction id, hex>, mode 0600, in a directory
// of mode 0700, each of the size its manifest names. A file that no entry
// names is removed at start; an entry whose file is missing or of another
// size is refused at start.

// artifactDir is the directory of the pending artifacts.
func (p *Pending) artifactDir() string { return p.path + ".artifacts" }

// artifactPath is the file of the artifact of instruction id.
func (p *Pending) artifactPath(id ID) string {
	return filepath.Join(p.artifactDir(), id.String())
}

// ArtifactFile opens the artifact of the pending instruction in, for
// sending; the caller closes it. A file removed once opened stays
// readable.
func (p *Pending) ArtifactFile(in *Instruction) (*os.File, error) {
	return os.Open(p.artifactPath(in.ID))
}

// checkArtifactFile checks the file of a stored artifact instruction and
// returns its size.
func (p *Pending) checkArtifactFile(in *Instruction) (int64, error) {
	m, err := ParseManifest(in.Payload)
	if err != nil {
		return 0, fmt.Errorf("instruction %s: %w", in.ID, err)
	}
	fi, err := os.Lstat(p.artifactPath(in.ID))
	if err != nil {
		return 0, fmt.Errorf("instruction %s: its artifact: %w", in.ID, err)
	}
	switch {
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0:
		return 0, fmt.Errorf("instruction %s: artifact file of mode %v; want 0600", in.ID, fi.Mode())
	case uint64(fi.Size()) != m.Size:
		return 0, fmt.Errorf("instruction %s: artifact file of %d bytes, its manifest names %d", in.ID, fi.Size(), m.Size)
	}
	return fi.Size(), nil
}

// removeStrayArtifacts removes the artifact files, and temporary files,
// of no entry.
func (p *Pending) removeStrayArtifacts(keep map[string]bool) {
	des, err := os.ReadDir(p.artifactDir())
	if err != nil {
		return
	}
	for _, de := range des {
		if !keep[de.Name()] {
			os.Remove(filepath.Join(p.artifactDir(), de.Name()))
		}
	}
}

// dropArtifact removes the artifact of an entry that left the store; the
// caller holds p.mu.
func (p *Pending) dropArtifact(e *pendingEntry) {
	if e.in.Kind != KindArtifact {
		return
	}
	os.Remove(p.artifactPath(e.in.ID))
	p.artifactBytes -= e.size
}

// AddArtifact is Add for an artifact instruction b, followed by its
// artifact's n bytes, read from r: n must be the size its manifest names,
// within the limit of the artifact bytes pending (ErrPendingFull). The
// bytes are written 0600 next to the store and kept until the instruction
// leaves it. Their digest is the devices' to check: the gateway does not
// know the release identities.
func (p *Pending) AddArtifact(b []byte, n uint64, r io.Reader, now time.Time) (*Instruction, error) {
	in, err := p.check(b, now)
	if err != nil {
		return nil, err
	}
	if in.Kind != KindArtifact {
		return nil, fmt.Errorf("%w: a %v instruction comes without artifact bytes", ErrMalformed, in.Kind)
	}
	m, err := ParseManifest(in.Payload)
	if err != nil {
		return nil, err
	}
	if n != m.Size {
		return nil, fmt.Errorf("%w: %d artifact bytes, the manifest of %s names %d", ErrMalformed, n, m.Name, m.Size)
	}
	size := int64(n) // n <= MaxArtifactSize
	p.mu.Lock()
	p.prune(now)
	if p.artifactBytes+size > p.limits.ArtifactBytes {
		held := p.artifactBytes
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: %d artifact bytes pending, %d more would pass the limit of %d", ErrPendingFull, held, size, p.limits.ArtifactBytes)
	}
	p.artifactBytes += size
	p.mu.Unlock()
	tmp, err := p.receiveArtifact(r, size)
	if err == nil {
		if in, err = p.add(in, size, tmp, now); err != nil {
			os.Remove(tmp)
		}
	}
	if err != nil {
		p.mu.Lock()
		p.artifactBytes -= size
		p.mu.Unlock()
		return nil, err
	}
	return in, nil
}

// receiveArtifact writes size bytes of r into a new 0600 temporary file in
// the artifact directory, synced, and returns its path.
func (p *Pending) receiveArtifact(r io.Reader, size int64) (string, error) {
	if err := os.Mkdir(p.artifactDir(), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("control: pending artifacts: %w", err)
	}
	f, err := os.CreateTemp(p.artifactDir(), ".*.tmp") // 0600
	if err != nil {
		return "", fmt.Errorf("control: pending artifacts: %w", err)
	}
	_, err = io.CopyN(f, r, size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("receiving the artifact: %w", err)
	}
	return f.Name(), nil
}
