package trust

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
)

// run starts tr.Run until the test ends.
func run(t *testing.T, tr *Trust) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Run(ctx, 10*time.Millisecond)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		require.NoError(t, tr.Close())
	})
}

// TestSourceFailsClosed: with a source and no kept list, Ready fails until
// the source answered with a signed list; WaitReady waits for it. The attack:
// on a first start, someone on the path answers "no list" (an empty reply,
// not signed); the party stays closed.
func TestSourceFailsClosed(t *testing.T) {
	p := newPKI(t)
	src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
	log := &logger{}
	c := p.config(log)
	c.Revocation = RevocationConfig{Source: src.Source(), PollInterval: 10 * time.Millisecond}
	tr, err := Open(c)
	require.NoError(t, err)
	require.ErrorIs(t, tr.Ready(), ErrNoRevocationList)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, tr.WaitReady(ctx), ErrNoRevocationList, "an ended wait")

	run(t, tr)
	src.FetchedTwice(t)
	require.ErrorIs(t, tr.Ready(), ErrNoRevocationList, "an empty answer opens nothing")
	require.Len(t, log.find("W!", "it answered that it has no list; that answer is not signed and opens nothing",
		"no list is applied yet, no channel is accepted or opened"), 1)
	_, err = os.Stat(DefaultStatePath(p.credFile))
	require.ErrorIs(t, err, os.ErrNotExist, "no list, nothing kept")

	src.Serve(p.list(1, p.now.Add(time.Hour)).Marshal())
	require.NoError(t, tr.WaitReady(context.Background()))
	src.FetchedTwice(t)
	require.Len(t, log.find("I!", "applied: sequence 1, 0 subjects and 0 credentials revoked"), 1)
	kept, err := loadState(DefaultStatePath(p.credFile))
	require.NoError(t, err)
	require.Equal(t, uint64(1), kept.Sequence, "the list is kept")
}

// TestSourceKeepsNewestList: the list is kept in the state file (0600,
// replacing a symlink rather than following it), an older list is refused
// with a warning, and "no list" after a list changes nothing.
func TestSourceKeepsNewestList(t *testing.T) {
	p := newPKI(t)
	src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
	log := &logger{}
	state := filepath.Join(p.dir, "state")
	target := filepath.Join(p.dir, "elsewhere") // a dangling link: no state yet
	require.NoError(t, os.Symlink(target, state))
	c := p.config(log)
	c.Revocation = RevocationConfig{Source: src.Source(), PollInterval: 10 * time.Millisecond, State: state}
	tr, err := Open(c)
	require.NoError(t, err)
	run(t, tr)

	src.Serve(p.list(2, p.now.Add(time.Hour), p.authority.Identifier()).Marshal())
	src.FetchedTwice(t)
	require.Equal(t, uint64(2), tr.Verifier().RevocationSequence(p.authority.Identifier()))
	fi, err := os.Lstat(state)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode(), "a regular file, owner only")
	kept, err := loadState(state)
	require.NoError(t, err)
	require.Equal(t, uint64(2), kept.Sequence)
	_, err = os.Lstat(target)
	require.ErrorIs(t, err, os.ErrNotExist, "the link was replaced, not followed")

	for _, body := range [][]byte{p.list(1, p.now.Add(time.Hour)).Marshal(), nil} {
		src.Serve(body)
		src.FetchedTwice(t)
		require.Equal(t, uint64(2), tr.Verifier().RevocationSequence(p.authority.Identifier()))
	}
	require.NotEmpty(t, log.find("W!", "serves an older list than the current one (refused, a replay?)",
		"sequence 1, current is 2", "keeping the current list (sequence 2)"))
	require.NotEmpty(t, log.find("W!", "it has no revocation list, but sequence 2 was applied before"))
	kept, err = loadState(state)
	require.NoError(t, err)
	require.Equal(t, uint64(2), kept.Sequence)
}

// TestSourceStale: a list past its next update is reported once and
// counted once; with StaleRefuses, Ready fails meanwhile.
func TestSourceStale(t *testing.T) {
	p := newPKI(t)
	src := ockamtest.NewRevocationServer(t, "127.0.0.1:0")
	log := &logger{}
	now := p.now
	stale := 0
	c := p.config(log)
	c.Now = func() time.Time { return now }
	c.Revocation = RevocationConfig{Source: src.Source(), StaleRefuses: true, Stale: func() { stale++ }}
	c.Revocation.State = p.write("state", p.list(1, p.now.Add(time.Minute)).MarshalFile())
	tr, err := Open(c)
	require.NoError(t, err)
	defer tr.Close()
	require.NoError(t, tr.Ready())
	require.NoError(t, tr.Refresh(now))
	require.Zero(t, stale)

	now = p.now.Add(time.Minute)
	require.ErrorIs(t, tr.Ready(), ErrNoRevocationList)
	require.NoError(t, tr.Refresh(now))
	require.NoError(t, tr.Refresh(now))
	require.Equal(t, 1, stale)
	require.Len(t, log.find("E!", "(sequence 1) is stale: its next update was due at"), 1)

	// A newer list ends it.
	require.NoError(t, tr.source.apply(p.list(2, now.Add(time.Hour))))
	require.NoError(t, tr.Ready())
}
