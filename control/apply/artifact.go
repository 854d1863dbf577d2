package apply

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// Artifacts applies artifact instructions: the instruction carries a
// manifest signed by a release identity (name, size, SHA-256); the bytes
// come in chunks, which Begin's Staging reassembles into a temporary file
// in Dir. Only when every byte arrived and the digest matches is the file
// renamed to Dir/<name> and the Apply handler run with its path as its
// last argument: a mismatch is refused and nothing is staged.
type Artifacts struct {
	// Dir is the staging directory.
	Dir string
	// Releases are the identities whose manifests the device accepts.
	Releases []*secure.Identity
	// Apply is run with the staged file's path; none: the file is staged
	// and left for another process.
	Apply *Handler
	// Timeout bounds Apply's run; zero: DefaultCommandTimeout.
	Timeout time.Duration
}

// Staging is one artifact being reassembled. Its methods are not safe for
// concurrent use; Commit or Abort ends it.
type Staging struct {
	a        *Artifacts
	in       *control.Instruction
	manifest *control.Manifest
	tmp      *os.File
	sum      hash.Hash
	written  uint64
	err      error // the first error; every later call returns it
}

// Begin checks the manifest of an artifact instruction and opens its
// staging file: a malformed manifest is refused (RefusedInvalidPayload),
// one not signed by a release identity of the device too
// (RefusedUnknownIssuer, RefusedBadSignature).
func (a *Artifacts) Begin(in *control.Instruction) (*Staging, error) {
	if in.Kind != control.KindArtifact {
		return nil, refuse(control.RefusedUnknownKind, fmt.Errorf("%v instruction is not an artifact", in.Kind))
	}
	m, err := control.ParseManifest(in.Payload)
	if err != nil {
		return nil, payloadError(err)
	}
	if err := control.VerifyManifest(m, a.Releases...); err != nil {
		code := control.RefusedBadSignature
		if errors.Is(err, secure.ErrUnknownIssuer) {
			code = control.RefusedUnknownIssuer
		}
		return nil, refuse(code, err)
	}
	tmp, err := os.CreateTemp(a.Dir, "."+m.Name+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("stage artifact %s: %w", m.Name, err)
	}
	return &Staging{a: a, in: in, manifest: m, tmp: tmp, sum: sha256.New()}, nil
}

// Write appends the chunk that starts at offset. Chunks come in order: an
// offset other than the bytes written so far, or more bytes than the
// manifest's size, is refused (RefusedInvalidPayload) and ends the staging.
func (s *Staging) Write(offset uint64, chunk []byte) error {
	if s.err != nil {
		return s.err
	}
	switch {
	case offset != s.written:
		return s.fail(refuse(control.RefusedInvalidPayload, fmt.Errorf("chunk at %d, want %d", offset, s.written)))
	case uint64(len(chunk)) > s.manifest.Size-s.written:
		return s.fail(refuse(control.RefusedInvalidPayload, fmt.Errorf("chunks past the artifact's %d bytes", s.manifest.Size)))
	}
	if _, err := s.tmp.Write(chunk); err != nil {
		return s.fail(fmt.Errorf("stage artifact %s: %w", s.manifest.Name, err))
	}
	s.sum.Write(chunk)
	s.written += uint64(len(chunk))
	return nil
}

// Commit checks that every byte arrived and that their SHA-256 is the
// manifest's (else RefusedDigestMismatch, and nothing is staged), renames
// the file into place and runs the Apply handler.
func (s *Staging) Commit(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	name := s.manifest.Name
	if s.written != s.manifest.Size {
		return s.fail(refuse(control.RefusedInvalidPayload, fmt.Errorf("artifact %s: %d of %d bytes", name, s.written, s.manifest.Size)))
	}
	if subtle.ConstantTimeCompare(s.sum.Sum(nil), s.manifest.Digest[:]) != 1 {
		return s.fail(refuse(control.RefusedDigestMismatch, fmt.Errorf("artifact %s: SHA-256 is not the one its release identity signed", name)))
	}
	err := s.tmp.Sync()
	if cerr := s.tmp.Close(); err == nil {
		err = cerr
	}
	path := filepath.Join(s.a.Dir, name) // name is control.CheckName'd: one file in Dir
	if err == nil {
		err = os.Rename(s.tmp.Name(), path)
	}
	if err == nil {
		err = atomicfile.SyncDir(s.a.Dir)
	}
	if err != nil {
		return s.fail(fmt.Errorf("stage artifact %s: %w", name, err))
	}
	s.err = errors.New("apply: staging already committed")
	if s.a.Apply == nil {
		return nil
	}
	env := []string{
		"OCKAM_INSTRUCTION_ID=" + s.in.ID.String(),
		"OCKAM_OPERATOR=" + s.in.Operator().String(),
		"OCKAM_SEQUENCE=" + strconv.FormatUint(s.in.Sequence, 10),
		"OCKAM_ARTIFACT=" + name,
	}
	return run(ctx, *s.a.Apply, s.a.Timeout, env, nil, path)
}

// Abort ends the staging and removes its temporary file.
func (s *Staging) Abort() {
	if s.err == nil {
		s.fail(errors.New("apply: staging aborted"))
	}
}

// fail keeps err, removes the temporary file and returns err.
func (s *Staging) fail(err error) error {
	s.err = err
	s.tmp.Close()
	os.Remove(s.tmp.Name())
	return err
}
