package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// credentialCommand returns "ockam credential".
func credentialCommand() *command {
	return &command{name: "credential", subs: []*command{
		{name: "issue", summary: "issue a credential to an identity (authority)", usage: credentialIssueUsage, flags: credentialIssue},
		{name: "show", summary: "print the fields of a credential", usage: credentialShowUsage, flags: credentialShow},
		{name: "verify", summary: "check a credential as a listener would", usage: credentialVerifyUsage, flags: credentialVerify},
	}}
}

// defaultCredentialTTL is how long an issued credential is valid unless
// --ttl says otherwise.
const defaultCredentialTTL = 30 * day

// credentialIssueUsage is the --help text of "ockam credential issue".
const credentialIssueUsage = `Usage: ockam credential issue --vault AUTHORITY_DIR --subject IDENTITY
                             [--attr KEY=VALUE ...] [--ttl DURATION] --out FILE

Signs, with the identity in the vault AUTHORITY_DIR, a credential stating
that IDENTITY has the given attributes until now + DURATION. Writes it to
FILE (PEM, mode 0644) and prints its id on stdout.

Flags:
  --vault DIR              the authority's vault directory, or a pkcs11: spec
                           (required)
  --subject IDENTITY       an identity file, or an identifier (I and 64 hex
                           digits) (required)
  --attr KEY=VALUE         an attribute; repeat for more (keys of letters,
                           digits, '_', '.' and '-'; each key once)
  --ttl DURATION           how long it is valid: 720h, 90m, 30d (default 720h)
  --out FILE               where to write it, "-" for stdout (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// credentialIssue defines "ockam credential issue".
func credentialIssue(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	subject := fs.String("subject", "", "identity file or identifier")
	attrs := attrFlags{}
	fs.Var(attrs, "attr", "KEY=VALUE attribute (repeatable)")
	ttl := ttlFlag(defaultCredentialTTL)
	fs.Var(&ttl, "ttl", "validity period")
	out := fs.String("out", "", "output file, - for stdout")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault", "subject", "out")
		if err != nil {
			return err
		}
		sub, err := resolveSubject("subject", *subject)
		if err != nil {
			return err
		}
		if sub.IsWeak() {
			return fmt.Errorf("--subject %s is the identifier of a small-order key, which anyone can sign for", sub)
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		_, authority, err := vf.load(e)
		if err != nil {
			return err
		}
		c, err := secure.IssueCredential(authority.Signer(), sub, attrs, now, time.Duration(ttl), nil)
		if err != nil {
			return fmt.Errorf("issue credential: %w", err)
		}
		if err := writeOutput(e, *out, c.MarshalFile(), *force); err != nil {
			return err
		}
		if *out != "-" {
			fmt.Fprintln(e.stdout, c.ID)
		}
		return nil
	}
}

// credentialShowUsage is the --help text of "ockam credential show".
const credentialShowUsage = `Usage: ockam credential show FILE

Prints the fields of the credential in FILE: id, issuer, subject, validity,
attributes and encoded size. It does not verify it: see 'ockam credential
verify'.
`

// credentialShow defines "ockam credential show".
func credentialShow(*flag.FlagSet) action {
	return func(e *env, args []string) error {
		path, err := oneArg(args, "credential FILE")
		if err != nil {
			return err
		}
		c, err := readCredentialFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "id:         %s\n", c.ID)
		fmt.Fprintf(e.stdout, "issuer:     %s\n", c.Issuer)
		fmt.Fprintf(e.stdout, "subject:    %s\n", c.Subject)
		fmt.Fprintf(e.stdout, "issued:     %s\n", formatTime(c.IssuedAt))
		fmt.Fprintf(e.stdout, "expires:    %s\n", formatTime(c.ExpiresAt))
		fmt.Fprintf(e.stdout, "attributes: %d\n", len(c.Attributes))
		for _, k := range slices.Sorted(maps.Keys(c.Attributes)) {
			fmt.Fprintf(e.stdout, "  %s = %q\n", k, c.Attributes[k])
		}
		fmt.Fprintf(e.stdout, "size:       %d bytes\n", len(c.Marshal()))
		return nil
	}
}

// credentialVerifyUsage is the --help text of "ockam credential verify".
const credentialVerifyUsage = `Usage: ockam credential verify --authority FILE [--authority FILE ...]
                              [--revocations FILE ...] [--subject IDENTITY] FILE

Checks the credential in FILE as a listener would: issued by one of the
trusted authorities, signature, validity now, not revoked, and issued to
IDENTITY (by default, to the subject it names). Prints "valid: SUBJECT until
EXPIRY" and exits 0, or prints why not and exits 1.

Flags:
  --authority FILE     an authority's identity file to trust (required;
                       repeatable)
  --revocations FILE   a revocation list signed by a trusted authority
                       (repeatable)
  --subject IDENTITY   the identity presenting the credential: an identity
                       file or an identifier
`

// credentialVerify defines "ockam credential verify".
func credentialVerify(fs *flag.FlagSet) action {
	var authorities, lists stringList
	fs.Var(&authorities, "authority", "trusted authority identity file (repeatable)")
	fs.Var(&lists, "revocations", "revocation list file (repeatable)")
	subject := fs.String("subject", "", "identity presenting the credential")
	return func(e *env, args []string) error {
		path, err := oneArg(args, "credential FILE")
		if err != nil {
			return err
		}
		if err := required(fs, "authority"); err != nil {
			return err
		}
		now, err := e.now()
		if err != nil {
			return err
		}
		v, err := newVerifier(authorities)
		if err != nil {
			return err
		}
		for _, p := range lists {
			if err := loadRevocations(v, p); err != nil {
				return err
			}
		}
		c, err := readCredentialFile(path)
		if err != nil {
			return err
		}
		sub := c.Subject
		if *subject != "" {
			if sub, err = resolveSubject("subject", *subject); err != nil {
				return err
			}
		}
		if err := v.VerifyCredential(c, sub, now); err != nil {
			return verifyFailure(err)
		}
		fmt.Fprintf(e.stdout, "valid: %s until %s\n", c.Subject, formatTime(c.ExpiresAt))
		return nil
	}
}

// newVerifier returns a Verifier trusting the authorities in the given
// identity files.
func newVerifier(paths []string) (*secure.Verifier, error) {
	var ids []*secure.Identity
	for _, p := range paths {
		id, err := readIdentityFile(p)
		if err != nil {
			return nil, fmt.Errorf("--authority: %w", err)
		}
		ids = append(ids, id)
	}
	return secure.NewVerifier(ids...)
}

// loadRevocations reads the revocation list at path and makes it current
// in v.
func loadRevocations(v *secure.Verifier, path string) error {
	l, err := readRevocationFile(path)
	if err != nil {
		return err
	}
	return acceptList(v, path, l)
}

// acceptList makes the list l, read from path, current in v, which must
// trust its issuer.
func acceptList(v *secure.Verifier, path string, l *secure.RevocationList) error {
	err := v.UpdateRevocations(l)
	switch {
	case errors.Is(err, secure.ErrUnknownIssuer):
		return withHint(fmt.Errorf("revocation list %s is signed by %s, which is not a trusted authority: %w", path, l.Issuer, err),
			"pass the identity file of its issuer with --authority")
	case errors.Is(err, secure.ErrBadSignature):
		return fmt.Errorf("revocation list %s has a bad signature: %w", path, err)
	case err != nil:
		return fmt.Errorf("revocation list %s: %w", path, err)
	}
	return nil
}

// verifyFailures maps each verification outcome to what ockam says.
var verifyFailures = []struct {
	err error
	msg string
}{
	{secure.ErrRevoked, "credential is revoked"},
	{secure.ErrExpired, "credential is expired"},
	{secure.ErrNotYetValid, "credential is not yet valid"},
	{secure.ErrUnknownIssuer, "credential was issued by an unknown authority"},
	{secure.ErrBadSignature, "credential has a bad signature"},
	{secure.ErrWrongSubject, "credential was issued to another identity"},
}

// verifyFailure says why a credential did not verify, keeping the detail.
func verifyFailure(err error) error {
	for _, f := range verifyFailures {
		if errors.Is(err, f.err) {
			return fmt.Errorf("%s: %w", f.msg, err)
		}
	}
	return fmt.Errorf("credential does not verify: %w", err)
}
