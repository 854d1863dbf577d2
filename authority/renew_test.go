package authority

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestRevocationListRenewed: once half the time to its next update has
// passed, the service signs the list again (the next sequence number, the
// same entries), so that listeners and devices polling it never hold a
// stale list; before that it changes nothing.
func TestRevocationListRenewed(t *testing.T) {
	f := newFixture(t)
	require.NoError(t, f.a.purge())
	require.Nil(t, f.a.RevocationList(), "no list: nothing to renew")

	revoked := secure.Identifier{7}
	first, err := f.a.Revoke([]secure.Identifier{revoked}, nil)
	require.NoError(t, err)
	require.Equal(t, t0.Add(secure.DefaultRevocationListValidity), first.NextUpdate)

	f.clock.Add(secure.DefaultRevocationListValidity/2 - time.Second)
	require.NoError(t, f.a.purge())
	require.Same(t, first, f.a.RevocationList())

	f.clock.Add(time.Second)
	require.NoError(t, f.a.purge())
	renewed := f.a.RevocationList()
	require.Equal(t, uint64(2), renewed.Sequence)
	require.Equal(t, []secure.Identifier{revoked}, renewed.Subjects())
	require.Equal(t, f.clock.Now().Add(secure.DefaultRevocationListValidity), renewed.NextUpdate)
	require.NoError(t, f.verifier.UpdateRevocations(first))
	require.NoError(t, f.verifier.UpdateRevocations(renewed), "a newer list for every party")
	f.requireConsistent()
}
