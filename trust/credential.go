package trust

import (
	"errors"
	"fmt"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// applyCredential returns the apply function of the credential file: it
// parses and verifies a credential and makes it current.
func (t *Trust) applyCredential(now time.Time) func([]byte) error {
	return func(data []byte) error {
		c, err := secure.ParseCredentialFile(data)
		if err != nil {
			return err
		}
		if err := t.verifier.VerifyCredential(c, t.identity.Load().Identifier(), now); err != nil {
			return err
		}
		t.credential.Store(c)
		return nil
	}
}

// startExpired decides, for Open, whether to start with the credential
// file's content data although verifying it at now failed with err: only
// with StartExpired, and only when data is a credential that fails nothing
// but its validity period. It then keeps that credential as the one in use
// (no channel is opened with it: Reload and Check fail until the file is
// renewed) and logs why. It returns the error Open returns, nil to start.
func (t *Trust) startExpired(data []byte, err error) error {
	if !t.cfg.StartExpired || data == nil || !(errors.Is(err, secure.ErrExpired) || errors.Is(err, secure.ErrNotYetValid)) {
		return t.credentialError(err)
	}
	c, perr := secure.ParseCredentialFile(data)
	if perr != nil {
		return t.credentialError(perr)
	}
	// Everything but the period: the issuer, the signature, the subject
	// and the revocation lists, checked as at the credential's first
	// instant (a credential with an empty period fails here).
	subject := t.identity.Load().Identifier()
	if verr := t.verifier.VerifyCredential(c, subject, c.IssuedAt); verr != nil {
		return t.credentialError(verr)
	}
	t.credential.Store(c)
	t.credentialFile.Report(err) // logged here, not again by the first Refresh
	err = t.credentialError(err)
	if cerr := t.verifier.VerifyCredential(c, subject, t.now()); cerr != nil {
		t.credentialAlarm = cerr.Error()
	}
	t.log.Errorf("Starting without a valid credential (valid from %s until %s): %v; "+
		"no channel is opened until %s %q holds a valid one, which is picked up without a restart",
		c.IssuedAt.Format(time.RFC3339), c.ExpiresAt.Format(time.RFC3339), err, t.names.Credential, t.cfg.Credential)
	return nil
}

// reportExpiresIn gives ExpiresIn how long the credential in use stays
// valid at now.
func (t *Trust) reportExpiresIn(now time.Time) {
	if t.cfg.ExpiresIn != nil {
		t.cfg.ExpiresIn(t.credential.Load().ExpiresAt.Sub(now))
	}
}

// credentialError words a problem with the credential file: what is wrong
// and what to do.
func (t *Trust) credentialError(err error) error {
	n, path := t.names, t.cfg.Credential
	switch {
	case errors.Is(err, secure.ErrUnknownIssuer), errors.Is(err, secure.ErrBadSignature):
		return fmt.Errorf("%s %s was not issued by the authority in %s %s: %w", n.Credential, path, n.Authority, t.authorities, err)
	case errors.Is(err, secure.ErrWrongSubject):
		return fmt.Errorf("%s %s was issued to another identity than this one (%s in %s %s): %w",
			n.Credential, path, t.identity.Load().Identifier(), n.Vault, t.cfg.Vault, err)
	case errors.Is(err, secure.ErrExpired):
		return fmt.Errorf("%s %s: %w; renew it with ockam credential issue", n.Credential, path, err)
	case errors.Is(err, secure.ErrNotYetValid):
		return fmt.Errorf("%s %s: %w; check this machine's clock", n.Credential, path, err)
	case errors.Is(err, secure.ErrRevoked):
		return fmt.Errorf("%s %s: %w; the authority revoked this identity", n.Credential, path, err)
	}
	return fmt.Errorf("%s %s: %w", n.Credential, path, err)
}

// Check reports whether the identity and credential in use are valid at
// now: the purpose key's attestation and the credential's validity and
// revocation. The error says what to do.
func (t *Trust) Check(now time.Time) error {
	cur := t.Current()
	if err := cur.Identity.CheckAttestation(now); err != nil {
		return fmt.Errorf("%s %s: own %w", t.names.Vault, t.cfg.Vault, err)
	}
	if err := t.verifier.VerifyCredential(cur.Credential, cur.Identity.Identifier(), now); err != nil {
		return t.credentialError(err)
	}
	return nil
}
