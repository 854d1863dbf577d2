package main

import (
	"encoding/hex"
	"flag"
	"fmt"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// purposeKeyCommand returns "ockam purpose-key".
func purposeKeyCommand() *command {
	return &command{name: "purpose-key", subs: []*command{
		{name: "rotate", summary: "replace the purpose key of a vault's identity", usage: purposeKeyRotateUsage, flags: purposeKeyRotate},
	}}
}

// purposeKeyRotateUsage is the --help text of "ockam purpose-key rotate".
const purposeKeyRotateUsage = `Usage: ockam purpose-key rotate --vault DIR [--ttl DURATION] [--passphrase-file FILE]

Generates a new purpose key (the Noise static key) for the identity in the
vault DIR, attests it for DURATION, makes it current and deletes the old one.
Prints the new purpose key (hex) and the attestation's expiry. Credentials
stay valid: they name the identity, not the purpose key. Channels already
open keep their session keys. Re-run 'ockam identity export' if the identity
file is distributed.

Flags:
  --vault DIR              the vault directory, or a pkcs11: spec (required)
  --ttl DURATION           how long the attestation is valid: 2160h, 90d
                           (default 90d)
  --passphrase-file FILE   the file holding the vault passphrase
`

// purposeKeyRotate defines "ockam purpose-key rotate".
func purposeKeyRotate(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	ttl := ttlFlag(secure.DefaultAttestationTTL)
	fs.Var(&ttl, "ttl", "attestation validity period")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault")
		if err != nil {
			return err
		}
		v, id, err := vf.load(e)
		if err != nil {
			return err
		}
		if err := id.RotatePurposeKey(v, now, time.Duration(ttl)); err != nil {
			return fmt.Errorf("rotate the purpose key of %s: %w", vf.dir, err)
		}
		a := id.Public().Attestation()
		fmt.Fprintf(e.stdout, "purpose key: %s\n", hex.EncodeToString(a.PurposeKey[:]))
		fmt.Fprintf(e.stdout, "expires:     %s\n", formatTime(a.Expires))
		e.notef("the identity file changed; if you distribute it, run 'ockam identity export --vault %s --out FILE --force' again", vf.dir)
		return nil
	}
}
