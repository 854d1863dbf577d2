package secure

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

func TestReload(t *testing.T) {
	v := vault.NewMemory()
	running, err := CreateIdentity(v, t0)
	require.NoError(t, err)

	same, err := running.Reload(v)
	require.NoError(t, err)
	require.Same(t, running, same, "nothing changed: nothing is loaded")

	// Another process rotates the purpose key.
	operator, err := LoadIdentity(v)
	require.NoError(t, err)
	require.NoError(t, operator.RotatePurposeKey(v, t0.Add(time.Hour), DefaultAttestationTTL))
	rotated, err := running.Reload(v)
	require.NoError(t, err)
	require.NotSame(t, running, rotated)
	require.Equal(t, running.Identifier(), rotated.Identifier())
	require.Equal(t, operator.Public().Attestation().Marshal(), rotated.Public().Attestation().Marshal())
	require.NotEqual(t, running.Public().Attestation().PurposeKey, rotated.Public().Attestation().PurposeKey)
	require.Equal(t, running.Public().Attestation().Created, t0, "Reload does not modify its receiver")

	// The vault now holds another identity.
	for _, name := range []string{"identity", "purpose-a", "purpose-b"} {
		if err := v.DeleteKey(name); err != nil {
			require.ErrorIs(t, err, vault.ErrNotFound)
		}
	}
	other, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	_, err = rotated.Reload(v)
	require.ErrorContains(t, err, "the vault now holds identity "+other.Identifier().Short())

	_, err = running.Reload(vault.NewMemory())
	require.ErrorIs(t, err, vault.ErrNotFound)
}

// BenchmarkReloadUnchanged is what outputs.ockam pays before each dial, and
// inputs.ockam_listener every revocation_check_interval, when no rotation
// happened: one read of the attestation record of a file vault.
func BenchmarkReloadUnchanged(b *testing.B) {
	v, err := vault.OpenFile(b.TempDir()+"/vault", nil)
	require.NoError(b, err)
	l, err := CreateIdentity(v, time.Now())
	require.NoError(b, err)
	for b.Loop() {
		if got, err := l.Reload(v); err != nil || got != l {
			b.Fatal(got, err)
		}
	}
}

// flickerVault returns other bytes for the first read of the attestation
// record: a rewrite that a concurrent Reload saw half way.
type flickerVault struct {
	vault.Vault
	reads int
}

func (f *flickerVault) ReadRecord(name string) ([]byte, error) {
	rec, err := f.Vault.ReadRecord(name)
	if f.reads++; f.reads == 1 && err == nil {
		rec = append([]byte{}, rec...)
		rec[len(rec)-1] ^= 1
	}
	return rec, err
}

// TestReloadRecordRewrittenMeanwhile: the record differed at Reload's first
// read and was the same again when LoadIdentity read it: nothing rotated,
// so Reload returns its receiver (a caller would otherwise report, and
// switch to, a rotation that did not happen).
func TestReloadRecordRewrittenMeanwhile(t *testing.T) {
	v := vault.NewMemory()
	running, err := CreateIdentity(v, t0)
	require.NoError(t, err)
	f := &flickerVault{Vault: v}
	same, err := running.Reload(f)
	require.NoError(t, err)
	require.Greater(t, f.reads, 1, "the changed record made Reload load the identity")
	require.Same(t, running, same)
}
