package main

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority"
	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// TestRequireOneTimePrekey: someone holds the authority's whole pool of
// one-time prekeys (here, of one), so bundles go out without one. `ockam
// enroll --require-one-time-prekey` refuses such a bundle and sends
// nothing; without the option the device enrolls without DH3.
func TestRequireOneTimePrekey(t *testing.T) {
	now := time.Now()
	v := vault.NewMemory()
	id, err := secure.CreateIdentity(v, now)
	require.NoError(t, err)
	store, err := authority.OpenStore(filepath.Join(t.TempDir(), "authority.db"), id.Identifier())
	require.NoError(t, err)
	a, err := authority.New(authority.Config{Vault: v, Identity: id, Store: store, MaxOneTimePrekeys: 1})
	require.NoError(t, err)
	t.Cleanup(func() { a.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&authority.Service{Authority: a}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	tok, err := enroll.GenerateToken(id.Identifier(), nil)
	require.NoError(t, err)
	require.NoError(t, a.AddTokens([]enroll.TokenHash{tok.Hash()}, authority.TokenSpec{Expires: now.Add(time.Hour), CredentialTTL: time.Hour}))

	// The drain: one bundle fetched and kept.
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer nc.Close()
	b, err := wire.FetchBundle(nc)
	require.NoError(t, err)
	require.Len(t, b.OneTimePrekeys, 1)

	device, err := secure.CreateIdentity(vault.NewMemory(), now)
	require.NoError(t, err)
	_, err = enrollAt(ln.Addr().String(), device, id.Public(), tok, now, true)
	require.ErrorIs(t, err, errNoOneTimePrekey)
	require.Equal(t, uint64(1), a.BundlesWithoutOneTimePrekey())
	c, err := enrollAt(ln.Addr().String(), device, id.Public(), tok, now, false)
	require.NoError(t, err, "the token was not used by the refused attempt")
	require.Equal(t, device.Identifier(), c.Subject)
}
