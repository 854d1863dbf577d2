package deploy_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestComposeInitUpgrade: a demo whose gateway credential predates the
// relay (role=listener only, still valid) gets a new one with
// relay=plant-7-gateway from the next run of init, which keeps every
// identity and every other credential; the run after that changes nothing.
func TestComposeInitUpgrade(t *testing.T) {
	bin, _ := requireBinaries(t)
	p, root, r, path := onLoopback(t, bin)
	runInit(t, p, r, path)
	gatewayCred := filepath.Join(root, "gateway", "gateway.cred")
	require.Equal(t, map[string]string{"role": "listener", "relay": relayName}, credentialOf(t, gatewayCred).Attributes)

	// The credential of the demo before the relay.
	runToEnd(t, []string{"ockam", "credential", "issue", "--vault", filepath.Join(root, "authority", "vault"),
		"--subject", filepath.Join(root, "public", "gateway.identity"), "--attr", "role=listener", "--ttl", "720h",
		"--out", gatewayCred, "--force"}, nil)
	old := snapshot(t, root)
	oldCred := credentialOf(t, gatewayCred)

	runInit(t, p, r, path)
	upgraded := snapshot(t, root)
	cred := credentialOf(t, gatewayCred)
	require.Equal(t, map[string]string{"role": "listener", "relay": relayName}, cred.Attributes)
	require.Equal(t, oldCred.Subject, cred.Subject, "the gateway keeps its identity")
	require.NotEqual(t, old[gatewayCred], upgraded[gatewayCred])
	delete(old, gatewayCred)
	delete(upgraded, gatewayCred)
	require.Equal(t, old, upgraded, "init changed more than the gateway's credential")

	upgraded[gatewayCred] = readFile(t, gatewayCred)
	runInit(t, p, r, path)
	require.Equal(t, upgraded, snapshot(t, root), "init changed the fleet when run again")
}

func credentialOf(t *testing.T, path string) *secure.Credential {
	t.Helper()
	c, err := secure.ParseCredentialFile([]byte(readFile(t, path)))
	require.NoError(t, err, "%s", path)
	return c
}
