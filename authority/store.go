package authority

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Store is the authority's state in one bbolt file: token hashes and what
// they grant, one-time prekeys, issued credentials and the current
// revocation list. Every change is one bbolt transaction, committed
// (fsync) before the caller goes on, so a crash at any moment leaves either
// the state before a change or after it. It is safe for concurrent use; one
// process at a time may open the file.
type Store struct {
	db        *bolt.DB
	authority secure.Identifier
}

// Bucket and key names (docs/PROTOCOL.md, "Authority store").
var (
	bucketMeta        = []byte("meta")
	bucketTokens      = []byte("tokens")
	bucketPrekeys     = []byte("prekeys")
	bucketCredentials = []byte("credentials")
	bucketRevocation  = []byte("revocation")
	keyVersion        = []byte("version")
	keyAuthority      = []byte("authority")
	keyList           = []byte("list")
)

const storeVersion = 1

// ErrLocked: another process (a running `ockam authority serve`, say) has
// the store open.
var ErrLocked = errors.New("authority: the store is in use by another process")

// lockTimeout is how long OpenStore waits for another process's lock.
const lockTimeout = time.Second

// batchDelay is how long an enrollment waits for others to share its
// transaction (bbolt's MaxBatchDelay, 10 ms by default): a commit costs two
// fsyncs (~5 ms here), and under load batches fill before the delay ends.
const batchDelay = 2 * time.Millisecond

// OpenStore opens the store at path, creating it (mode 0600) for authority
// if it does not exist. It refuses a store of another authority, and fails
// with ErrLocked if another process holds it. A zero authority opens any
// store (for reading its statistics).
func OpenStore(path string, authority secure.Identifier) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// As etcd does: the freelist is not written at every commit (it is
		// rebuilt from the pages when the file is opened, so a crash loses
		// nothing), and kept in a hash map, cheap for a large store.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("authority: open store %s: %w", path, err)
	}
	db.MaxBatchDelay = batchDelay
	s := &Store{db: db, authority: authority}
	if err := db.Update(s.init); err != nil {
		db.Close()
		return nil, fmt.Errorf("authority: store %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		db.Close()
		return nil, fmt.Errorf("authority: UNPROTECTED STORE %s (mode %04o) holds one-time prekeys; run: chmod 600 %s",
			path, uint32(fi.Mode().Perm()), path)
	}
	return s, nil
}

// init creates the buckets of a new store and checks an existing one.
func (s *Store) init(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		if s.authority.IsZero() {
			return errors.New("not an authority store")
		}
		for _, name := range [][]byte{bucketMeta, bucketTokens, bucketPrekeys, bucketCredentials, bucketRevocation} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		meta = tx.Bucket(bucketMeta)
		if err := meta.Put(keyVersion, []byte{storeVersion}); err != nil {
			return err
		}
		return meta.Put(keyAuthority, s.authority[:])
	}
	if v := meta.Get(keyVersion); !bytes.Equal(v, []byte{storeVersion}) {
		return fmt.Errorf("store version %x, want %d", v, storeVersion)
	}
	owner := meta.Get(keyAuthority)
	if len(owner) != secure.IdentifierSize {
		return errors.New("store without an authority")
	}
	if s.authority.IsZero() {
		copy(s.authority[:], owner)
	} else if !bytes.Equal(owner, s.authority[:]) {
		return fmt.Errorf("the store belongs to authority %s, not %s", secure.Identifier(owner), s.authority)
	}
	return nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Authority returns the identifier of the authority the store belongs to.
func (s *Store) Authority() secure.Identifier { return s.authority }

// AddTokens stores the hashes of new tokens with what they grant, in one
// transaction. A hash already stored fails the whole call.
func (s *Store) AddTokens(hashes []enroll.TokenHash, spec TokenSpec) error {
	if err := spec.check(); err != nil {
		return err
	}
	rec := appendTokenRecord(nil, tokenRecord{spec: spec})
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		for _, h := range hashes {
			if b.Get(h[:]) != nil {
				return fmt.Errorf("authority: token %s… is already stored", h.String()[:8])
			}
			if err := b.Put(h[:], rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// token returns the record of a token (ErrUnknownToken).
func (s *Store) token(h enroll.TokenHash) (tokenRecord, error) {
	var r tokenRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get(h[:])
		if v == nil {
			return enroll.ErrUnknownToken
		}
		var err error
		r, err = parseTokenRecord(v)
		return err
	})
	return r, err
}

// checkToken returns why a token cannot be used at now, or nil.
func checkToken(r tokenRecord, now time.Time) error {
	if r.used {
		return enroll.ErrTokenUsed
	}
	if !now.Before(r.spec.Expires) {
		return fmt.Errorf("enrollment token expired at %s: %w", r.spec.Expires.Format(time.RFC3339), secure.ErrExpired)
	}
	return nil
}

// redeem uses the token h for the device subject, in one transaction
// committed before it returns, and returns the credential to answer with:
//
//   - a token not used yet: issued (signed by the caller for subject) is
//     recorded, and the token and the one-time prekey oneTime (if not nil)
//     are marked used;
//   - a token already used by this same subject: the credential recorded
//     then, again, with the one-time prekey marked used (an answer that
//     never reached the device, issue 23: enrollment is idempotent for one
//     device);
//   - else a refusal, with nothing changed: ErrUnknownToken, ErrTokenUsed
//     (by another subject), an expired token, or a one-time prekey that is
//     unknown, used or expired; errIssueFirst when issued is nil and the
//     token is unused.
//
// Concurrent calls share transactions (bbolt's Batch); each is checked
// after the ones before it in the same transaction, so of two calls with
// one token exactly one records a credential.
func (s *Store) redeem(h enroll.TokenHash, oneTime *[32]byte, subject secure.Identifier, issued *secure.Credential, now time.Time) (*secure.Credential, error) {
	var outcome error
	var answer *secure.Credential
	err := s.db.Batch(func(tx *bolt.Tx) error {
		// Batch may run this more than once: start from scratch each time.
		outcome, answer = nil, nil
		tokens, prekeys, creds := tx.Bucket(bucketTokens), tx.Bucket(bucketPrekeys), tx.Bucket(bucketCredentials)
		v := tokens.Get(h[:])
		if v == nil {
			outcome = enroll.ErrUnknownToken
			return nil
		}
		r, err := parseTokenRecord(v)
		if err != nil {
			return err
		}
		// the token: unused and valid, or used by this subject
		switch {
		case r.used:
			rec := creds.Get(r.credID[:])
			if len(rec) < len(h) {
				return fmt.Errorf("authority: credential %s of a used token is not recorded", r.credID)
			}
			c, err := secure.ParseCredential(rec[len(h):])
			if err != nil {
				return err
			}
			if c.Subject != subject {
				outcome = enroll.ErrTokenUsed
				return nil
			}
			answer = c
		case issued == nil:
			outcome = errIssueFirst
			return nil
		default:
			if outcome = checkToken(r, now); outcome != nil {
				return nil
			}
			answer = issued
		}
		// the one-time prekey, with the token
		if oneTime != nil {
			pv := prekeys.Get(oneTime[:])
			if outcome = checkPrekey(pv, now); outcome != nil {
				return nil
			}
			p, _ := parsePrekeyRecord(pv)
			clear(p.scalar[:])
			// The scalar is dropped: a replay cannot be decrypted any more.
			if err := prekeys.Put(oneTime[:], appendPrekeyRecord(nil, prekeyRecord{used: true, expires: p.expires})); err != nil {
				return err
			}
		}
		if r.used {
			return nil
		}
		if creds.Get(issued.ID[:]) != nil {
			return fmt.Errorf("authority: credential id %s already recorded", issued.ID)
		}
		if err := creds.Put(issued.ID[:], append(h[:len(h):len(h)], issued.Marshal()...)); err != nil {
			return err
		}
		r.used, r.credID = true, issued.ID
		return tokens.Put(h[:], appendTokenRecord(nil, r))
	})
	if err != nil {
		return nil, fmt.Errorf("authority: store: %w", err)
	}
	return answer, outcome
}

// errIssueFirst: redeem found an unused token, and the caller gave no
// credential to record (it had read the token as used, which cannot
// change back: a store restored under a running authority).
var errIssueFirst = errors.New("authority: the token is unused, issue a credential first")

// checkPrekey returns why a one-time prekey record v cannot be used at now.
func checkPrekey(v []byte, now time.Time) error {
	if v == nil {
		return enroll.ErrUnknownPrekey
	}
	r, err := parsePrekeyRecord(v)
	switch {
	case err != nil:
		return err
	case r.used:
		return enroll.ErrPrekeyUsed
	case !now.Before(r.expires):
		return fmt.Errorf("one-time prekey expired at %s: %w", r.expires.Format(time.RFC3339), secure.ErrExpired)
	}
	return nil
}

// newOneTimePrekeys generates n one-time prekeys valid until expires,
// stores them (a shared transaction) and returns their public keys.
func (s *Store) newOneTimePrekeys(n int, expires time.Time) ([][32]byte, error) {
	pubs := make([][32]byte, n)
	recs := make([][]byte, n)
	for i := range n {
		var r prekeyRecord
		r.expires = expires
		rand.Read(r.scalar[:]) // never fails (Go 1.24+)
		pubs[i] = vault.NewDHFromScalar(r.scalar).PublicKey()
		recs[i] = appendPrekeyRecord(nil, r)
		clear(r.scalar[:])
	}
	defer func() {
		for _, r := range recs {
			clear(r)
		}
	}()
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPrekeys)
		for i := range pubs {
			if err := b.Put(pubs[i][:], recs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("authority: store one-time prekeys: %w", err)
	}
	return pubs, nil
}

// oneTimePrekey returns the unused one-time prekey pub (see
// enroll.EnrollmentKeys.OneTimePrekey).
func (s *Store) oneTimePrekey(pub [32]byte, now time.Time) (vault.DH, error) {
	var d vault.DH
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPrekeys).Get(pub[:])
		if err := checkPrekey(v, now); err != nil {
			return err
		}
		r, _ := parsePrekeyRecord(v)
		d = vault.NewDHFromScalar(r.scalar) // clears its argument, a copy
		clear(r.scalar[:])
		return nil
	})
	return d, err
}

// purgePrekeys deletes the one-time prekeys that expired before now, used
// or not, and returns how many it deleted.
func (s *Store) purgePrekeys(now time.Time) (deleted int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPrekeys)
		var expired [][]byte
		err := b.ForEach(func(k, v []byte) error {
			r, err := parsePrekeyRecord(v)
			if err != nil {
				return fmt.Errorf("prekey %x: %w", k, err)
			}
			if !now.Before(r.expires) {
				expired = append(expired, bytes.Clone(k))
			}
			clear(r.scalar[:])
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		deleted = len(expired)
		return nil
	})
	return deleted, err
}

// revocationList returns the current list, or nil if there is none.
func (s *Store) revocationList() (*secure.RevocationList, error) {
	var l *secure.RevocationList
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRevocation).Get(keyList)
		if v == nil {
			return nil
		}
		var err error
		l, err = secure.ParseRevocationList(v)
		return err
	})
	return l, err
}

// revoke signs, with signer, the next revocation list: every entry of the
// current one and the new ones; it stores it and returns it. Sequence
// numbers only grow, in one transaction, so two revocations never sign the
// same sequence number.
func (s *Store) revoke(signer vault.Signer, subjects []secure.Identifier, credentials []secure.CredentialID, now time.Time) (*secure.RevocationList, error) {
	var l *secure.RevocationList
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRevocation)
		seq := uint64(1)
		if v := b.Get(keyList); v != nil {
			old, err := secure.ParseRevocationList(v)
			if err != nil {
				return fmt.Errorf("current revocation list: %w", err)
			}
			seq = old.Sequence + 1
			subjects = append(subjects, old.Subjects()...)
			credentials = append(credentials, old.Credentials()...)
		}
		var err error
		if l, err = secure.NewRevocationList(signer, seq, now, now.Add(secure.DefaultRevocationListValidity), subjects, credentials); err != nil {
			return err
		}
		return b.Put(keyList, l.Marshal())
	})
	if err != nil {
		return nil, fmt.Errorf("authority: revoke: %w", err)
	}
	return l, nil
}

// Stats are counts of what the store holds.
type Stats struct {
	Tokens             int    // tokens minted (used or not)
	TokensUsed         int    // tokens consumed by an enrollment
	Credentials        int    // credentials issued
	OneTimePrekeys     int    // one-time prekeys stored, used or not
	OneTimePrekeysUsed int    // of which used
	RevocationSequence uint64 // of the current list, 0 if none
	RevokedEntries     int    // subjects and credential ids it revokes
}

// Check reads the whole store in one transaction, checks that it is
// consistent, and returns its counts. Consistent: every record parses,
// every used token names a recorded credential that names it back, every
// credential names a used token that names it, and so tokens used ==
// credentials issued.
func (s *Store) Check() (Stats, error) {
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		st = Stats{}
		tokens, creds := tx.Bucket(bucketTokens), tx.Bucket(bucketCredentials)
		err := tokens.ForEach(func(k, v []byte) error {
			r, err := parseTokenRecord(v)
			if err != nil || len(k) != len(enroll.TokenHash{}) {
				return fmt.Errorf("token %x: %v", k, err)
			}
			st.Tokens++
			if !r.used {
				return nil
			}
			st.TokensUsed++
			c := creds.Get(r.credID[:])
			if c == nil || !bytes.Equal(c[:len(k)], k) {
				return fmt.Errorf("used token %x… names credential %s, which does not name it back", k[:4], r.credID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = creds.ForEach(func(k, v []byte) error {
			if len(v) < len(enroll.TokenHash{}) {
				return fmt.Errorf("credential %x: short record", k)
			}
			c, err := secure.ParseCredential(v[len(enroll.TokenHash{}):])
			if err != nil || !bytes.Equal(c.ID[:], k) || c.Issuer != s.authority {
				return fmt.Errorf("credential %x: not a credential of this authority with that id (%v)", k, err)
			}
			r, err := parseTokenRecord(tokens.Get(v[:len(enroll.TokenHash{})]))
			if err != nil || !r.used || r.credID != c.ID {
				return fmt.Errorf("credential %x names a token that does not name it back", k)
			}
			st.Credentials++
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketPrekeys).ForEach(func(k, v []byte) error {
			r, err := parsePrekeyRecord(v)
			if err != nil || len(k) != 32 {
				return fmt.Errorf("prekey %x: %v", k, err)
			}
			st.OneTimePrekeys++
			if r.used {
				st.OneTimePrekeysUsed++
			}
			return nil
		})
		if err != nil {
			return err
		}
		if v := tx.Bucket(bucketRevocation).Get(keyList); v != nil {
			l, err := secure.ParseRevocationList(v)
			if err != nil {
				return fmt.Errorf("revocation list: %w", err)
			}
			st.RevocationSequence = l.Sequence
			st.RevokedEntries = len(l.Subjects()) + len(l.Credentials())
		}
		if st.TokensUsed != st.Credentials {
			return fmt.Errorf("%d tokens used but %d credentials issued", st.TokensUsed, st.Credentials)
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("authority: store inconsistent: %w", err)
	}
	return st, nil
}

// Credential returns the recorded credential with id, and the hash of the
// token it was issued for; an error if no such credential was recorded.
func (s *Store) Credential(id secure.CredentialID) (*secure.Credential, enroll.TokenHash, error) {
	var c *secure.Credential
	var h enroll.TokenHash
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCredentials).Get(id[:])
		if len(v) < len(h) {
			return fmt.Errorf("authority: credential %s is not recorded", id)
		}
		copy(h[:], v)
		var err error
		c, err = secure.ParseCredential(v[len(h):])
		return err
	})
	return c, h, err
}
