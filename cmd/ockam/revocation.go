package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// revocationCommand returns "ockam revocation".
func revocationCommand() *command {
	return &command{name: "revocation", subs: []*command{
		{name: "add", summary: "revoke a subject or a credential (authority)", usage: revocationAddUsage, flags: revocationAdd},
		{name: "show", summary: "print a revocation list", usage: revocationShowUsage, flags: revocationShow},
	}}
}

// revocationAddUsage is the --help text of "ockam revocation add".
const revocationAddUsage = `Usage: ockam revocation add --vault AUTHORITY_DIR (--list FILE | --db FILE)
                           [--subject IDENTITY] [--credential ID]

Adds entries to the revocation list FILE, signed by the identity in the
vault AUTHORITY_DIR: creates the list (sequence 1) if FILE does not exist,
else checks that this authority signed it and writes a new list with the
next sequence number and every old entry. Prints the new sequence number
and entry count. Listeners accept only a list with a higher sequence number
than the one they have.

Flags:
  --vault DIR              the authority's vault directory, or a pkcs11: spec
                           (required)
  --list FILE              the revocation list to create or update (this
                           or --db is required)
  --db FILE                instead of a list file, the store of the
                           authority's service ('ockam authority serve'),
                           which then serves the new list; through the
                           running service, if there is one
  --subject IDENTITY       revoke every credential of this identity: an
                           identity file or an identifier
  --credential ID          revoke one credential: its id (32 hex digits, as
                           printed by 'ockam credential issue') or its file
  --next-update D          when the list is due to be replaced, after its
                           issue time (default 7d, with --list; the
                           service signs with 7d): parties that hold it
                           after then log it as stale
  --passphrase-file FILE   the file holding the vault passphrase

At least one of --subject and --credential is required; with both, both
entries are added. FILE is replaced atomically; do not run two updates of
the same list at once.
`

// revocationAdd defines "ockam revocation add".
func revocationAdd(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	list := fs.String("list", "", "revocation list file")
	subject := fs.String("subject", "", "identity to revoke")
	credential := fs.String("credential", "", "credential id to revoke")
	db := fs.String("db", "", "authority store")
	nextUpdate := ttlFlag(secure.DefaultRevocationListValidity)
	fs.Var(&nextUpdate, "next-update", "how long until the list is due to be replaced")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault")
		if err != nil {
			return err
		}
		if (*list == "") == (*db == "") {
			return usagef("want one of --list FILE and --db FILE")
		}
		if *subject == "" && *credential == "" {
			return usagef("missing --subject or --credential: nothing to revoke")
		}
		if *list == "-" {
			return usagef("--list must name a file: it is read and replaced")
		}
		var subjects []secure.Identifier
		var credentials []secure.CredentialID
		if *subject != "" {
			id, err := resolveSubject("subject", *subject)
			if err != nil {
				return err
			}
			subjects = append(subjects, id)
		}
		if *credential != "" {
			id, err := resolveCredentialID(*credential)
			if err != nil {
				return err
			}
			credentials = append(credentials, id)
		}
		if *db != "" {
			return revokeInStore(e, &vf, *db, subjects, credentials)
		}
		_, authority, err := vf.load(e)
		if err != nil {
			return err
		}
		old, err := readOwnList(*list, authority.Public())
		if err != nil {
			return err
		}
		var seq uint64 = 1
		if old != nil {
			seq = old.Sequence + 1
			subjects = append(subjects, old.Subjects()...)
			credentials = append(credentials, old.Credentials()...)
		}
		l, err := secure.NewRevocationList(authority.Signer(), seq, now, now.Add(time.Duration(nextUpdate)), subjects, credentials)
		if err != nil {
			return fmt.Errorf("sign revocation list: %w", err)
		}
		if err := writeFileAtomic(*list, l.MarshalFile(), publicFileMode, true); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "sequence: %d\n", l.Sequence)
		fmt.Fprintf(e.stdout, "entries:  %d\n", len(l.Subjects())+len(l.Credentials()))
		return nil
	}
}

// readOwnList reads the revocation list at path and checks that authority
// signed it. It returns nil if there is no file at path.
func readOwnList(path string, authority *secure.Identity) (*secure.RevocationList, error) {
	l, err := readRevocationFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := secure.NewVerifier(authority)
	if err != nil {
		return nil, err
	}
	err = v.UpdateRevocations(l)
	switch {
	case errors.Is(err, secure.ErrUnknownIssuer):
		return nil, withHint(fmt.Errorf("revocation list %s was signed by %s, not by this vault's identity %s",
			path, l.Issuer, authority.Identifier()),
			"pass the vault of the authority that signed it, or another --list")
	case err != nil:
		return nil, fmt.Errorf("revocation list %s: %w", path, err)
	}
	return l, nil
}

// revocationShowUsage is the --help text of "ockam revocation show".
const revocationShowUsage = `Usage: ockam revocation show [--authority FILE] FILE

Prints the revocation list in FILE: issuer, sequence number, issue time, and
the revoked subjects and credential ids. With --authority, it first checks
that the list is signed by that authority.

Flags:
  --authority FILE   the identity file of the authority that must have signed
                     the list
`

// revocationShow defines "ockam revocation show".
func revocationShow(fs *flag.FlagSet) action {
	authority := fs.String("authority", "", "identity file of the expected signer")
	return func(e *env, args []string) error {
		path, err := oneArg(args, "revocation list FILE")
		if err != nil {
			return err
		}
		l, err := readRevocationFile(path)
		if err != nil {
			return err
		}
		if *authority != "" {
			v, err := newVerifier([]string{*authority})
			if err != nil {
				return err
			}
			if err := acceptList(v, path, l); err != nil {
				return err
			}
		}
		printRevocationList(e, l, *authority != "")
		return nil
	}
}

// printRevocationList prints the fields of l.
func printRevocationList(e *env, l *secure.RevocationList, verified bool) {
	fmt.Fprintf(e.stdout, "issuer:      %s\n", l.Issuer)
	fmt.Fprintf(e.stdout, "sequence:    %d\n", l.Sequence)
	fmt.Fprintf(e.stdout, "issued:      %s\n", formatTime(l.IssuedAt))
	fmt.Fprintf(e.stdout, "next update: %s\n", formatTime(l.NextUpdate))
	if verified {
		fmt.Fprintln(e.stdout, "signature:   verified")
	} else {
		fmt.Fprintln(e.stdout, "signature:   not checked (pass --authority to check it)")
	}
	subjects, credentials := l.Subjects(), l.Credentials()
	fmt.Fprintf(e.stdout, "subjects:    %d\n", len(subjects))
	for _, s := range subjects {
		fmt.Fprintf(e.stdout, "  %s\n", s)
	}
	fmt.Fprintf(e.stdout, "credentials: %d\n", len(credentials))
	for _, c := range credentials {
		fmt.Fprintf(e.stdout, "  %s\n", c)
	}
}
