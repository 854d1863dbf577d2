package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/ockam-addons/telegraf-ockam/authority"
	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
)

// Size limits of the enrollment files ockam reads.
const (
	maxBundleFile      = 128 << 10 // a bundle of 1024 one-time prekeys is ~45 KiB in PEM
	maxBatchFile       = 64 << 20  // requests or answers of a fleet: ~540 bytes each in PEM
	maxEnrollTokenFile = 4 << 10   // one token
	processWorkers     = 64        // requests answered in parallel, sharing store transactions
)

// openAdmin returns the authority whose vault is vf and whose store is db:
// through the control socket of a running `ockam authority serve`, or, if
// none runs, by opening the vault and the store here. Either way the store
// must belong to the vault's identity.
func openAdmin(e *env, vf *vaultFlags, db string) (authority.Admin, error) {
	v, _, err := vf.open(e, false)
	if err != nil {
		return nil, err
	}
	pub, err := secure.ReadPublicIdentity(v)
	if err != nil {
		return nil, fmt.Errorf("vault %s: %w", vf.dir, err)
	}
	if c, err := authority.DialControl(db); err == nil {
		if c.Identifier() != pub.Identifier() {
			c.Close()
			return nil, fmt.Errorf("the service running with %s is authority %s, but vault %s holds %s",
				db, c.Identifier(), vf.dir, pub.Identifier())
		}
		return c, nil
	}
	v, id, err := vf.load(e)
	if err != nil {
		return nil, err
	}
	store, err := authority.OpenStore(db, id.Identifier())
	if errors.Is(err, authority.ErrLocked) {
		return nil, withHint(err, "another process has the store open, but no service answers on "+authority.ControlPath(db),
			"stop it, or wait for it to finish")
	}
	if err != nil {
		return nil, err
	}
	a, err := authority.New(authority.Config{Vault: v, Identity: id, Store: store, Now: e.clock()})
	if err != nil {
		store.Close()
		return nil, err
	}
	return a, nil
}

// clock returns the time source of long-running commands: the real clock,
// or the fixed time of OCKAM_TEST_NOW (checked by begin).
func (e *env) clock() func() time.Time {
	return func() time.Time {
		t, err := e.now()
		if err != nil {
			return time.Now()
		}
		return t
	}
}

// parseTCPAddress splits tcp://host:port, as --listen and --address take it.
func parseTCPAddress(flagName, s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "tcp" || u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" {
		return "", usagef("--%s %q: want tcp://HOST:PORT", flagName, s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return "", usagef("--%s %q: want tcp://HOST:PORT", flagName, s)
	}
	return u.Host, nil
}

// enrollFailures maps each enrollment refusal to what ockam says, and what
// to do about it.
var enrollFailures = []struct {
	err  error
	msg  string
	hint string
}{
	{enroll.ErrTokenUsed, "the enrollment token was already used", "ask the operator for a new token"},
	{enroll.ErrUnknownToken, "the authority does not know this enrollment token", "check that the token was minted with this authority's store"},
	{enroll.ErrWrongAuthority, "the enrollment token is of another authority", "use a token minted by the authority in --authority"},
	{enroll.ErrPrekeyUsed, "the one-time prekey was already used (a replayed request, or a bundle shared by two devices)", "make a new request"},
	{enroll.ErrUnknownPrekey, "the authority no longer holds the bundle's prekey", "get a current bundle and make a new request"},
	{secure.ErrRevoked, "this identity is revoked", ""},
	{secure.ErrExpired, "expired", ""},
	{secure.ErrBadSignature, "bad signature (is something between you and the authority?)", ""},
	{secure.ErrUnknownIssuer, "signed by another authority than --authority", ""},
	{wire.ErrAuthorityUnavailable, "the authority is unavailable", "try again later"},
}

// enrollFailure says why an enrollment failed, keeping the detail.
func enrollFailure(err error) error {
	for _, f := range enrollFailures {
		if errors.Is(err, f.err) {
			err = fmt.Errorf("enrollment refused: %s: %w", f.msg, err)
			if f.hint != "" {
				return withHint(err, f.hint)
			}
			return err
		}
	}
	return fmt.Errorf("enrollment failed: %w", err)
}

// progress prints "ockam: <what> n/total" on stderr at most once a second,
// and always for the last.
type progress struct {
	e     *env
	what  string
	total int
	last  time.Time
}

func (p *progress) report(n int) {
	if now := time.Now(); n == p.total || now.Sub(p.last) >= time.Second {
		p.last = now
		fmt.Fprintf(p.e.stderr, "ockam: %s %d/%d\n", p.what, n, p.total)
	}
}

// revokeInStore has the authority of the store db sign the next revocation
// list with the new entries ("ockam revocation add --db").
func revokeInStore(e *env, vf *vaultFlags, db string, subjects []secure.Identifier, credentials []secure.CredentialID) error {
	a, err := openAdmin(e, vf, db)
	if err != nil {
		return err
	}
	defer a.Close()
	l, err := a.Revoke(subjects, credentials)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "sequence: %d\n", l.Sequence)
	fmt.Fprintf(e.stdout, "entries:  %d\n", len(l.Subjects())+len(l.Credentials()))
	return nil
}
