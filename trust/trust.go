// Package trust is the one loader of the files a party of a secure channel
// trusts and is: its vault (identity and purpose key), its credential, the
// authorities it trusts, and the revocation lists it applies, from a file
// (revocation_list) and from an authority service (revocation_source).
// outputs.ockam, inputs.ockam_listener (and through it ockamd) and the
// inlet embed it, the way Telegraf's plugins embed plugins/common/tls.
//
// It imports no Telegraf plugin machinery. The formats are those of
// docs/PROTOCOL.md (§3 identities, §4 credentials, §5 revocation lists);
// how revocation is operated is docs/OPERATIONS.md, "Revocation".
package trust

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/filewatch"
	logpkg "github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// MaxFileSize bounds every file the loader reads. The largest is a
// revocation list: secure.MaxRevocationEntries subjects (32 bytes each)
// come to about 45 MB in PEM form, and package secure refuses a file over
// 64 MiB. Identity and credential files are a few kilobytes.
const MaxFileSize = 128 << 20

// Logger is where the loader reports what it does and the problems it
// keeps working around: the project's one Logger (internal/logger), which
// telegraf.Logger satisfies. Each problem is logged once, and its end once.
type Logger = logpkg.Logger

// Names are the names under which the adapter's user sets each option, so
// that a message names what to fix: "vault_path" in a plugin, "--vault" on
// the command line. An empty name falls back to the plugin's.
type Names struct {
	Vault, Passphrase, Credential, Authority, Authorities string
	RevocationList, RevocationSource, RevocationState     string
}

// PluginNames are the options of outputs.ockam and inputs.ockam_listener.
var PluginNames = Names{
	Vault: "vault_path", Passphrase: "vault_passphrase", Credential: "credential_path",
	Authority: "authority_path", Authorities: "authority_paths",
	RevocationList: "revocation_list", RevocationSource: "revocation_source", RevocationState: "revocation_state",
}

// Config says what to load. Vault, Credential and at least one of
// Authority and Authorities are required.
type Config struct {
	Vault       string // a directory or a pkcs11: spec (package vaults)
	Passphrase  []byte // of a file vault; read by Open only, the caller wipes it
	Credential  string // this party's credential file
	Authority   string // an authority identity file
	Authorities []string

	// RevocationList is a revocation list file, re-read at every Refresh
	// when it changed. It may not exist yet (nobody is revoked until it
	// appears), but its directory must.
	RevocationList string
	// Revocation is how lists from an authority service are fetched, kept
	// and trusted; see RevocationConfig.
	Revocation RevocationConfig

	// Peers names who relies on this party's credential, in the message
	// logged when it is no longer valid: "devices" for a listener, "the
	// listener" for a device; "peers" if empty.
	Peers string
	// StrictCredential says that the caller opens no channel while the
	// credential file holds a credential it cannot use (Refresh's error),
	// rather than going on with the one in use; it changes what is logged.
	StrictCredential bool
	// StartExpired lets Open succeed when the credential file holds a
	// credential that is only expired or not yet valid: issued by a
	// trusted authority to this identity and not revoked. Open logs the
	// problem and Refresh, Reload and Check report it until the file holds
	// a valid one, so a device that was off past its credential's expiry
	// starts, buffers, and connects once the file is renewed. Any other
	// problem with the credential still fails Open.
	StartExpired bool
	// ExpiresIn, if set, is called by Open and by every Refresh and Reload
	// with how long the credential in use stays valid (negative once it
	// expired), for an internal metric.
	ExpiresIn func(time.Duration)

	// OnRevocation, if set, is called each time a revocation list that
	// changes the current list of its issuer has been applied, from
	// RevocationList or from the revocation source (at Open too), so that
	// the caller can close at once the channels of the identities it
	// revokes rather than at their next message. It runs on the loader's
	// goroutines, under its locks: it must not call the Trust, and must
	// not block.
	OnRevocation func()

	Names Names
	Log   Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Snapshot is what the loader holds at one moment.
type Snapshot struct {
	// Identity is this party's identity with the purpose key current in
	// the vault.
	Identity *secure.LocalIdentity
	// Credential is the last valid credential read from the credential
	// file.
	Credential *secure.Credential
	// Verifier trusts the authorities and holds the newest revocation list
	// of each; it is the same for the lifetime of the Trust.
	Verifier *secure.Verifier
}

// Trust holds a party's identity, credential and verifier, and refreshes
// them from their files. Current and Ready are safe for concurrent use;
// Refresh is serialized.
type Trust struct {
	cfg         Config
	names       Names
	now         func() time.Time
	log         Logger
	vault       vault.Vault
	verifier    *secure.Verifier
	authorities string // the authority files and identifiers, for messages

	identity   atomic.Pointer[secure.LocalIdentity]
	credential atomic.Pointer[secure.Credential]

	mu              sync.Mutex // serializes Refresh
	credentialFile  *filewatch.Watch
	listFile        *filewatch.Watch // nil without RevocationList
	listFromFile    *secure.RevocationList
	identityProblem string // the problem with the vault last logged
	credentialAlarm string // the problem with the credential in use last logged

	source *source // nil without a revocation source
}

// Open checks cfg, opens the vault and loads the identity, the
// authorities, the revocation list file, the persisted revocation state
// and the credential, which must be valid now. The vault stays open until
// Close: a purpose key rotated in it is picked up by Refresh. Every error
// names the option to fix.
func Open(cfg Config) (_ *Trust, err error) {
	t := &Trust{cfg: cfg, names: cfg.Names.withDefaults(), now: cfg.Now, log: cfg.Log}
	if t.now == nil {
		t.now = time.Now
	}
	if t.log == nil {
		t.log = logpkg.Nop{}
	}
	if err := t.checkConfig(); err != nil {
		return nil, err
	}
	if err := t.loadAuthorities(); err != nil {
		return nil, err
	}
	now := t.now()
	if err := t.loadRevocationFile(now); err != nil {
		return nil, err
	}
	if t.source, err = newSource(t); err != nil {
		return nil, err
	}
	if err := t.openVault(now); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			t.closeVault()
		}
	}()
	t.credentialFile = filewatch.New(cfg.Credential, MaxFileSize)
	var data []byte
	err = t.credentialFile.Check(now, func(b []byte) error {
		data = b
		return t.applyCredential(now)(b)
	})
	if errors.Is(err, secure.ErrNotYetValid) {
		t.credentialFile.Retry()
	}
	if err != nil {
		if err = t.startExpired(data, err); err != nil {
			return nil, err
		}
	}
	t.reportExpiresIn(now)
	return t, nil
}

// checkConfig checks that the required options are set.
func (t *Trust) checkConfig() error {
	n := t.names
	for _, opt := range []struct{ name, value string }{{n.Vault, t.cfg.Vault}, {n.Credential, t.cfg.Credential}} {
		if opt.value == "" {
			return fmt.Errorf("option %q is required", opt.name)
		}
	}
	if t.cfg.Authority == "" && len(t.cfg.Authorities) == 0 {
		return fmt.Errorf("option %q is required (or %q, to trust several authorities)", n.Authority, n.Authorities)
	}
	return t.cfg.Revocation.check(n)
}

// loadAuthorities reads the authority identity files.
func (t *Trust) loadAuthorities() error {
	type file struct{ option, path string }
	var files []file
	if t.cfg.Authority != "" {
		files = append(files, file{t.names.Authority, t.cfg.Authority})
	}
	for i, p := range t.cfg.Authorities {
		files = append(files, file{fmt.Sprintf("%s[%d]", t.names.Authorities, i), p})
	}
	authorities := make([]*secure.Identity, 0, len(files))
	names := make([]string, 0, len(files))
	for _, f := range files {
		data, err := readFile(f.path)
		if err != nil {
			return fmt.Errorf("%s: %w", f.option, err)
		}
		a, err := secure.ParseIdentityFile(data)
		if err != nil {
			return fmt.Errorf("%s %q: %w", f.option, f.path, err)
		}
		authorities = append(authorities, a)
		names = append(names, fmt.Sprintf("%s (%s)", f.path, a.Identifier().Short()))
	}
	v, err := secure.NewVerifier(authorities...)
	if err != nil {
		return fmt.Errorf("%s: %w", t.names.Authority, err)
	}
	t.verifier, t.authorities = v, strings.Join(names, ", ")
	return nil
}

// loadRevocationFile applies RevocationList, if set and present.
func (t *Trust) loadRevocationFile(now time.Time) error {
	path := t.cfg.RevocationList
	if path == "" {
		return nil
	}
	t.listFile = filewatch.New(path, MaxFileSize)
	err := t.listFile.Check(now, t.applyListFile)
	if errors.Is(err, fs.ErrNotExist) {
		// Not issued yet: nobody is revoked until it appears, and it is
		// applied at the Refresh after it does. A missing directory,
		// though, is a typo.
		if _, derr := os.Stat(filepath.Dir(path)); derr != nil {
			return fmt.Errorf("%s %q: %w", t.names.RevocationList, path, derr)
		}
		t.log.Warnf("%s %q does not exist yet; no identity is revoked until it appears", t.names.RevocationList, path)
		t.listFile.Report(err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %q: %w", t.names.RevocationList, path, err)
	}
	return nil
}

// applyListFile parses a revocation list file and makes it current.
func (t *Trust) applyListFile(data []byte) error {
	list, err := secure.ParseRevocationListFile(data)
	if err != nil {
		return err
	}
	if err := t.updateRevocations(list); err != nil {
		return err
	}
	t.listFromFile = list
	return nil
}

// updateRevocations makes list current for its issuer (see
// secure.Verifier.UpdateRevocations) and calls OnRevocation if that
// changed the issuer's current list. Sequence numbers only grow, so a
// change is never missed; a list applied concurrently by the other
// provider may be reported twice, which is harmless.
func (t *Trust) updateRevocations(list *secure.RevocationList) error {
	before := t.verifier.RevocationSequence(list.Issuer)
	if err := t.verifier.UpdateRevocations(list); err != nil {
		return err
	}
	if t.cfg.OnRevocation != nil && t.verifier.RevocationSequence(list.Issuer) != before {
		t.cfg.OnRevocation()
	}
	return nil
}

// Current returns the identity, credential and verifier as of now.
func (t *Trust) Current() Snapshot {
	return Snapshot{Identity: t.identity.Load(), Credential: t.credential.Load(), Verifier: t.verifier}
}

// Verifier returns the verifier: the trusted authorities and their newest
// revocation lists. It is the same for the lifetime of the Trust.
func (t *Trust) Verifier() *secure.Verifier { return t.verifier }

// Authorities describes the trusted authorities (files and identifiers),
// for messages.
func (t *Trust) Authorities() string { return t.authorities }

// Refresh re-reads what may have changed since: the purpose key in the
// vault, the revocation list file and the credential file. A file that
// cannot be read, parsed or verified is logged once and the current one is
// kept: the loader never falls back to "no list" or "no credential". It
// returns the problem of the moment with the credential file (nil if it
// holds the credential in use), for a caller that refuses to go on with an
// older one. It then checks the credential in use and logs once when it is
// no longer valid: peers refuse new channels until it is replaced.
func (t *Trust) Refresh(now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refresh(now)
}

// Reload is Refresh, but it reads the credential and list files even when
// their size and mtime did not change, for a caller about to open a
// channel: a file rewritten within the file system's mtime resolution is
// not missed.
func (t *Trust) Reload(now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.credentialFile.Forget()
	if t.listFile != nil {
		t.listFile.Forget()
	}
	return t.refresh(now)
}

func (t *Trust) refresh(now time.Time) error {
	t.reloadIdentity(now)
	if w := t.listFile; w != nil {
		err := w.Check(now, func(data []byte) error {
			if err := t.applyListFile(data); err != nil {
				return err
			}
			cur := t.listFromFile
			t.log.Infof("Revocation list %q applied: sequence %d, %d subjects and %d credentials revoked",
				w.Path, cur.Sequence, len(cur.Subjects()), len(cur.Credentials()))
			return nil
		})
		keeping := "no list is applied yet"
		if t.listFromFile != nil {
			keeping = fmt.Sprintf("keeping the current list (sequence %d)", t.listFromFile.Sequence)
		}
		t.report(w, t.names.RevocationList, err, keeping)
	}
	t.source.checkStale(now)

	w := t.credentialFile
	err := w.Check(now, func(data []byte) error {
		if err := t.applyCredential(now)(data); err != nil {
			return err
		}
		t.log.Infof("Credential %q loaded, valid until %s", w.Path, t.credential.Load().ExpiresAt.Format(time.RFC3339))
		return nil
	})
	if errors.Is(err, secure.ErrNotYetValid) {
		w.Retry() // it becomes valid without a change to the file
	}
	consequence := "keeping the current credential"
	if t.cfg.StrictCredential {
		consequence = "no new channel until it holds a valid one"
	}
	t.report(w, t.names.Credential, err, consequence)

	// The credential in use may have expired or been revoked since.
	alarm := ""
	if cerr := t.verifier.VerifyCredential(t.credential.Load(), t.identity.Load().Identifier(), now); cerr != nil {
		alarm = cerr.Error()
	}
	if alarm != t.credentialAlarm {
		if alarm != "" {
			peers := t.cfg.Peers
			if peers == "" {
				peers = "peers"
			}
			t.log.Errorf("The credential in use is no longer valid, %s will refuse new channels "+
				"until %s %q holds a valid one: %s", peers, t.names.Credential, w.Path, alarm)
		} else {
			t.log.Infof("The credential in use is valid again")
		}
		t.credentialAlarm = alarm
	}
	t.reportExpiresIn(now)
	if err != nil {
		return t.credentialError(err)
	}
	return nil
}

// report logs a new problem with a watched file once, and its end.
func (t *Trust) report(w *filewatch.Watch, option string, err error, consequence string) {
	msg, changed := w.Report(err)
	switch {
	case !changed:
	case msg == "":
		t.log.Infof("%s %q: OK again", option, w.Path)
	default:
		t.log.Warnf("%s %q: %v; %s", option, w.Path, err, consequence)
	}
}

// Run refreshes every interval and polls the revocation source (if any)
// every poll interval, until ctx ends.
func (t *Trust) Run(ctx context.Context, interval time.Duration) {
	var wg sync.WaitGroup
	if t.source != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.source.poll(ctx)
		}()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
			_ = t.Refresh(t.now()) // logged
		}
	}
}

// Close releases the vault (a PKCS#11 token session; a directory needs
// nothing). The snapshots already handed out stay usable.
func (t *Trust) Close() error {
	return t.closeVault()
}

// readFile reads a file of at most MaxFileSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// withDefaults fills empty names with the plugin's.
func (n Names) withDefaults() Names {
	d := PluginNames
	for _, f := range []struct {
		dst *string
		def string
	}{
		{&n.Vault, d.Vault}, {&n.Passphrase, d.Passphrase}, {&n.Credential, d.Credential},
		{&n.Authority, d.Authority}, {&n.Authorities, d.Authorities}, {&n.RevocationList, d.RevocationList},
		{&n.RevocationSource, d.RevocationSource}, {&n.RevocationState, d.RevocationState},
	} {
		if *f.dst == "" {
			*f.dst = f.def
		}
	}
	return n
}
