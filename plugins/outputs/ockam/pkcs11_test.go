//go:build cgo

package ockam

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11/softhsmtest"
	"github.com/ockam-addons/telegraf-ockam/vault/vaults"
)

// TestPKCS11Pipeline runs a device and a listener whose identity keys are in
// SoftHSM tokens: vault_path of both plugins is a pkcs11: spec. Metrics are
// delivered, the device's purpose key is rotated on the running device, and
// the identity key objects stay sensitive and not extractable.
func TestPKCS11Pipeline(t *testing.T) {
	tk := softhsmtest.New(t, "", "device", "gateway")
	fleet := ockamtest.NewFleet(t)
	member := func(token, name string, attrs map[string]string) (spec, cred string, id *secure.LocalIdentity) {
		t.Helper()
		spec = tk.Spec(token, filepath.Join(fleet.Dir, name))
		v, err := vaults.Open(spec, nil)
		require.NoError(t, err)
		defer v.(io.Closer).Close()
		id, err = secure.CreateIdentity(v, time.Now())
		require.NoError(t, err)
		cred = filepath.Join(fleet.Dir, name+".cred")
		ockamtest.WriteFile(t, cred, fleet.Issue(t, fleet.Authority, id.Identifier(), attrs, time.Now(), time.Hour).MarshalFile())
		return spec, cred, id
	}
	devSpec, devCred, dev := member("device", "device", map[string]string{"role": "sensor"})
	gwSpec, gwCred, _ := member("gateway", "gateway", map[string]string{"role": "listener"})

	addr := ockamtest.FreeAddr(t)
	l := startRealListener(t, addr, gwSpec, gwCred, time.Second, fleet.AuthorityFile)
	o := newPipelineOutput(t, addr, devSpec, devCred, fleet.AuthorityFile)
	writeAll(t, o, sequence(0, 100))
	oldKey := o.trust.Current().Identity.Public().Attestation().PurposeKey

	// ockam purpose-key rotate --vault <devSpec>, in this process: it shares
	// the plugin's login to the token.
	v, err := vaults.OpenExisting(devSpec, nil)
	require.NoError(t, err)
	operator, err := secure.LoadIdentity(v)
	require.NoError(t, err)
	require.NoError(t, operator.RotatePurposeKey(v, time.Now(), time.Hour))
	require.NoError(t, v.(io.Closer).Close())
	waitChannelEnd(t, o)
	writeAll(t, o, sequence(100, 100))
	require.NotEqual(t, oldKey, o.trust.Current().Identity.Public().Attestation().PurposeKey)
	require.Equal(t, operator.Public().Attestation().PurposeKey, o.trust.Current().Identity.Public().Attestation().PurposeKey)

	require.Equal(t, want(dev.Identifier().String(), 0, 200), l.seqs("ockam_identity"))
	for _, token := range []string{"device", "gateway"} {
		k := tk.PrivateKey(t, token, pkcs11.DefaultLabelPrefix+"identity")
		require.True(t, k.Sensitive && k.AlwaysSensitive, "%s: CKA_SENSITIVE", token)
		require.False(t, k.Extractable, "%s: CKA_EXTRACTABLE", token)
		require.True(t, k.NeverExtractable, "%s: CKA_NEVER_EXTRACTABLE", token)
		require.True(t, k.ValueIsSensitive(), "%s: reading CKA_VALUE: %v", token, k.ValueErr)
	}
}
