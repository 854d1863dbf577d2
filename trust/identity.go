package trust

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
	"github.com/ockam-addons/telegraf-ockam/vault/vaults"
)

// openVault opens the vault and loads the identity, whose purpose-key
// attestation must be valid now.
func (t *Trust) openVault(now time.Time) error {
	name, spec := t.names.Vault, t.cfg.Vault
	// A missing directory is refused rather than created empty.
	v, err := vaults.OpenExisting(spec, t.cfg.Passphrase)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w (create the identity with: ockam identity create --vault %s)", name, err, spec)
	}
	if errors.Is(err, vault.ErrPassphrase) {
		return fmt.Errorf("%s: %w (check %s)", name, err, t.names.Passphrase)
	}
	if err != nil {
		// Not the value: a spec that failed to parse may hold a PIN
		// written in by mistake, and the error names what is wrong with it.
		return fmt.Errorf("%s: %w", name, err)
	}
	t.vault = v
	id, err := secure.LoadIdentity(v)
	switch {
	case errors.Is(err, vault.ErrPassphrase):
		err = fmt.Errorf("%s %q: %w (check %s)", name, spec, err, t.names.Passphrase)
	case err != nil:
		err = fmt.Errorf("%s %q: %w", name, spec, err)
	default:
		if aerr := id.CheckAttestation(now); aerr != nil {
			err = fmt.Errorf("%s %q: own %w; rotate it with: ockam purpose-key rotate --vault %s", name, spec, aerr, spec)
		}
	}
	if err != nil {
		t.closeVault()
		return err
	}
	t.identity.Store(id)
	return nil
}

// reloadIdentity makes a purpose key rotated in the vault (ockam
// purpose-key rotate) the one new channels use; channels already open keep
// their session keys. Unless the vault changed, it reads one 146-byte
// record. A vault that cannot be read, or that holds another identity, is
// logged once and the key in use is kept; so is an expired attestation of
// the key in use, which peers refuse.
func (t *Trust) reloadIdentity(now time.Time) {
	cur := t.identity.Load()
	id, err := cur.Reload(t.vault)
	if err == nil {
		err = id.CheckAttestation(now)
	}
	problem := ""
	if err != nil {
		problem = err.Error()
	}
	if problem != t.identityProblem {
		if problem != "" {
			t.log.Errorf("%s %q: %s; new channels keep the purpose key in use", t.names.Vault, t.cfg.Vault, problem)
		} else {
			t.log.Infof("%s %q: OK again", t.names.Vault, t.cfg.Vault)
		}
		t.identityProblem = problem
	}
	if err != nil || id == cur {
		return
	}
	t.identity.Store(id)
	a := id.Public().Attestation()
	t.log.Infof("Loaded the rotated purpose key %x… of %s from %s %q, valid until %s; new channels use it",
		a.PurposeKey[:4], id.Identifier().Short(), t.names.Vault, t.cfg.Vault, a.Expires.Format(time.RFC3339))
}

func (t *Trust) closeVault() error {
	c, ok := t.vault.(io.Closer)
	t.vault = nil
	if !ok {
		return nil
	}
	if err := c.Close(); err != nil {
		return fmt.Errorf("%s: %w", t.names.Vault, err)
	}
	return nil
}
