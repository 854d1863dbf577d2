// Package authority is the enrollment authority of telegraf-ockam: it mints
// enrollment tokens, answers enrollment requests with credentials, and
// keeps and serves the signed revocation list (docs/PROTOCOL.md,
// "Enrollment" and "Authority service"). The protocol itself is in
// packages secure/enroll and authority/wire; this package adds the state
// (a bbolt store), the signed prekeys in the vault, the TCP service and the
// local control socket. It imports nothing of Telegraf.
package authority

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Defaults of Config.
const (
	// DefaultOneTimePrekeyTTL is how long a one-time prekey handed out with
	// an online bundle stays usable: a device enrolls right after fetching.
	DefaultOneTimePrekeyTTL = time.Hour
	// DefaultMaxOneTimePrekeys bounds the unused one-time prekeys the
	// service hands out online (in memory, ~100 bytes each); past it,
	// bundles carry none (enrollment still works, without DH3), so that
	// fetching bundles cannot exhaust the service.
	DefaultMaxOneTimePrekeys = 100_000
)

// Config is what an Authority is made of.
type Config struct {
	Vault    vault.Vault           // holds the signed prekeys
	Identity *secure.LocalIdentity // the authority's identity, in Vault
	Store    *Store                // of this identity; the Authority closes it
	Now      func() time.Time      // nil: time.Now
	Logger   *slog.Logger          // nil: discard

	OneTimePrekeyTTL  time.Duration // 0: DefaultOneTimePrekeyTTL
	MaxOneTimePrekeys int           // 0: DefaultMaxOneTimePrekeys
}

// Authority issues credentials to enrolling devices. It is safe for
// concurrent use.
type Authority struct {
	cfg     Config
	id      secure.Identifier
	prekeys *signedPrekeys
	log     *slog.Logger

	online         onlinePrekeys // the one-time prekeys of online bundles
	full           atomic.Bool   // MaxOneTimePrekeys was reached (logged once)
	withoutOneTime atomic.Uint64 // online bundles without a one-time prekey: the pool was exhausted
	rateLimited    atomic.Uint64 // online bundles without a one-time prekey: over their address's rate

	revMu   sync.Mutex // serializes Revoke with the cache update
	revoked atomic.Pointer[secure.RevocationList]
}

// New returns an Authority. It creates the first signed prekey if the
// vault has none, and loads the current revocation list.
func New(cfg Config) (*Authority, error) {
	if cfg.Vault == nil || cfg.Identity == nil || cfg.Store == nil {
		return nil, errors.New("authority: a vault, an identity and a store are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OneTimePrekeyTTL <= 0 {
		cfg.OneTimePrekeyTTL = DefaultOneTimePrekeyTTL
	}
	if cfg.MaxOneTimePrekeys <= 0 {
		cfg.MaxOneTimePrekeys = DefaultMaxOneTimePrekeys
	}
	a := &Authority{cfg: cfg, id: cfg.Identity.Identifier(), log: cfg.Logger}
	if a.id != cfg.Store.Authority() {
		return nil, fmt.Errorf("authority: the store belongs to %s, the vault holds %s", cfg.Store.Authority(), a.id)
	}
	var err error
	if a.prekeys, err = loadSignedPrekeys(cfg.Vault, cfg.Identity.Public()); err != nil {
		return nil, err
	}
	if err := a.maintainPrekeys(); err != nil {
		return nil, err
	}
	l, err := cfg.Store.revocationList()
	if err != nil {
		return nil, err
	}
	a.revoked.Store(l)
	if err := a.purge(); err != nil {
		return nil, err
	}
	return a, nil
}

// Close closes the store.
func (a *Authority) Close() error { return a.cfg.Store.Close() }

// Identifier returns the authority's identifier.
func (a *Authority) Identifier() secure.Identifier { return a.id }

// maintainPrekeys reloads the signed prekeys from the vault (an operator
// may have rotated them) and rotates them itself when the current one has
// less than a third of its lifetime left, or there is none.
func (a *Authority) maintainPrekeys() error {
	if _, err := a.prekeys.reload(); err != nil {
		return err
	}
	now := a.cfg.Now()
	cur, err := a.prekeys.current(now)
	if err == nil {
		lifetime := cur.bundle.Expires.Sub(cur.bundle.Created)
		if cur.bundle.Expires.Sub(now) > lifetime/3 {
			return nil
		}
	}
	b, err := RotateSignedPrekey(a.cfg.Vault, a.cfg.Identity, now, DefaultSignedPrekeyTTL)
	if err != nil {
		return err
	}
	a.log.Info("new signed prekey", "prekey", fmt.Sprintf("%x", b.SignedPrekey[:4]), "expires", b.Expires)
	_, err = a.prekeys.reload()
	return err
}

// Bundle returns a bundle of the current signed prekey with oneTime new
// one-time prekeys (at most enroll.MaxOneTimePrekeys), stored until the
// bundle expires: the signed prekey's expiry, or now + ttl if ttl is
// positive and sooner. Online bundles use one one-time prekey and
// OneTimePrekeyTTL; while MaxOneTimePrekeys are outstanding they get none.
func (a *Authority) Bundle(oneTime int, ttl time.Duration) (*enroll.Bundle, error) {
	if oneTime < 0 || oneTime > enroll.MaxOneTimePrekeys {
		return nil, fmt.Errorf("authority: %d one-time prekeys, want 0 to %d", oneTime, enroll.MaxOneTimePrekeys)
	}
	now := a.cfg.Now()
	cur, err := a.prekeys.current(now)
	if err != nil {
		return nil, err
	}
	if oneTime == 0 {
		return cur.bundle, nil
	}
	expires := cur.bundle.Expires
	if ttl > 0 && now.Add(ttl).Before(expires) {
		expires = now.Add(ttl)
	}
	pubs, err := a.cfg.Store.newOneTimePrekeys(oneTime, expires)
	if err != nil {
		return nil, err
	}
	return enroll.NewBundle(a.cfg.Identity.Signer(), cur.bundle.SignedPrekey, pubs, now, expires)
}

// onlineBundle is the bundle a device fetches from the service: the
// current signed prekey and, if oneTime, a new one-time prekey, kept in
// memory for OneTimePrekeyTTL; none while MaxOneTimePrekeys are
// outstanding (counted: BundlesWithoutOneTimePrekey).
func (a *Authority) onlineBundle(oneTime bool) (*enroll.Bundle, error) {
	now := a.cfg.Now()
	cur, err := a.prekeys.current(now)
	if err != nil {
		return nil, err
	}
	if !oneTime {
		return cur.bundle, nil
	}
	expires := cur.bundle.Expires
	if e := now.Add(a.cfg.OneTimePrekeyTTL); e.Before(expires) {
		expires = e
	}
	pub, ok := a.online.add(expires, a.cfg.MaxOneTimePrekeys)
	if !ok {
		a.withoutOneTime.Add(1)
		if !a.full.Swap(true) {
			a.log.Warn("too many one-time prekeys outstanding; bundles go out without one until some are used or expire",
				"max", a.cfg.MaxOneTimePrekeys)
		}
		return cur.bundle, nil
	}
	a.full.Store(false)
	return enroll.NewBundle(a.cfg.Identity.Signer(), cur.bundle.SignedPrekey, [][32]byte{pub}, now, expires)
}

// BundlesWithoutOneTimePrekey returns how many online bundles went out
// without a one-time prekey because MaxOneTimePrekeys were outstanding: the
// pool was exhausted, by load or by someone draining it. The service logs
// its growth as a warning (see Service).
func (a *Authority) BundlesWithoutOneTimePrekey() uint64 { return a.withoutOneTime.Load() }

// BundlesOverRate returns how many online bundles went out without a
// one-time prekey because their address was over its rate (Service's
// BundleBurst and BundleInterval).
func (a *Authority) BundlesOverRate() uint64 { return a.rateLimited.Load() }

// Enroll answers an enrollment request (docs/PROTOCOL.md §14.5): it opens
// and checks the request (enroll.OpenEnrollmentRequest), checks the token
// against the store, signs the credential the token grants, and records it
// and marks the token and the one-time prekey used in one step, committed
// before it encrypts the answer. A request with a token this same device
// already used is answered again with the credential recorded then, so an
// answer lost on the way does not lock the device out. A one-time prekey
// is taken only together with a successful use of a token: a request with
// a bad token leaves it to its device. A refusal wraps the sentinel of its
// reason: enroll.ErrTokenUsed, ErrUnknownToken, ErrWrongAuthority,
// ErrUnknownPrekey, ErrPrekeyUsed, or secure.ErrExpired, ErrRevoked,
// ErrDecrypt, ErrMalformed, or another of package secure. Its text names
// neither the device nor the token, since the service sends it in clear.
func (a *Authority) Enroll(request []byte) (answer []byte, err error) {
	now := a.cfg.Now()
	k := &requestKeys{a: a}
	r, err := enroll.OpenEnrollmentRequest(request, a.id, k, now)
	if err != nil {
		return nil, err
	}
	subject := r.Subject()
	h := r.Token.Hash()
	tok, err := a.cfg.Store.token(h)
	if err != nil {
		return nil, err
	}
	// A revoked device does not come back, with a new token or an old one.
	if l := a.revoked.Load(); l != nil && l.Revokes(&secure.Credential{Subject: subject}) {
		return nil, fmt.Errorf("the device is on the revocation list: %w", secure.ErrRevoked)
	}
	var issued *secure.Credential // nil for a token used already: redeem finds its credential
	if !tok.used {
		if err := checkToken(tok, now); err != nil {
			return nil, err
		}
		issued, err = a.issue(subject, tok.spec, now)
		if err != nil {
			return nil, err
		}
	}
	c, err := a.redeem(r, k.online, issued, now)
	if errors.Is(err, errIssueFirst) {
		return nil, fmt.Errorf("authority: %w", err)
	}
	if err != nil {
		return nil, err
	}
	if l := a.revoked.Load(); l != nil && l.Revokes(c) {
		return nil, fmt.Errorf("the credential is on the revocation list: %w", secure.ErrRevoked)
	}
	if c != issued {
		a.log.Info("enrollment answered again", "subject", subject.String(), "credential", c.ID.String(), "token", h.String()[:8])
	} else {
		a.log.Debug("enrolled", "subject", subject.String(), "credential", c.ID.String(), "token", h.String()[:8])
	}
	return r.SealAnswer(c, nil)
}

// issue signs the credential a token grants to subject. It refuses a
// subject whose identifier is that of a small-order identity key.
func (a *Authority) issue(subject secure.Identifier, spec TokenSpec, now time.Time) (*secure.Credential, error) {
	if subject.IsWeak() { // an attested identity never is: ParseAttestation refuses such keys
		return nil, fmt.Errorf("%w: the identity key is of small order", secure.ErrMalformed)
	}
	c, err := secure.IssueCredential(a.cfg.Identity.Signer(), subject, spec.Attributes, now, spec.CredentialTTL, nil)
	if err != nil {
		return nil, fmt.Errorf("authority: issue credential: %w", err)
	}
	return c, nil
}

// redeem takes the request's online one-time prekey, if it has one, and
// uses the token in the store (Store.redeem, which takes an offline
// one-time prekey in the same transaction); if the store refuses, the
// online prekey is given back. Of requests racing with one online prekey,
// one takes it; the others get enroll.ErrPrekeyUsed.
func (a *Authority) redeem(r *enroll.EnrollmentRequest, online bool, issued *secure.Credential, now time.Time) (*secure.Credential, error) {
	var offline *[32]byte
	if r.HasOneTimePrekey && !online {
		offline = &r.OneTimePrekey
	}
	var taken vault.DH
	if online {
		var err error
		if taken, err = a.online.take(r.OneTimePrekey); err != nil {
			return nil, fmt.Errorf("enrollment request: one-time prekey: %w", err)
		}
	}
	c, err := a.cfg.Store.redeem(r.Token.Hash(), offline, r.Subject(), issued, now)
	if err != nil && taken != nil {
		a.online.restore(r.OneTimePrekey, taken)
	}
	return c, err
}

// requestKeys gives OpenEnrollmentRequest the authority's prekeys, for one
// request, and notes where its one-time prekey came from.
type requestKeys struct {
	a      *Authority
	online bool // the one-time prekey is an online one, to take once the request decrypts
}

func (k *requestKeys) SignedPrekey(pub [32]byte, now time.Time) (vault.DH, error) {
	return k.a.prekeys.SignedPrekey(pub, now)
}

func (k *requestKeys) OneTimePrekey(pub [32]byte, now time.Time) (vault.DH, error) {
	if dh, found, err := k.a.online.peek(pub, now); found {
		k.online = true
		return dh, err
	}
	return k.a.cfg.Store.oneTimePrekey(pub, now)
}

// AddTokens stores the hashes of new tokens (see Store.AddTokens).
func (a *Authority) AddTokens(hashes []enroll.TokenHash, spec TokenSpec) error {
	return a.cfg.Store.AddTokens(hashes, spec)
}

// RevocationList returns the current revocation list, or nil if the
// authority has not revoked anything yet.
func (a *Authority) RevocationList() *secure.RevocationList { return a.revoked.Load() }

// Revoke adds subjects and credential ids to the revocation list, signs
// the next list, stores it and returns it.
func (a *Authority) Revoke(subjects []secure.Identifier, credentials []secure.CredentialID) (*secure.RevocationList, error) {
	a.revMu.Lock()
	defer a.revMu.Unlock()
	l, err := a.cfg.Store.revoke(a.cfg.Identity.Signer(), subjects, credentials, a.cfg.Now())
	if err != nil {
		return nil, err
	}
	a.revoked.Store(l)
	return l, nil
}

// ensureRevocationList signs the first revocation list, empty, if there is
// none, and returns the current list and whether it signed it.
func (a *Authority) ensureRevocationList() (*secure.RevocationList, bool, error) {
	a.revMu.Lock()
	defer a.revMu.Unlock()
	if l := a.revoked.Load(); l != nil {
		return l, false, nil
	}
	l, err := a.cfg.Store.revoke(a.cfg.Identity.Signer(), nil, nil, a.cfg.Now())
	if err != nil {
		return nil, false, err
	}
	a.revoked.Store(l)
	return l, true, nil
}

// Stats checks the store and returns its counts (see Store.Check).
func (a *Authority) Stats() (Stats, error) { return a.cfg.Store.Check() }

// purge forgets expired one-time prekeys.
func (a *Authority) purge() error {
	now := a.cfg.Now()
	a.online.purge(now)
	deleted, err := a.cfg.Store.purgePrekeys(now)
	if err != nil {
		return err
	}
	if deleted > 0 {
		a.log.Debug("purged expired one-time prekeys", "count", deleted)
	}
	return a.renewRevocationList(now)
}

// renewRevocationList signs the list again, with the next sequence number
// and the same entries, once half the time to its next update has passed:
// parties that poll the service then never hold a stale list while it
// runs (docs/PROTOCOL.md §5).
func (a *Authority) renewRevocationList(now time.Time) error {
	l := a.revoked.Load()
	if l == nil || now.Before(l.IssuedAt.Add(l.NextUpdate.Sub(l.IssuedAt)/2)) {
		return nil
	}
	renewed, err := a.Revoke(nil, nil)
	if err != nil {
		return fmt.Errorf("renew the revocation list: %w", err)
	}
	a.log.Info("revocation list renewed", "sequence", renewed.Sequence, "next_update", renewed.NextUpdate)
	return nil
}
