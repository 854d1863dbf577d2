package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// identityCommand returns "ockam identity".
func identityCommand() *command {
	return &command{name: "identity", subs: []*command{
		{name: "create", summary: "create an identity (and its vault)", usage: identityCreateUsage, flags: identityCreate},
		{name: "show", summary: "print the identity of a vault", usage: identityShowUsage, flags: identityShow},
		{name: "export", summary: "write the public identity file of a vault", usage: identityExportUsage, flags: identityExport},
	}}
}

// identityCreateUsage is the --help text of "ockam identity create".
const identityCreateUsage = `Usage: ockam identity create --vault DIR [--passphrase-file FILE]

Creates the vault directory DIR (mode 0700) if needed, generates an identity
key and a first purpose key in it, and prints the new identifier on stdout.
It refuses a vault that already holds an identity.

Flags:
  --vault DIR              the vault directory, or a pkcs11: spec (required)
  --passphrase-file FILE   encrypt the keys with the passphrase in FILE
                           (mode 0600; one trailing newline is ignored)

Keys are encrypted with $OCKAM_VAULT_PASSPHRASE, or the --passphrase-file
passphrase, when set; otherwise they are stored unencrypted.
`

// identityCreate defines "ockam identity create".
func identityCreate(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault")
		if err != nil {
			return err
		}
		v, encrypted, err := vf.open(e, true)
		if err != nil {
			return err
		}
		id, err := secure.CreateIdentity(v, now)
		if errors.Is(err, vault.ErrExists) {
			return withHint(fmt.Errorf("vault %s already holds an identity", vf.dir),
				fmt.Sprintf("run 'ockam identity show --vault %s' to see it, or choose another --vault", vf.dir))
		}
		if err != nil {
			return fmt.Errorf("create identity in %s: %w", vf.dir, err)
		}
		if !encrypted {
			e.warnf("vault keys are stored unencrypted; set %s to encrypt them", passphraseEnv)
		}
		fmt.Fprintln(e.stdout, id.Identifier())
		return nil
	}
}

// identityShowUsage is the --help text of "ockam identity show".
const identityShowUsage = `Usage: ockam identity show --vault DIR [--identifier] [--passphrase-file FILE]

Prints the identity of the vault DIR: its identifier, identity key and
purpose key (hex), and the validity of the purpose-key attestation (RFC 3339).
It warns on stderr if the attestation is not valid now.

Flags:
  --vault DIR              the vault directory, or a pkcs11: spec (required)
  --identifier             print only the identifier
  --passphrase-file FILE   the file holding the vault passphrase
`

// identityShow defines "ockam identity show".
func identityShow(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	onlyID := fs.Bool("identifier", false, "print only the identifier")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault")
		if err != nil {
			return err
		}
		_, id, err := vf.load(e)
		if err != nil {
			return err
		}
		if *onlyID {
			fmt.Fprintln(e.stdout, id.Identifier())
			return nil
		}
		a := id.Public().Attestation()
		fmt.Fprintf(e.stdout, "identifier:   %s\n", id.Identifier())
		fmt.Fprintf(e.stdout, "identity key: %s\n", hex.EncodeToString(a.IdentityKey))
		fmt.Fprintf(e.stdout, "purpose key:  %s\n", hex.EncodeToString(a.PurposeKey[:]))
		fmt.Fprintf(e.stdout, "created:      %s\n", formatTime(a.Created))
		fmt.Fprintf(e.stdout, "expires:      %s\n", formatTime(a.Expires))
		if err := id.CheckAttestation(now); err != nil {
			e.warnf("%v", err)
		}
		return nil
	}
}

// identityExportUsage is the --help text of "ockam identity export".
const identityExportUsage = `Usage: ockam identity export --vault DIR --out FILE [--force] [--passphrase-file FILE]

Writes the public identity document of the vault DIR (its identity key and
current purpose-key attestation, in PEM) to FILE, mode 0644. Give it to the
peers that must recognize this identity; for an authority it is the file
listeners trust with --authority.

Flags:
  --vault DIR              the vault directory, or a pkcs11: spec (required)
  --out FILE               where to write it, "-" for stdout (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// identityExport defines "ockam identity export".
func identityExport(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	out := fs.String("out", "", "output file, - for stdout")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "vault", "out"); err != nil {
			return err
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		_, id, err := vf.load(e)
		if err != nil {
			return err
		}
		return writeOutput(e, *out, id.Public().MarshalFile(), *force)
	}
}
