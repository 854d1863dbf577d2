package secure

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Names under which a LocalIdentity keeps its keys and records in a vault
// (docs/PROTOCOL.md, "Vault layout").
const (
	identityKeyName   = "identity"
	attestationRecord = "purpose.attestation"
	purposeKeyPrefix  = "purpose-"
)

// Identity is the public side of an identity: its Ed25519 identity key and
// the attestation of its current purpose key. Its file form (the identity
// document, and the "authority file" when the identity is an authority) is
// the attestation in a PEM block of type "OCKAM IDENTITY".
type Identity struct {
	attestation *Attestation
}

// ParseIdentityFile reads an identity document. It checks the attestation's
// signature but not its validity period: an authority file stays usable to
// verify credentials after the authority's purpose key expired.
func ParseIdentityFile(data []byte) (*Identity, error) {
	der, err := unarmor(pemIdentity, data)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	a, err := ParseAttestation(der)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	return &Identity{attestation: a}, nil
}

// MarshalFile returns the identity document in its PEM file form.
func (i *Identity) MarshalFile() []byte {
	return armor(pemIdentity, i.attestation.Marshal())
}

// Identifier returns the identity's Identifier.
func (i *Identity) Identifier() Identifier { return i.attestation.Identifier() }

// Key returns the Ed25519 identity public key.
func (i *Identity) Key() ed25519.PublicKey { return i.attestation.IdentityKey }

// Attestation returns the current purpose-key attestation.
func (i *Identity) Attestation() *Attestation { return i.attestation }

// LocalIdentity is an identity whose private keys are in a vault: it can
// sign (attestations, credentials, revocation lists) and run the Noise
// handshake with its purpose key.
type LocalIdentity struct {
	signer  vault.Signer
	purpose vault.DH
	slot    string // vault name of purpose
	public  *Identity
}

// CreateIdentity generates an identity key and a first purpose key in v,
// attests the purpose key for DefaultAttestationTTL and stores the
// attestation. It fails with vault.ErrExists if v already holds an identity.
func CreateIdentity(v vault.Vault, now time.Time) (*LocalIdentity, error) {
	signer, err := v.GenerateSigner(identityKeyName)
	if err != nil {
		return nil, fmt.Errorf("create identity key: %w", err)
	}
	l := &LocalIdentity{signer: signer}
	if err := l.RotatePurposeKey(v, now, DefaultAttestationTTL); err != nil {
		// Leave no identity key without an attestation behind: it would
		// block a second create and could not be loaded.
		if derr := v.DeleteKey(identityKeyName); derr != nil {
			return nil, fmt.Errorf("%w (and removing the new identity key failed: %v)", err, derr)
		}
		return nil, err
	}
	return l, nil
}

// ReadPublicIdentity returns the public identity stored in v without
// using any private key (so an encrypted vault needs no passphrase). It
// checks the attestation's signature, not that the vault holds its keys.
func ReadPublicIdentity(v vault.Vault) (*Identity, error) {
	rec, err := v.ReadRecord(attestationRecord)
	if err != nil {
		return nil, fmt.Errorf("read purpose-key attestation: %w", err)
	}
	a, err := ParseAttestation(rec)
	if err != nil {
		return nil, fmt.Errorf("read purpose-key attestation: %w", err)
	}
	return &Identity{attestation: a}, nil
}

// LoadIdentity opens the identity stored in v and checks that its keys and
// attestation belong together. It does not check the attestation's validity
// period; see CheckAttestation.
func LoadIdentity(v vault.Vault) (*LocalIdentity, error) {
	signer, err := v.Signer(identityKeyName)
	if err != nil {
		return nil, fmt.Errorf("load identity key: %w", err)
	}
	rec, err := v.ReadRecord(attestationRecord)
	if err != nil {
		return nil, fmt.Errorf("load purpose-key attestation: %w", err)
	}
	a, err := ParseAttestation(rec)
	if err != nil {
		return nil, fmt.Errorf("load purpose-key attestation: %w", err)
	}
	if !a.IdentityKey.Equal(signer.Public()) {
		return nil, errors.New("secure: the vault's purpose-key attestation was signed by another identity key")
	}
	for _, slot := range purposeSlots {
		purpose, err := v.DH(slot)
		if errors.Is(err, vault.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load purpose key: %w", err)
		}
		if purpose.PublicKey() == a.PurposeKey {
			return &LocalIdentity{signer: signer, purpose: purpose, slot: slot, public: &Identity{attestation: a}}, nil
		}
	}
	return nil, errors.New("secure: the vault holds no purpose key matching its attestation (run: ockam purpose-key rotate)")
}

// RotatePurposeKey generates a new purpose key, attests it for ttl and
// makes it current by replacing the attestation record (one atomic write),
// then deletes the previous purpose key. Credentials stay valid: they name
// the identity, not the purpose key. Channels already open keep their
// session keys.
//
// Purpose keys alternate between two vault slots, so a crash at any point
// leaves the current attestation pointing at a key that still exists.
func (l *LocalIdentity) RotatePurposeKey(v vault.Vault, now time.Time, ttl time.Duration) error {
	slot := purposeSlots[0]
	if l.slot == purposeSlots[0] {
		slot = purposeSlots[1]
	}
	// A leftover key in the free slot is from an earlier rotation (or one
	// that crashed before its attestation was written): it is not current.
	if err := v.DeleteKey(slot); err != nil && !errors.Is(err, vault.ErrNotFound) {
		return fmt.Errorf("rotate purpose key: %w", err)
	}
	purpose, err := v.GenerateDH(slot)
	if err != nil {
		return fmt.Errorf("generate purpose key: %w", err)
	}
	a, err := Attest(l.signer, purpose.PublicKey(), now, ttl)
	if err != nil {
		return err
	}
	if err := v.WriteRecord(attestationRecord, a.Marshal()); err != nil {
		return fmt.Errorf("store purpose-key attestation: %w", err)
	}
	old := l.slot
	l.purpose, l.slot, l.public = purpose, slot, &Identity{attestation: a}
	if old != "" {
		if err := v.DeleteKey(old); err != nil && !errors.Is(err, vault.ErrNotFound) {
			return fmt.Errorf("delete previous purpose key: %w", err)
		}
	}
	return nil
}

// purposeSlots are the two vault names purpose keys alternate between.
var purposeSlots = [2]string{purposeKeyPrefix + "a", purposeKeyPrefix + "b"}

// NewLocalIdentity returns the identity of signer, whose purpose key purpose
// is attested by a: for keys held outside a vault, such as the fixed keys of
// test vectors. It checks that the three belong together.
func NewLocalIdentity(signer vault.Signer, purpose vault.DH, a *Attestation) (*LocalIdentity, error) {
	if !a.IdentityKey.Equal(signer.Public()) || a.PurposeKey != purpose.PublicKey() {
		return nil, errors.New("secure: the attestation is not of these keys")
	}
	return &LocalIdentity{signer: signer, purpose: purpose, slot: purposeSlots[0], public: &Identity{attestation: a}}, nil
}

// PurposeKey returns the current purpose key: the X25519 key of the Noise
// handshake and of enrollment (docs/PROTOCOL.md §14).
func (l *LocalIdentity) PurposeKey() vault.DH { return l.purpose }

// Identifier returns the identity's Identifier.
func (l *LocalIdentity) Identifier() Identifier { return l.public.Identifier() }

// Public returns the public identity (identity key and current attestation).
func (l *LocalIdentity) Public() *Identity { return l.public }

// Signer returns the identity key's signer, for issuing credentials and
// revocation lists.
func (l *LocalIdentity) Signer() vault.Signer { return l.signer }

// CheckAttestation returns an error wrapping ErrExpired or ErrNotYetValid
// if the current purpose-key attestation is not valid at now, with a hint
// to rotate.
func (l *LocalIdentity) CheckAttestation(now time.Time) error {
	if err := l.public.attestation.Verify(now); err != nil {
		return fmt.Errorf("%w (run: ockam purpose-key rotate)", err)
	}
	return nil
}
