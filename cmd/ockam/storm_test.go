package main

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority"
	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
)

// refusals are the errors by which the service refuses a request; any
// other error of an enrollment is the connection failing.
var refusals = []error{
	enroll.ErrTokenUsed, enroll.ErrUnknownToken, secure.ErrExpired, enroll.ErrWrongAuthority, enroll.ErrUnknownPrekey,
	enroll.ErrPrekeyUsed, secure.ErrMalformed, secure.ErrDecrypt, secure.ErrRevoked, secure.ErrBadSignature,
	secure.ErrUnknownIssuer, secure.ErrWrongSubject, wire.ErrAuthorityUnavailable,
}

func isRefusal(err error) bool {
	for _, r := range refusals {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// TestEnrollStormKill9 enrolls a fleet from concurrent devices, kills the
// service with SIGKILL in the middle, starts it again on the same store,
// and lets the devices go on (each retries its own token after a broken
// connection). At the end the store must be consistent and account for
// every token: each was used exactly once, for one recorded credential,
// which the device got (an answer lost in the crash is sent again when the
// device retries with its token: enrollment is idempotent for one device;
// the case of a retry refused as "token already used" stays counted as
// lost). No device ever got a credential the store does not hold.
func TestEnrollStormKill9(t *testing.T) {
	const devices, workers = 240, 16
	f := newFleet(t)
	toks := f.tokens(devices, "role=sensor")
	addr := freeAddress(t)
	srv := f.serveAt(addr)

	creds := make([]*secure.Credential, devices)
	lost := make([]bool, devices)
	var enrolled atomic.Int64
	killAt := int64(devices / 3)
	killed := make(chan struct{})
	work := make(chan int, devices)
	for i := range devices {
		work <- i
	}
	close(work)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range work {
				id := newDeviceIdentity(t)
				broken := false
				deadline := time.Now().Add(2 * time.Minute)
				for time.Now().Before(deadline) {
					c, err := enrollAt(addr, id, f.authority, toks[i], time.Now(), false)
					switch {
					case err == nil:
						creds[i] = c
						if enrolled.Add(1) == killAt {
							close(killed)
						}
					case broken && errors.Is(err, enroll.ErrTokenUsed):
						lost[i] = true // committed, but the answer died with the service
					case isRefusal(err):
						t.Errorf("device %d: %v", i, err)
					default:
						broken = true // the service is down: try again
						time.Sleep(20 * time.Millisecond)
						continue
					}
					break
				}
				if creds[i] == nil && !lost[i] {
					t.Errorf("device %d never enrolled", i)
				}
			}
		})
	}

	<-killed
	srv.kill()
	atKill := enrolled.Load()
	srv2 := f.serveAt(addr)
	wg.Wait()
	srv2.stop()
	require.Less(t, atKill, int64(devices), "the storm was over before the kill")

	store, err := authority.OpenStore(f.db, f.authority.Identifier())
	require.NoError(t, err)
	defer store.Close()
	st, err := store.Check()
	require.NoError(t, err)
	nLost, seen := 0, map[secure.CredentialID]bool{}
	for i, c := range creds {
		if lost[i] {
			nLost++
			continue
		}
		require.NotNil(t, c, "device %d", i)
		require.False(t, seen[c.ID])
		seen[c.ID] = true
		recorded, h, err := store.Credential(c.ID)
		require.NoError(t, err, "device %d got a credential the store does not hold", i)
		require.Equal(t, c.Marshal(), recorded.Marshal())
		require.Equal(t, toks[i].Hash(), h, "device %d: credential recorded for another token", i)
	}
	require.Equal(t, devices, st.Tokens)
	require.Equal(t, devices, st.TokensUsed, "every token used once")
	require.Equal(t, st.TokensUsed, st.Credentials, "tokens used == credentials issued")
	require.Equal(t, devices-nLost, len(seen))
	require.Zero(t, nLost, "every answer lost in the crash was sent again on the device's retry")
	t.Logf("figures: %d devices, %d enrolled before the SIGKILL, %d answers lost in it; store: %d tokens used, %d credentials",
		devices, atKill, nLost, st.TokensUsed, st.Credentials)
}
