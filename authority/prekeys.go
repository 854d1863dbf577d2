package authority

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Signed prekeys live in the authority's vault, in two slots that rotation
// alternates between (docs/PROTOCOL.md, "Authority vault"): the X25519 key
// "enroll-prekey-a" with the record "enroll-bundle-a" (its bundle, signed,
// without one-time prekeys), and the same with "-b". The newest valid one
// goes into new bundles; requests made with either are accepted until it
// expires, so a rotation does not strand devices holding the older bundle.
var prekeySlots = [2]string{"a", "b"}

func prekeyKeyName(slot string) string    { return "enroll-prekey-" + slot }
func prekeyRecordName(slot string) string { return "enroll-bundle-" + slot }

// DefaultSignedPrekeyTTL is how long a new signed prekey is valid.
const DefaultSignedPrekeyTTL = 90 * 24 * time.Hour

// ErrNoSignedPrekey: the vault holds no valid signed prekey.
var ErrNoSignedPrekey = errors.New("authority: no valid signed prekey (run: ockam authority rotate)")

// signedPrekey is one slot: its private key and its bundle.
type signedPrekey struct {
	slot   string
	dh     vault.DH
	bundle *enroll.Bundle
	record []byte // the record as read, to notice a change
}

// signedPrekeys holds the vault's signed prekeys. It is safe for
// concurrent use.
type signedPrekeys struct {
	v        vault.Vault
	identity *secure.Identity

	mu   sync.RWMutex
	keys []*signedPrekey // newest first
}

// loadSignedPrekeys reads both slots of v. A slot whose record is missing,
// does not verify, or does not match its key is ignored.
func loadSignedPrekeys(v vault.Vault, identity *secure.Identity) (*signedPrekeys, error) {
	p := &signedPrekeys{v: v, identity: identity}
	_, err := p.reload()
	return p, err
}

// reload reads the slots again and reports whether they changed.
func (p *signedPrekeys) reload() (bool, error) {
	p.mu.RLock()
	old := p.keys
	p.mu.RUnlock()
	var keys []*signedPrekey
	changed := false
	for _, slot := range prekeySlots {
		rec, err := p.v.ReadRecord(prekeyRecordName(slot))
		if errors.Is(err, vault.ErrNotFound) {
			changed = changed || slices.ContainsFunc(old, func(k *signedPrekey) bool { return k.slot == slot })
			continue
		}
		if err != nil {
			return false, fmt.Errorf("authority: signed prekey %s: %w", slot, err)
		}
		if i := slices.IndexFunc(old, func(k *signedPrekey) bool { return k.slot == slot }); i >= 0 && bytes.Equal(old[i].record, rec) {
			keys = append(keys, old[i])
			continue
		}
		changed = true
		k, err := p.loadSlot(slot, rec)
		if err != nil {
			continue // a rotation in progress, or a damaged slot: not usable
		}
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b *signedPrekey) int { return b.bundle.Created.Compare(a.bundle.Created) })
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
	return changed, nil
}

// loadSlot checks a slot's record and loads its key.
func (p *signedPrekeys) loadSlot(slot string, rec []byte) (*signedPrekey, error) {
	b, err := enroll.ParseBundle(rec)
	if err != nil {
		return nil, err
	}
	if !b.IdentityKey.Equal(p.identity.Key()) {
		return nil, fmt.Errorf("authority: signed prekey %s was signed by another identity", slot)
	}
	dh, err := p.v.DH(prekeyKeyName(slot))
	if err != nil {
		return nil, err
	}
	if dh.PublicKey() != b.SignedPrekey {
		return nil, fmt.Errorf("authority: signed prekey %s does not match its key", slot)
	}
	return &signedPrekey{slot: slot, dh: dh, bundle: b, record: rec}, nil
}

// current returns the newest signed prekey valid at now.
func (p *signedPrekeys) current(now time.Time) (*signedPrekey, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, k := range p.keys {
		if !now.Before(k.bundle.Created.Add(-secure.ClockSkew)) && now.Before(k.bundle.Expires) {
			return k, nil
		}
	}
	return nil, ErrNoSignedPrekey
}

// SignedPrekey returns the signed prekey whose public key is pub, if it is
// valid at now (enroll.EnrollmentKeys).
func (p *signedPrekeys) SignedPrekey(pub [32]byte, now time.Time) (vault.DH, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, k := range p.keys {
		if k.bundle.SignedPrekey != pub {
			continue
		}
		if !now.Before(k.bundle.Expires) {
			return nil, fmt.Errorf("signed prekey expired at %s: %w", k.bundle.Expires.Format(time.RFC3339), secure.ErrExpired)
		}
		return k.dh, nil
	}
	return nil, enroll.ErrUnknownPrekey
}

// RotateSignedPrekey makes a new signed prekey, valid for ttl from now, in
// the free or older slot of v, and returns its bundle. The other slot's
// key stays valid until it expires. A crash leaves the rotated slot
// unusable (its key and record disagree) until the next rotation; the
// other slot is untouched.
func RotateSignedPrekey(v vault.Vault, id *secure.LocalIdentity, now time.Time, ttl time.Duration) (*enroll.Bundle, error) {
	p, err := loadSignedPrekeys(v, id.Public())
	if err != nil {
		return nil, err
	}
	slot := prekeySlots[0]
	if len(p.keys) == 2 {
		slot = p.keys[1].slot // the older
	} else if len(p.keys) == 1 && p.keys[0].slot == prekeySlots[0] {
		slot = prekeySlots[1]
	}
	if err := v.DeleteKey(prekeyKeyName(slot)); err != nil && !errors.Is(err, vault.ErrNotFound) {
		return nil, fmt.Errorf("authority: rotate signed prekey: %w", err)
	}
	dh, err := v.GenerateDH(prekeyKeyName(slot))
	if err != nil {
		return nil, fmt.Errorf("authority: rotate signed prekey: %w", err)
	}
	b, err := enroll.NewBundle(id.Signer(), dh.PublicKey(), nil, now, now.Add(ttl))
	if err != nil {
		return nil, err
	}
	if err := v.WriteRecord(prekeyRecordName(slot), b.Marshal()); err != nil {
		return nil, fmt.Errorf("authority: store signed prekey: %w", err)
	}
	return b, nil
}
