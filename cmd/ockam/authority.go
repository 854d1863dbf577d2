package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ockam-addons/telegraf-ockam/authority"
	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
)

// authorityCommand returns "ockam authority".
func authorityCommand() *command {
	return &command{name: "authority", subs: []*command{
		{name: "serve", summary: "run the enrollment service (authority)", usage: authorityServeUsage, flags: authorityServe},
		{name: "process", summary: "answer a file of enrollment requests (authority)", usage: authorityProcessUsage, flags: authorityProcess},
		{name: "bundle", summary: "write the enrollment bundle for offline devices (authority)", usage: authorityBundleUsage, flags: authorityBundle},
		{name: "rotate", summary: "make a new signed prekey for bundles (authority)", usage: authorityRotateUsage, flags: authorityRotate},
		{name: "status", summary: "check the store and print its counts (authority)", usage: authorityStatusUsage, flags: authorityStatus},
	}}
}

// authorityServeUsage is the --help text of "ockam authority serve".
const authorityServeUsage = `Usage: ockam authority serve --vault AUTHORITY_DIR --db FILE
                             [--listen tcp://HOST:PORT] [--max-connections-per-ip N]
                             [--debug]

Runs the enrollment service of the authority in the vault AUTHORITY_DIR:
it hands out enrollment bundles, answers enrollment requests with
credentials, and serves the current signed revocation list, on --listen.
Its state (token hashes, one-time prekeys, issued credentials, the
revocation list) is in the store FILE, created if missing (mode 0600).

While it runs it holds FILE, and the commands that use FILE
('ockam enroll token create', 'ockam revocation add --db', 'ockam authority
process', 'bundle' and 'status') reach it through the socket FILE.sock.

One address (an IPv4 address, or an IPv6 /64) holds at most
--max-connections-per-ip connections (more are closed at once) and sends
its first request within 10s. It gets at most 60 one-time prekeys with its
bundles at once, then one a second (more bundles carry none), so that no
one drains the pool. Each kind of refusal is warned at most once a minute;
bundles that go out without a one-time prekey because the pool is
exhausted raise a warning every 10s.

Prints "listening on tcp://ADDRESS as IDENTIFIER" on stdout once ready,
logs on stderr, and stops on SIGINT or SIGTERM.

Flags:
  --vault DIR              the authority's vault directory (required)
  --db FILE                the authority's store (required)
  --listen tcp://HOST:PORT where to listen (default tcp://127.0.0.1:4100;
                           port 0 picks a free one)
  --max-connections-per-ip N
                           connections one address may hold (default 256)
  --debug                  also log every credential issued
  --passphrase-file FILE   the file holding the vault passphrase
`

// authorityServe defines "ockam authority serve".
func authorityServe(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	db := fs.String("db", "", "store file")
	listen := fs.String("listen", "tcp://127.0.0.1:4100", "listen address")
	debug := fs.Bool("debug", false, "log every credential issued")
	perIP := fs.Int("max-connections-per-ip", authority.DefaultMaxConnectionsPerIP, "connections one address may hold")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "vault", "db"); err != nil {
			return err
		}
		if *perIP <= 0 {
			return usagef("--max-connections-per-ip must be positive")
		}
		addr, err := parseTCPAddress("listen", *listen)
		if err != nil {
			return err
		}
		v, id, err := vf.load(e)
		if err != nil {
			return err
		}
		store, err := authority.OpenStore(*db, id.Identifier())
		if errors.Is(err, authority.ErrLocked) {
			return withHint(err, "is another 'ockam authority serve' running with this store?")
		}
		if err != nil {
			return err
		}
		// Telegraf's log format, as the relay and the inlet print.
		log := slog.New(logger.NewLines(e.stderr, "authority", *debug).Handler())
		a, err := authority.New(authority.Config{Vault: v, Identity: id, Store: store, Now: e.clock(), Logger: log})
		if err != nil {
			store.Close()
			return err
		}
		defer a.Close()
		return serveAuthority(e, &authority.Service{Authority: a, Logger: log, MaxConnectionsPerIP: *perIP}, addr, *db)
	}
}

// serveAuthority listens on addr and the control socket of db, and serves
// s until SIGINT or SIGTERM.
func serveAuthority(e *env, s *authority.Service, addr, db string) error {
	a, log := s.Authority, s.Logger
	// Before the control socket can revoke: the first list is the empty one.
	if err := s.EnsureRevocationList(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	ctl, err := authority.ListenControl(db)
	if err != nil {
		ln.Close()
		return err
	}
	defer os.Remove(authority.ControlPath(db))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- authority.ServeControl(ctx, ctl, a, log) }()
	fmt.Fprintf(e.stdout, "listening on tcp://%s as %s\n", ln.Addr(), a.Identifier())
	log.Info("serving", "address", ln.Addr().String(), "authority", a.Identifier().String(), "control", authority.ControlPath(db))
	err = s.Serve(ctx, ln)
	stop()
	if cerr := <-ctlDone; err == nil {
		err = cerr
	}
	log.Info("stopped")
	return err
}

// authorityProcessUsage is the --help text of "ockam authority process".
const authorityProcessUsage = `Usage: ockam authority process --vault AUTHORITY_DIR --db FILE --in REQUESTS
                               --out ANSWERS [--force]

Answers the enrollment requests in REQUESTS (made by 'ockam enroll request';
files of many devices may be concatenated) as the running service would,
and writes the answers to ANSWERS, one per request answered. Reports
progress on stderr, and each refused request with its reason. Exits 1 if
any request was refused (the answers of the others are written).

Flags:
  --vault DIR              the authority's vault directory (required)
  --db FILE                the authority's store (required)
  --in FILE                the requests (required)
  --out FILE               where to write the answers, "-" for stdout
                           (required)
  --force                  replace ANSWERS if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// authorityProcess defines "ockam authority process".
func authorityProcess(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	db := fs.String("db", "", "store file")
	in := fs.String("in", "", "request file")
	out := fs.String("out", "", "answer file")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "vault", "db", "in", "out"); err != nil {
			return err
		}
		data, err := readBounded(*in, maxBatchFile, false)
		if err != nil {
			return err
		}
		requests, err := enroll.ParseRequestFile(data)
		if err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		a, err := openAdmin(e, &vf, *db)
		if err != nil {
			return err
		}
		defer a.Close()
		p := &progress{e: e, what: "processed", total: len(requests)}
		results := authority.ProcessRequests(a, requests, processWorkers, p.report)
		var answers bytes.Buffer
		refused := 0
		for i, r := range results {
			if r.Err != nil {
				refused++
				h := sha256Prefix(requests[i])
				e.warnf("request %d (%s…) refused: %v", i+1, h, r.Err)
				continue
			}
			answers.Write(enroll.MarshalAnswerFile(r.Answer))
		}
		if answers.Len() > 0 {
			if err := writeOutput(e, *out, answers.Bytes(), *force); err != nil {
				return err
			}
		}
		fmt.Fprintf(e.stderr, "ockam: answered %d, refused %d\n", len(requests)-refused, refused)
		if refused > 0 {
			return fmt.Errorf("%d of %d requests refused", refused, len(requests))
		}
		return nil
	}
}

// sha256Prefix names a request in messages by the hash its answer carries.
func sha256Prefix(request []byte) string {
	h := enroll.RequestHash(request)
	return fmt.Sprintf("%x", h[:4])
}

// authorityBundleUsage is the --help text of "ockam authority bundle".
const authorityBundleUsage = `Usage: ockam authority bundle --vault AUTHORITY_DIR --db FILE --out FILE
                              [--one-time N] [--ttl DURATION] [--force]

Writes the enrollment bundle of the authority (its signed prekey, signed by
its identity key) to FILE, for devices that enroll offline with 'ockam
enroll request'. With --one-time N, the bundle also carries N new one-time
prekeys (at most 1024), stored until the bundle expires; each enrolls one
device, which picks one at random.

Flags:
  --vault DIR              the authority's vault directory (required)
  --db FILE                the authority's store (required)
  --out FILE               where to write the bundle, "-" for stdout
                           (required)
  --one-time N             one-time prekeys to include (default 0)
  --ttl DURATION           how long the one-time prekeys stay usable
                           (default: as long as the signed prekey)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// authorityBundle defines "ockam authority bundle".
func authorityBundle(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	db := fs.String("db", "", "store file")
	out := fs.String("out", "", "bundle file")
	oneTime := fs.Int("one-time", 0, "one-time prekeys")
	var ttl ttlFlag
	fs.Var(&ttl, "ttl", "lifetime of the one-time prekeys")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "vault", "db", "out"); err != nil {
			return err
		}
		if *oneTime < 0 || *oneTime > enroll.MaxOneTimePrekeys {
			return usagef("--one-time %d: want 0 to %d", *oneTime, enroll.MaxOneTimePrekeys)
		}
		if err := checkOutput(*out, *force); err != nil {
			return err
		}
		a, err := openAdmin(e, &vf, *db)
		if err != nil {
			return err
		}
		defer a.Close()
		b, err := a.Bundle(*oneTime, time.Duration(ttl))
		if err != nil {
			return err
		}
		if err := writeOutput(e, *out, b.MarshalFile(), *force); err != nil {
			return err
		}
		if *out != "-" {
			fmt.Fprintf(e.stdout, "expires: %s\none-time prekeys: %d\n", formatTime(b.Expires), len(b.OneTimePrekeys))
		}
		return nil
	}
}

// authorityRotateUsage is the --help text of "ockam authority rotate".
const authorityRotateUsage = `Usage: ockam authority rotate --vault AUTHORITY_DIR [--ttl DURATION]

Makes a new signed prekey for enrollment bundles, valid for DURATION, and
prints its expiry. The previous one stays valid until it expires, so
devices holding an older bundle can still enroll; the one before it is
deleted. A running service picks the new one up within 10 seconds. The
service also rotates by itself when a third of the lifetime is left.

Flags:
  --vault DIR              the authority's vault directory (required)
  --ttl DURATION           how long it is valid (default 90d)
  --passphrase-file FILE   the file holding the vault passphrase
`

// authorityRotate defines "ockam authority rotate".
func authorityRotate(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	ttl := ttlFlag(authority.DefaultSignedPrekeyTTL)
	fs.Var(&ttl, "ttl", "validity period")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault")
		if err != nil {
			return err
		}
		v, id, err := vf.load(e)
		if err != nil {
			return err
		}
		b, err := authority.RotateSignedPrekey(v, id, now, time.Duration(ttl))
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "signed prekey: %x\nexpires: %s\n", b.SignedPrekey, formatTime(b.Expires))
		return nil
	}
}

// authorityStatusUsage is the --help text of "ockam authority status".
const authorityStatusUsage = `Usage: ockam authority status --vault AUTHORITY_DIR --db FILE

Checks that the store FILE is consistent (every used token names the
credential it was used for, and back; so tokens used = credentials
issued) and prints its counts. Exits 1 if it is not consistent.

Flags:
  --vault DIR              the authority's vault directory (required)
  --db FILE                the authority's store (required)
  --passphrase-file FILE   the file holding the vault passphrase
`

// authorityStatus defines "ockam authority status".
func authorityStatus(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	db := fs.String("db", "", "store file")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "vault", "db"); err != nil {
			return err
		}
		a, err := openAdmin(e, &vf, *db)
		if err != nil {
			return err
		}
		defer a.Close()
		st, err := a.Stats()
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "authority:           %s\n", a.Identifier())
		fmt.Fprintf(e.stdout, "tokens:              %d\n", st.Tokens)
		fmt.Fprintf(e.stdout, "tokens used:         %d\n", st.TokensUsed)
		fmt.Fprintf(e.stdout, "credentials issued:  %d\n", st.Credentials)
		fmt.Fprintf(e.stdout, "one-time prekeys:    %d (%d used)\n", st.OneTimePrekeys, st.OneTimePrekeysUsed)
		fmt.Fprintf(e.stdout, "revocation sequence: %d (%d entries)\n", st.RevocationSequence, st.RevokedEntries)
		fmt.Fprintln(e.stdout, "consistent:          yes")
		return nil
	}
}

// tokenCreateUsage is the --help text of "ockam enroll token create".
const tokenCreateUsage = `Usage: ockam enroll token create --vault AUTHORITY_DIR --db FILE --count N
                                 [--attr KEY=VALUE ...] [--ttl DURATION]
                                 [--credential-ttl DURATION] --out FILE [--force]

Mints N single-use enrollment tokens of the authority in the vault
AUTHORITY_DIR, each granting a credential with the given attributes, valid
for --credential-ttl from enrollment. The tokens are written to FILE, one a
line (mode 0600: they are secrets); the store FILE keeps only their hashes
(through the running service, if there is one). Reports progress on stderr.
A token not used within --ttl expires.

Flags:
  --vault DIR              the authority's vault directory (required)
  --db FILE                the authority's store (required)
  --count N                how many tokens (required)
  --attr KEY=VALUE         an attribute of the credentials; repeat for more
  --ttl DURATION           how long the tokens can be used (default 7d)
  --credential-ttl DURATION
                           how long the credentials are valid (default 30d)
  --out FILE               where to write the tokens, "-" for stdout
                           (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// defaultTokenTTL is how long a token can be used unless --ttl says otherwise.
const defaultTokenTTL = 7 * day

// tokenChunk is how many tokens are stored per transaction.
const tokenChunk = 10_000

// tokenCreate defines "ockam enroll token create".
func tokenCreate(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	db := fs.String("db", "", "store file")
	count := fs.Int("count", 0, "number of tokens")
	attrs := attrFlags{}
	fs.Var(attrs, "attr", "KEY=VALUE attribute (repeatable)")
	ttl := ttlFlag(defaultTokenTTL)
	fs.Var(&ttl, "ttl", "token lifetime")
	credTTL := ttlFlag(defaultCredentialTTL)
	fs.Var(&credTTL, "credential-ttl", "credential lifetime")
	out := fs.String("out", "", "token file")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault", "db", "out")
		if err != nil {
			return err
		}
		if *count <= 0 {
			return usagef("--count must be positive")
		}
		if err := secure.CheckAttributes(attrs); err != nil {
			return fmt.Errorf("--attr: %w", err)
		}
		spec := authority.TokenSpec{Attributes: attrs, Expires: now.Add(time.Duration(ttl)), CredentialTTL: time.Duration(credTTL)}
		w, err := createSecretOutput(e, *out, *force)
		if err != nil {
			return err
		}
		a, err := openAdmin(e, &vf, *db)
		if err != nil {
			w.abort()
			return err
		}
		defer a.Close()
		p := &progress{e: e, what: "minted", total: *count}
		for done := 0; done < *count; {
			n := min(tokenChunk, *count-done)
			hashes := make([]enroll.TokenHash, n)
			for i := range n {
				t, err := enroll.GenerateToken(a.Identifier(), nil)
				if err != nil {
					return err
				}
				hashes[i] = t.Hash()
				w.WriteString(t.Reveal() + "\n")
			}
			// The tokens are on disk before their hashes are stored: every
			// stored hash has its token in FILE.
			if err := w.sync(); err != nil {
				return err
			}
			if err := a.AddTokens(hashes, spec); err != nil {
				return fmt.Errorf("store tokens %d to %d: %w (the first %d tokens of %s are valid)", done+1, done+n, err, done, *out)
			}
			done += n
			p.report(done)
		}
		if err := w.close(); err != nil {
			return err
		}
		if *out != "-" {
			fmt.Fprintf(e.stdout, "tokens:  %d\nexpires: %s\n", *count, formatTime(spec.Expires))
		}
		return nil
	}
}

// secretOutput is the token file: a temporary file of mode 0600 in the
// directory of its path, put in place (renamed over the old file with
// --force, hard-linked without) at its first sync, before any token's hash
// is stored; tokens then go on into the same file. So an old file's mode
// and owner never carry over, a symbolic link is never followed, the old
// file stays whole until tokens are minted, and every stored hash has its
// token in the file, even after a crash.
type secretOutput struct {
	*bufio.Writer
	f      *os.File // nil for stdout
	tmp    string   // the temporary name, until placed
	path   string
	force  bool
	placed bool
}

// createSecretOutput prepares the secret file path (see secretOutput), or
// uses stdout for "-". It refuses a symbolic link at path and, unless
// force, an existing path.
func createSecretOutput(e *env, path string, force bool) (*secretOutput, error) {
	if path == "-" {
		return &secretOutput{Writer: bufio.NewWriter(e.stdout)}, nil
	}
	if err := checkOutput(path, force); err != nil {
		return nil, err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp") // O_EXCL, 0600
	if err != nil {
		return nil, err
	}
	return &secretOutput{Writer: bufio.NewWriter(f), f: f, tmp: f.Name(), path: path, force: force}, nil
}

// sync makes what was written durable, and puts the file in place the
// first time.
func (o *secretOutput) sync() error {
	if err := o.Flush(); err != nil {
		return err
	}
	if o.f == nil {
		return nil
	}
	if err := o.f.Sync(); err != nil {
		return err
	}
	if o.placed {
		return nil
	}
	if err := checkOutput(o.path, o.force); err != nil { // a link made since
		return err
	}
	var err error
	if o.force {
		err = os.Rename(o.tmp, o.path) // replaces a file, or a link made since, never follows it
	} else if err = os.Link(o.tmp, o.path); err == nil { // unlike rename, never replaces path
		err = os.Remove(o.tmp)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", o.path, err)
	}
	o.placed = true
	return atomicfile.SyncDir(filepath.Dir(o.path))
}

func (o *secretOutput) close() error {
	if err := o.sync(); err != nil {
		return err
	}
	if o.f != nil {
		return o.f.Close()
	}
	return nil
}

// abort drops a token file to which nothing was written: its temporary
// file goes, and the old file, if any, stays.
func (o *secretOutput) abort() {
	if o.f != nil {
		o.f.Close()
		if !o.placed {
			os.Remove(o.tmp)
		}
	}
}
