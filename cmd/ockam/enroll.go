package main

import (
	"bufio"
	crand "crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Vault names of a device's pending offline enrollment: the ephemeral key
// of its request and the request.
const (
	pendingEphemeralKey = "enroll-ephemeral"
	pendingRequest      = "enroll.request"
)

// enrollTimeout bounds an online enrollment.
const enrollTimeout = 30 * time.Second

// enrollCommand returns "ockam enroll": itself the online enrollment, with
// the offline pair and token minting below it.
func enrollCommand() *command {
	return &command{name: "enroll", summary: "enroll this device with an authority's service", usage: enrollUsage, flags: enrollOnline,
		subs: []*command{
			{name: "token", subs: []*command{
				{name: "create", summary: "mint enrollment tokens (authority)", usage: tokenCreateUsage, flags: tokenCreate},
			}},
			{name: "request", summary: "write an enrollment request, to enroll offline", usage: enrollRequestUsage, flags: enrollRequest},
			{name: "accept", summary: "read the answer to an offline request", usage: enrollAcceptUsage, flags: enrollAccept},
		}}
}

// tokenFlags are --token and --token-file. --token shows in ps and in the
// shell's history: --token-file, or "-" for standard input, does not.
type tokenFlags struct{ token, file string }

func (tf *tokenFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&tf.token, "token", "", "enrollment token")
	fs.StringVar(&tf.file, "token-file", "", `file holding the enrollment token, "-" for standard input`)
}

// read returns the token of --token, --token-file, or standard input.
func (tf *tokenFlags) read(e *env) (enroll.Token, error) {
	s := tf.token
	switch {
	case tf.token != "" && tf.file != "":
		return enroll.Token{}, usagef("--token and --token-file exclude each other")
	case tf.file == "-":
		if e.stdin == nil {
			return enroll.Token{}, errors.New("no token on standard input")
		}
		b, err := io.ReadAll(io.LimitReader(e.stdin, maxEnrollTokenFile+1))
		if err != nil {
			return enroll.Token{}, fmt.Errorf("read the token from standard input: %w", err)
		}
		if len(b) > maxEnrollTokenFile {
			return enroll.Token{}, fmt.Errorf("standard input holds more than %d bytes, not one token", maxEnrollTokenFile)
		}
		s = string(b)
		clear(b)
	case tf.file != "":
		b, err := readBounded(tf.file, maxEnrollTokenFile, true)
		if err != nil {
			return enroll.Token{}, err
		}
		s = string(b)
	case tf.token == "":
		return enroll.Token{}, usagef("missing --token or --token-file")
	}
	t, err := enroll.ParseToken(s)
	if err != nil {
		return enroll.Token{}, fmt.Errorf("enrollment token: %w", err)
	}
	return t, nil
}

// enrollingIdentity loads the identity of the vault, or creates one if the
// vault has none yet.
func enrollingIdentity(e *env, vf *vaultFlags, now time.Time) (vault.Vault, *secure.LocalIdentity, error) {
	v, encrypted, err := vf.open(e, true)
	if err != nil {
		return nil, nil, err
	}
	if _, err := secure.ReadPublicIdentity(v); errors.Is(err, vault.ErrNotFound) {
		id, err := secure.CreateIdentity(v, now)
		if err != nil {
			return nil, nil, fmt.Errorf("create identity in %s: %w", vf.dir, err)
		}
		e.notef("created identity %s in %s", id.Identifier(), vf.dir)
		if !encrypted {
			e.warnf("vault keys are stored unencrypted; set %s to encrypt them", passphraseEnv)
		}
		return v, id, nil
	}
	lv, id, err := vf.load(e)
	if err != nil {
		return nil, nil, err
	}
	if err := id.CheckAttestation(now); err != nil {
		return nil, nil, err
	}
	return lv, id, nil
}

// readAuthority reads --authority and checks that the token is its own.
func readAuthority(path string, tok enroll.Token) (*secure.Identity, error) {
	auth, err := readIdentityFile(path)
	if err != nil {
		return nil, fmt.Errorf("--authority: %w", err)
	}
	if !tok.IsZero() && !tok.MintedBy(auth.Identifier()) {
		return nil, enrollFailure(fmt.Errorf("token not minted by %s: %w", auth.Identifier().Short(), enroll.ErrWrongAuthority))
	}
	return auth, nil
}

// enrollUsage is the --help text of "ockam enroll".
const enrollUsage = `Usage: ockam enroll --vault DIR --authority FILE --address tcp://HOST:PORT
                    (--token TOKEN | --token-file FILE|-) --out CRED_FILE [--force]
                    [--require-one-time-prekey]
       ockam enroll token create ...   (mint tokens; authority)
       ockam enroll request ...        (offline: write a request)
       ockam enroll accept ...         (offline: read the answer)

Enrolls the identity of the vault DIR (created if the vault has none) with
the authority's service at --address: fetches its enrollment bundle, checks
that the authority in FILE signed it, sends a request that only the
authority can read, carrying this identity and the single-use token, and
writes the credential of the answer to CRED_FILE (mode 0644), after
checking it. Prints the credential's id, subject and expiry.

Flags:
  --vault DIR              the device's vault directory (required)
  --authority FILE         the authority's identity file (required)
  --address tcp://HOST:PORT
                           the authority's service (required)
  --token TOKEN            the enrollment token (or --token-file: --token
                           shows in ps)
  --token-file FILE        a file holding the token (mode 0600), "-" for
                           standard input
  --require-one-time-prekey
                           refuse a bundle without a one-time prekey (the
                           authority's pool is exhausted, or this address
                           is over its rate) rather than enroll without one
  --out FILE               where to write the credential (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// errNoOneTimePrekey: --require-one-time-prekey, and the bundle has none.
var errNoOneTimePrekey = errors.New("the authority's bundle carries no one-time prekey (its pool is exhausted, " +
	"or this address fetched more than its rate: try again later)")

// enrollOnline defines "ockam enroll".
func enrollOnline(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	var tf tokenFlags
	tf.register(fs)
	authorityFile := fs.String("authority", "", "authority identity file")
	address := fs.String("address", "", "authority service address")
	out := fs.String("out", "", "credential file")
	force := fs.Bool("force", false, "replace an existing output file")
	requireOneTime := fs.Bool("require-one-time-prekey", false, "refuse a bundle without a one-time prekey")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault", "authority", "address", "out")
		if err != nil {
			return err
		}
		addr, err := parseTCPAddress("address", *address)
		if err != nil {
			return err
		}
		tok, err := tf.read(e)
		if err != nil {
			return err
		}
		auth, err := readAuthority(*authorityFile, tok)
		if err != nil {
			return err
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		_, id, err := enrollingIdentity(e, &vf, now)
		if err != nil {
			return err
		}
		c, err := enrollAt(addr, id, auth, tok, now, *requireOneTime)
		if err != nil {
			return enrollFailure(err)
		}
		if err := writeOutput(e, *out, c.MarshalFile(), *force); err != nil {
			return err
		}
		printEnrolled(e, c)
		return nil
	}
}

// enrollAt runs the online enrollment against the service at addr.
// With requireOneTime, a bundle without a one-time prekey is refused
// (errNoOneTimePrekey) and nothing is sent.
func enrollAt(addr string, id *secure.LocalIdentity, auth *secure.Identity, tok enroll.Token, now time.Time, requireOneTime bool) (*secure.Credential, error) {
	nc, err := net.DialTimeout("tcp", addr, enrollTimeout)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(enrollTimeout))
	// Buffered reads: a reply's header and body in one read.
	rw := struct {
		io.Reader
		io.Writer
	}{bufio.NewReader(nc), nc}
	b, err := wire.FetchBundle(rw)
	if err != nil {
		return nil, err
	}
	if err := b.Verify(auth, now); err != nil {
		return nil, err
	}
	if requireOneTime && len(b.OneTimePrekeys) == 0 {
		return nil, errNoOneTimePrekey
	}
	var k [32]byte
	crand.Read(k[:]) // never fails (Go 1.24+)
	oneTime := -1
	if len(b.OneTimePrekeys) > 0 {
		oneTime = rand.IntN(len(b.OneTimePrekeys))
	}
	enr, err := enroll.NewEnrollment(id, b, tok, oneTime, vault.NewDHFromScalar(k))
	if err != nil {
		return nil, err
	}
	answer, err := wire.SubmitEnrollment(rw, enr.Request())
	if err != nil {
		return nil, err
	}
	v, err := secure.NewVerifier(auth)
	if err != nil {
		return nil, err
	}
	return enr.OpenAnswer(answer, v, now)
}

// printEnrolled prints what enrollment got.
func printEnrolled(e *env, c *secure.Credential) {
	fmt.Fprintf(e.stdout, "credential: %s\n", c.ID)
	fmt.Fprintf(e.stdout, "subject:    %s\n", c.Subject)
	fmt.Fprintf(e.stdout, "expires:    %s\n", formatTime(c.ExpiresAt))
}

// enrollRequestUsage is the --help text of "ockam enroll request".
const enrollRequestUsage = `Usage: ockam enroll request --vault DIR --authority FILE --bundle FILE
                            (--token TOKEN | --token-file FILE|-) --out REQUEST [--force]

The offline half of 'ockam enroll': writes the enrollment request of the
identity of the vault DIR (created if the vault has none) to REQUEST, for
the authority to answer with 'ockam authority process'. The bundle (from
'ockam authority bundle') must be signed by the authority in FILE. The vault
keeps the request's ephemeral key until 'ockam enroll accept' reads the
answer; a new request replaces a pending one.

Flags:
  --vault DIR              the device's vault directory (required)
  --authority FILE         the authority's identity file (required)
  --bundle FILE            the authority's enrollment bundle (required)
  --token TOKEN            the enrollment token (or --token-file: --token
                           shows in ps)
  --token-file FILE        a file holding the token (mode 0600), "-" for
                           standard input
  --out FILE               where to write the request, "-" for stdout
                           (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// enrollRequest defines "ockam enroll request".
func enrollRequest(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	var tf tokenFlags
	tf.register(fs)
	authorityFile := fs.String("authority", "", "authority identity file")
	bundleFile := fs.String("bundle", "", "enrollment bundle file")
	out := fs.String("out", "", "request file")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault", "authority", "bundle", "out")
		if err != nil {
			return err
		}
		tok, err := tf.read(e)
		if err != nil {
			return err
		}
		auth, err := readAuthority(*authorityFile, tok)
		if err != nil {
			return err
		}
		b, err := readParsed(*bundleFile, maxBundleFile, enroll.ParseBundleFile)
		if err != nil {
			return err
		}
		if err := b.Verify(auth, now); err != nil {
			return enrollFailure(fmt.Errorf("%s: %w", *bundleFile, err))
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		v, id, err := enrollingIdentity(e, &vf, now)
		if err != nil {
			return err
		}
		if err := v.DeleteKey(pendingEphemeralKey); err != nil && !errors.Is(err, vault.ErrNotFound) {
			return err
		}
		eph, err := v.GenerateDH(pendingEphemeralKey)
		if err != nil {
			return err
		}
		oneTime := -1
		if len(b.OneTimePrekeys) > 0 {
			oneTime = rand.IntN(len(b.OneTimePrekeys))
		}
		enr, err := enroll.NewEnrollment(id, b, tok, oneTime, eph)
		if err != nil {
			return enrollFailure(err)
		}
		if err := v.WriteRecord(pendingRequest, enr.Request()); err != nil {
			return err
		}
		if err := writeOutput(e, *out, enroll.MarshalRequestFile(enr.Request()), *force); err != nil {
			return err
		}
		if *out != "-" {
			h := enr.RequestHash()
			fmt.Fprintf(e.stdout, "request: %x\n", h[:4])
		}
		return nil
	}
}

// enrollAcceptUsage is the --help text of "ockam enroll accept".
const enrollAcceptUsage = `Usage: ockam enroll accept --vault DIR --authority FILE --in ANSWERS --out CRED_FILE [--force]

Finds, in ANSWERS (from 'ockam authority process'; it may hold the answers
of many devices), the answer to the request 'ockam enroll request' made for
the vault DIR, decrypts it, checks the credential, and writes it to
CRED_FILE (mode 0644). Then forgets the pending request.

Flags:
  --vault DIR              the device's vault directory (required)
  --authority FILE         the authority's identity file (required)
  --in FILE                the answers (required)
  --out FILE               where to write the credential (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// enrollAccept defines "ockam enroll accept".
func enrollAccept(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	authorityFile := fs.String("authority", "", "authority identity file")
	in := fs.String("in", "", "answer file")
	out := fs.String("out", "", "credential file")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault", "authority", "in", "out")
		if err != nil {
			return err
		}
		auth, err := readAuthority(*authorityFile, enroll.Token{})
		if err != nil {
			return err
		}
		data, err := readBounded(*in, maxBatchFile, false)
		if err != nil {
			return err
		}
		answers, err := enroll.ParseAnswerFile(data)
		if err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		v, id, err := vf.load(e)
		if err != nil {
			return err
		}
		enr, err := pendingEnrollment(v, id, vf.dir)
		if err != nil {
			return err
		}
		answer, err := findAnswer(answers, enr.RequestHash())
		if err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		verifier, err := secure.NewVerifier(auth)
		if err != nil {
			return err
		}
		c, err := enr.OpenAnswer(answer, verifier, now)
		if err != nil {
			return enrollFailure(err)
		}
		if err := writeOutput(e, *out, c.MarshalFile(), *force); err != nil {
			return err
		}
		if err := v.DeleteKey(pendingEphemeralKey); err != nil {
			e.warnf("forget the pending request: %v", err)
		}
		printEnrolled(e, c)
		return nil
	}
}

// pendingEnrollment rebuilds the device's pending offline request.
func pendingEnrollment(v vault.Vault, id *secure.LocalIdentity, dir string) (*enroll.Enrollment, error) {
	eph, err := v.DH(pendingEphemeralKey)
	if errors.Is(err, vault.ErrNotFound) {
		return nil, withHint(fmt.Errorf("vault %s has no pending enrollment request", dir),
			"run 'ockam enroll request' first (a request is answered once)")
	}
	if err != nil {
		return nil, err
	}
	req, err := v.ReadRecord(pendingRequest)
	if err != nil {
		return nil, fmt.Errorf("vault %s: pending request: %w", dir, err)
	}
	return enroll.ResumeEnrollment(id, req, eph)
}

// findAnswer returns the answer to the request with hash h.
func findAnswer(answers [][]byte, h [32]byte) ([]byte, error) {
	for _, a := range answers {
		if ah, err := enroll.AnswerRequestHash(a); err == nil && ah == h {
			return a, nil
		}
	}
	return nil, withHint(fmt.Errorf("no answer to this device's request %x (of %d answers)", h[:4], len(answers)),
		"the authority may have refused it: see the output of 'ockam authority process'")
}
