package ockam_listener

import (
	"context"
	"fmt"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/filewatch"
)

// maxWatchedFile bounds a watched file: the largest revocation list the
// secure package accepts is about 90 MB in PEM form.
const maxWatchedFile = 128 << 20

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
		err := w.Check(now, func(data []byte) error {
			if err := l.applyRevocationList(data); err != nil {
				return err
			}
			cur := l.revocations
			l.Log.Infof("Revocation list %q applied: sequence %d, %d subjects and %d credentials revoked",
				w.Path, cur.Sequence, len(cur.Subjects()), len(cur.Credentials()))
			return nil
		})
		keeping := "no list is applied yet"
		if l.revocations != nil {
			keeping = fmt.Sprintf("keeping the current list (sequence %d)", l.revocations.Sequence)
		}
		l.report(w, "revocation_list", err, keeping)
	}

	w := l.credentialFile
	err := w.Check(now, func(data []byte) error {
		c, err := l.checkCredential(data)
		if err != nil {
			return err
		}
		l.credential.Store(c)
		l.Log.Infof("Credential %q loaded, valid until %s", w.Path, c.ExpiresAt.Format(time.RFC3339))
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
				"until credential_path %q holds a valid one: %s", w.Path, alarm)
		} else {
			l.Log.Infof("The listener's credential is valid again")
		}
		l.credentialAlarm = alarm
	}
}

// report logs a new problem with a watched file once, and its end.
func (l *Listener) report(w *filewatch.Watch, option string, err error, consequence string) {
	msg, changed := w.Report(err)
	switch {
	case !changed:
	case msg == "":
		l.Log.Infof("%s %q: OK again", option, w.Path)
	default:
		l.Log.Warnf("%s %q: %v; %s", option, w.Path, err, consequence)
	}
}
