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
