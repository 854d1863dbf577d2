package secure

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

func TestCreateAndLoadIdentity(t *testing.T) {
	v := vault.NewMemory()
	l, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	a := l.Public().Attestation()
	require.Equal(t, t0, a.Created)
	require.Equal(t, t0.Add(DefaultAttestationTTL), a.Expires)
	require.Equal(t, IdentifierOf(l.Signer().Public()), l.Identifier())
	require.Equal(t, l.Identifier(), l.Public().Identifier())
	require.Equal(t, l.Signer().Public(), l.Public().Key())
	require.NoError(t, l.CheckAttestation(t0))
	requirePurposeSlot(t, v, l, "purpose-a")

	rec, err := v.ReadRecord("purpose.attestation")
	require.NoError(t, err)
	require.Equal(t, a.Marshal(), rec)

	loaded, err := LoadIdentity(v)
	require.NoError(t, err)
	require.Equal(t, l.Identifier(), loaded.Identifier())
	require.Equal(t, a.Marshal(), loaded.Public().Attestation().Marshal())
	require.Equal(t, "purpose-a", loaded.slot)

	_, err = CreateIdentity(v, t0)
	require.ErrorIs(t, err, vault.ErrExists, "a second identity in one vault")
}

// requirePurposeSlot checks that the identity's purpose key is in slot,
// that the other slot is empty, and that the attestation attests it.
func requirePurposeSlot(t *testing.T, v vault.Vault, l *LocalIdentity, slot string) {
	t.Helper()
	require.Equal(t, slot, l.slot)
	dh, err := v.DH(slot)
	require.NoError(t, err)
	require.Equal(t, dh.PublicKey(), l.Public().Attestation().PurposeKey)
	require.Equal(t, dh.PublicKey(), l.purpose.PublicKey())
	other := map[string]string{"purpose-a": "purpose-b", "purpose-b": "purpose-a"}[slot]
	_, err = v.DH(other)
	require.ErrorIs(t, err, vault.ErrNotFound, "the previous purpose key is deleted")
}

func TestRotatePurposeKey(t *testing.T) {
	e := newTestEnv(t)
	v := vault.NewMemory()
	l, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	id := l.Identifier()
	cred := issue(t, e.authority, id, sensorAttrs)
	keys := map[[32]byte]bool{l.Public().Attestation().PurposeKey: true}

	for i, slot := range []string{"purpose-b", "purpose-a", "purpose-b"} {
		now := t0.Add(time.Duration(i+1) * time.Hour)
		require.NoError(t, l.RotatePurposeKey(v, now, 2*time.Hour), "rotation %d", i+1)
		requirePurposeSlot(t, v, l, slot)
		a := l.Public().Attestation()
		require.False(t, keys[a.PurposeKey], "a new purpose key")
		keys[a.PurposeKey] = true
		require.Equal(t, now, a.Created)
		require.Equal(t, now.Add(2*time.Hour), a.Expires)
		require.Equal(t, id, l.Identifier(), "the identifier stays")
		require.NoError(t, e.verifier.VerifyCredential(cred, a.Identifier(), now), "the credential stays valid")

		loaded, err := LoadIdentity(v)
		require.NoError(t, err)
		require.Equal(t, id, loaded.Identifier())
		require.Equal(t, slot, loaded.slot)
		require.Equal(t, a.Marshal(), loaded.Public().Attestation().Marshal())
	}

	// A handshake with the rotated key and the old credential.
	lcfg := e.listenerConfig()
	dcfg := HandshakeConfig{Identity: l, Credential: cred, Verifier: e.verifier, Now: fixedNow(t0.Add(3 * time.Hour))}
	lcfg.Now = dcfg.Now
	_, lis, err := doHandshake(t, dcfg, lcfg)
	require.NoError(t, err)
	require.Equal(t, id, lis.Peer().Identifier)
	require.Equal(t, l.Public().Attestation().PurposeKey, lis.Peer().Attestation.PurposeKey)

	// Rotating a loaded identity continues from its slot.
	loaded, err := LoadIdentity(v)
	require.NoError(t, err)
	require.NoError(t, loaded.RotatePurposeKey(v, t0, time.Hour))
	requirePurposeSlot(t, v, loaded, "purpose-a")
}

func TestRotatePurposeKeyShortTTL(t *testing.T) {
	v := vault.NewMemory()
	l, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	before := l.Public().Attestation().Marshal()
	require.Error(t, l.RotatePurposeKey(v, t0, 500*time.Millisecond))
	require.Equal(t, before, l.Public().Attestation().Marshal(), "the current key stays")
	loaded, err := LoadIdentity(v)
	require.NoError(t, err, "the vault still loads")
	require.Equal(t, before, loaded.Public().Attestation().Marshal())
}

// TestRotatePurposeKeyLeftover: a key left in the free slot by a rotation
// that crashed before writing its attestation is replaced.
func TestRotatePurposeKeyLeftover(t *testing.T) {
	v := vault.NewMemory()
	l, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	leftover, err := v.GenerateDH("purpose-b")
	require.NoError(t, err)
	loaded, err := LoadIdentity(v)
	require.NoError(t, err)
	require.Equal(t, "purpose-a", loaded.slot, "the attested key, not the leftover")
	require.NoError(t, l.RotatePurposeKey(v, t0, time.Hour))
	requirePurposeSlot(t, v, l, "purpose-b")
	require.NotEqual(t, leftover.PublicKey(), l.Public().Attestation().PurposeKey)
}

// TestPurposeSlotAfterRecord: a rotation that wrote its attestation and
// crashed before deleting the previous key leaves both slots full; the
// current slot is the one the attestation names (docs/PROTOCOL.md, section
// 11), and the next rotation reuses the other one.
func TestPurposeSlotAfterRecord(t *testing.T) {
	v := vault.NewMemory()
	l, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	next, err := v.GenerateDH("purpose-b")
	require.NoError(t, err)
	a, err := Attest(l.Signer(), next.PublicKey(), t0, time.Hour)
	require.NoError(t, err)
	require.NoError(t, v.WriteRecord(attestationRecord, a.Marshal()))
	_, err = v.DH("purpose-a")
	require.NoError(t, err, "the previous key is still there")

	loaded, err := LoadIdentity(v)
	require.NoError(t, err)
	require.Equal(t, "purpose-b", loaded.slot)
	require.Equal(t, next.PublicKey(), loaded.Public().Attestation().PurposeKey)
	require.NoError(t, loaded.RotatePurposeKey(v, t0, time.Hour))
	requirePurposeSlot(t, v, loaded, "purpose-a")
}

func TestLoadIdentityErrors(t *testing.T) {
	t.Run("empty vault", func(t *testing.T) {
		_, err := LoadIdentity(vault.NewMemory())
		require.ErrorIs(t, err, vault.ErrNotFound)
	})
	t.Run("no attestation", func(t *testing.T) {
		v := vault.NewMemory()
		_, err := v.GenerateSigner("identity")
		require.NoError(t, err)
		_, err = LoadIdentity(v)
		require.ErrorIs(t, err, vault.ErrNotFound)
	})
	t.Run("corrupt attestation", func(t *testing.T) {
		v := vault.NewMemory()
		_, err := CreateIdentity(v, t0)
		require.NoError(t, err)
		rec, err := v.ReadRecord("purpose.attestation")
		require.NoError(t, err)
		require.NoError(t, v.WriteRecord("purpose.attestation", flip(rec, 100, 1)))
		_, err = LoadIdentity(v)
		require.ErrorIs(t, err, ErrBadSignature)
	})
	t.Run("attestation of another identity", func(t *testing.T) {
		v := vault.NewMemory()
		_, err := CreateIdentity(v, t0)
		require.NoError(t, err)
		other := newIdentity(t)
		require.NoError(t, v.WriteRecord("purpose.attestation", other.Public().Attestation().Marshal()))
		_, err = LoadIdentity(v)
		require.Error(t, err)
	})
	t.Run("purpose key missing", func(t *testing.T) {
		v := vault.NewMemory()
		_, err := CreateIdentity(v, t0)
		require.NoError(t, err)
		require.NoError(t, v.DeleteKey("purpose-a"))
		_, err = LoadIdentity(v)
		require.Error(t, err)
	})
}

func TestIdentityFile(t *testing.T) {
	l := newIdentity(t)
	file := l.Public().MarshalFile()
	require.True(t, bytes.HasPrefix(file, []byte("-----BEGIN OCKAM IDENTITY-----\n")))
	p, err := ParseIdentityFile(file)
	require.NoError(t, err)
	require.Equal(t, l.Identifier(), p.Identifier())
	require.Equal(t, l.Public().Attestation().Marshal(), p.Attestation().Marshal())

	// An authority file stays usable after its purpose key expired.
	expired, err := Attest(l.Signer(), l.Public().Attestation().PurposeKey, t0.Add(-48*time.Hour), time.Hour)
	require.NoError(t, err)
	p, err = ParseIdentityFile(armor(pemIdentity, expired.Marshal()))
	require.NoError(t, err)
	require.ErrorIs(t, p.Attestation().Verify(t0), ErrExpired)

	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"credential block", armor(pemCredential, l.Public().Attestation().Marshal()), ErrMalformed},
		{"truncated", armor(pemIdentity, l.Public().Attestation().Marshal()[:145]), ErrMalformed},
		{"bad signature", armor(pemIdentity, flip(l.Public().Attestation().Marshal(), 140, 1)), ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIdentityFile(tc.data)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestCheckAttestation(t *testing.T) {
	l := newIdentity(t)
	for _, tc := range []struct {
		now  time.Time
		want error
	}{
		{t0.Add(-ClockSkew - time.Second), ErrNotYetValid},
		{t0, nil},
		{t0.Add(DefaultAttestationTTL - time.Second), nil},
		{t0.Add(DefaultAttestationTTL), ErrExpired},
	} {
		t.Run(fmt.Sprint(tc.now.Sub(t0)), func(t *testing.T) {
			err := l.CheckAttestation(tc.now)
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			require.Contains(t, err.Error(), "ockam purpose-key rotate")
		})
	}
}
