// Package filewatch notices when a file's content changes, for programs
// that apply a file (a revocation list, a credential) while they run and
// must never act on the same content twice or miss a new one.
package filewatch

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"
)

// FullReadInterval: a watched file is read and hashed at least this often,
// even when its size and mtime did not change (a same-size rewrite within
// the file system's mtime resolution).
const FullReadInterval = time.Minute

// Watch watches one file. It is not safe for concurrent use.
type Watch struct {
	Path    string
	limit   int64
	info    os.FileInfo // at the last read
	readAt  time.Time
	sum     [sha256.Size]byte // of the content last read
	read    bool
	verdict error  // of apply on the content last read
	problem string // the problem last reported, "" if none
}

// New watches path, a file of at most limit bytes.
func New(path string, limit int64) *Watch { return &Watch{Path: path, limit: limit} }

// Check polls the file and calls apply when its content changed. It
// returns the problem of the moment: the error reading the file, else what
// apply returned for the content last read.
func (w *Watch) Check(now time.Time, apply func([]byte) error) error {
	data, err := w.Poll(now)
	if err != nil {
		return err
	}
	if data != nil {
		w.verdict = apply(data)
	}
	return w.verdict
}

// Poll returns the file's content if it differs from what the last poll
// read, or nil if it is the same. The file is read only when its identity,
// size or mtime changed, or FullReadInterval passed.
func (w *Watch) Poll(now time.Time) ([]byte, error) {
	fi, err := os.Stat(w.Path)
	if err != nil {
		return nil, err
	}
	if w.info != nil && os.SameFile(w.info, fi) && fi.Size() == w.info.Size() &&
		fi.ModTime().Equal(w.info.ModTime()) && now.Sub(w.readAt) < FullReadInterval {
		return nil, nil
	}
	data, err := readLimited(w.Path, w.limit)
	if err != nil {
		return nil, err
	}
	w.info, w.readAt = fi, now
	sum := sha256.Sum256(data)
	if w.read && sum == w.sum {
		return nil, nil
	}
	w.sum, w.read = sum, true
	return data, nil
}

// Forget makes the next Poll read the file even if its size and mtime did
// not change, for a caller that polls rarely and must not miss a rewrite
// within the file system's mtime resolution. Content already applied is
// still not applied again.
func (w *Watch) Forget() { w.info = nil }

// Retry makes the next Check apply the file's content even if it is the
// one already applied, for a verdict that changes with time (a credential
// not valid yet).
func (w *Watch) Retry() { w.info, w.read = nil, false }

// Report records err as the problem of the moment and returns its message
// ("" for none) and whether it differs from the one last reported, so that
// a problem is logged once, and its end once.
func (w *Watch) Report(err error) (msg string, changed bool) {
	if err != nil {
		msg = err.Error()
	}
	changed = msg != w.problem
	w.problem = msg
	return msg, changed
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
