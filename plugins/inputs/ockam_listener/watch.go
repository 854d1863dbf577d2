package ockam_listener

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"time"
)

const (
	// fullReadInterval: a watched file is read and hashed at least this
	// often, even when its size and mtime did not change (a same-size
	// rewrite within the file system's mtime resolution).
	fullReadInterval = time.Minute
	// maxWatchedFile bounds a watched file: the largest revocation list the
	// secure package accepts is about 90 MB in PEM form.
	maxWatchedFile = 128 << 20
)

// watchLoop checks revocation_list and credential_path every
// revocation_check_interval.
func (l *Listener) watchLoop(ctx context.Context) {
	defer l.running.Done()
	t := time.NewTicker(time.Duration(l.RevocationCheckInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.checkFiles()
		}
	}
}

// checkFiles applies a changed revocation list or credential. A file that
// cannot be read, parsed or verified is logged once and the current one is
// kept: the listener never falls back to "no list".
func (l *Listener) checkFiles() {
	now := l.now()
	l.reloadIdentity(now)
	if w := l.revocationFile; w != nil {
		err := w.check(now, func(data []byte) error {
			if err := l.applyRevocationList(data); err != nil {
				return err
			}
			cur := l.revocations
			l.Log.Infof("Revocation list %q applied: sequence %d, %d subjects and %d credentials revoked",
				w.path, cur.Sequence, len(cur.Subjects()), len(cur.Credentials()))
			return nil
		})
		keeping := "no list is applied yet"
		if l.revocations != nil {
			keeping = fmt.Sprintf("keeping the current list (sequence %d)", l.revocations.Sequence)
		}
		l.report(w, "revocation_list", err, keeping)
	}

	w := l.credentialFile
	err := w.check(now, func(data []byte) error {
		c, err := l.checkCredential(data)
		if err != nil {
			return err
		}
		l.credential.Store(c)
		l.Log.Infof("Credential %q loaded, valid until %s", w.path, c.ExpiresAt.Format(time.RFC3339))
		return nil
	})
	l.report(w, "credential_path", err, "keeping the current credential")

	// The credential in use may have expired or been revoked since.
	alarm := ""
	if err := l.verifier.VerifyCredential(l.credential.Load(), l.identity.Load().Identifier(), now); err != nil {
		alarm = err.Error()
	}
	if alarm != l.credentialAlarm {
		if alarm != "" {
			l.Log.Errorf("The listener's credential is no longer valid, devices will refuse new channels "+
				"until credential_path %q holds a valid one: %s", w.path, alarm)
		} else {
			l.Log.Infof("The listener's credential is valid again")
		}
		l.credentialAlarm = alarm
	}
}

// report logs a new problem with a watched file once, and its end.
func (l *Listener) report(w *fileWatch, option string, err error, consequence string) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == w.problem {
		return
	}
	if msg == "" {
		l.Log.Infof("%s %q: OK again", option, w.path)
	} else {
		l.Log.Warnf("%s %q: %v; %s", option, w.path, err, consequence)
	}
	w.problem = msg
}

// fileWatch notices when a file's content changes.
type fileWatch struct {
	path    string
	info    os.FileInfo // at the last read
	readAt  time.Time
	sum     [sha256.Size]byte // of the content last read
	read    bool
	verdict error  // of apply on the content last read
	problem string // the problem last logged, "" if none
}

func newFileWatch(path string) *fileWatch { return &fileWatch{path: path} }

// check polls the file and calls apply when its content changed. It
// returns the problem of the moment: the error reading the file, else what
// apply returned for the content last read.
func (w *fileWatch) check(now time.Time, apply func([]byte) error) error {
	data, err := w.poll(now)
	if err != nil {
		return err
	}
	if data != nil {
		w.verdict = apply(data)
	}
	return w.verdict
}

// poll returns the file's content if it differs from what the last poll
// read, or nil if it is the same. The file is read only when its identity,
// size or mtime changed, or fullReadInterval passed.
func (w *fileWatch) poll(now time.Time) ([]byte, error) {
	fi, err := os.Stat(w.path)
	if err != nil {
		return nil, err
	}
	if w.info != nil && os.SameFile(w.info, fi) && fi.Size() == w.info.Size() &&
		fi.ModTime().Equal(w.info.ModTime()) && now.Sub(w.readAt) < fullReadInterval {
		return nil, nil
	}
	data, err := readLimited(w.path, maxWatchedFile)
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
