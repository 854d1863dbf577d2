package secure

import (
	"bytes"
	"fmt"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Reload returns the identity as v holds it now, for a process that keeps
// running while another one rotates the purpose key (ockam purpose-key
// rotate). If v's purpose-key attestation record is the one l holds, it
// returns l: the cost is one read of a 146-byte record, and no key is
// loaded. Otherwise it loads the identity again (LoadIdentity), which must
// have the same identity key: a vault that now holds another identity is an
// error (its credentials are another's). Reload does not check the validity
// period; see CheckAttestation. It does not modify l.
func (l *LocalIdentity) Reload(v vault.Vault) (*LocalIdentity, error) {
	rec, err := v.ReadRecord(attestationRecord)
	if err != nil {
		return nil, fmt.Errorf("reload purpose-key attestation: %w", err)
	}
	if bytes.Equal(rec, l.public.attestation.raw[:]) {
		return l, nil
	}
	next, err := LoadIdentity(v)
	if err != nil {
		return nil, err
	}
	if next.Identifier() != l.Identifier() {
		return nil, fmt.Errorf("secure: the vault now holds identity %s, not %s; restart to use it",
			next.Identifier().Short(), l.Identifier().Short())
	}
	if next.public.attestation.raw == l.public.attestation.raw {
		// the record changed between the two reads and changed back (a
		// rewrite of the same record): nothing was rotated
		return l, nil
	}
	return next, nil
}
