package ockam_listener

import (
	"io"
	"time"
)

// reloadIdentity makes a purpose key rotated in the vault while Telegraf
// runs (ockam purpose-key rotate) the one new channels use; channels
// already open keep their session keys. The watch loop calls it every
// revocation_check_interval: unless the vault changed, it reads one
// 146-byte record. A vault that cannot be read, or that holds another
// identity, is logged once and the key in use is kept; so is an expired
// attestation of the key in use, which devices refuse.
func (l *Listener) reloadIdentity(now time.Time) {
	cur := l.identity.Load()
	id, err := cur.Reload(l.vault)
	if err == nil {
		err = id.CheckAttestation(now)
	}
	problem := ""
	if err != nil {
		problem = err.Error()
	}
	if problem != l.identityProblem {
		if problem != "" {
			l.Log.Errorf("vault_path %q: %s; new channels keep the purpose key in use", l.VaultPath, problem)
		} else {
			l.Log.Infof("vault_path %q: OK again", l.VaultPath)
		}
		l.identityProblem = problem
	}
	if err != nil || id == cur {
		return
	}
	l.identity.Store(id)
	a := id.Public().Attestation()
	l.Log.Infof("Loaded the rotated purpose key %x… from vault_path %q, valid until %s; new channels use it",
		a.PurposeKey[:4], l.VaultPath, a.Expires.Format(time.RFC3339))
}

// closeVault releases the vault (a PKCS#11 token session; a directory needs
// nothing).
func (l *Listener) closeVault() {
	if c, ok := l.vault.(io.Closer); ok {
		if err := c.Close(); err != nil {
			l.Log.Warnf("vault_path %q: %v", l.VaultPath, err)
		}
	}
	l.vault = nil
}
