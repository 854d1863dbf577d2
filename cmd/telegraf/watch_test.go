package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWatchConfig: a *.conf file written into a watched directory (by a
// temporary file and a rename, as outputs.ockam writes fragments) is a
// change; a temporary file alone is not.
func TestWatchConfig(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(t.TempDir(), "telegraf.conf")
	require.NoError(t, os.WriteFile(main, []byte("[agent]\n"), 0o600))
	opts := options{configs: []string{main}, configDirs: []string{dir}}
	before := fingerprint(opts)
	tmp := filepath.Join(dir, ".ockam-interval.conf.123.tmp")
	require.NoError(t, os.WriteFile(tmp, []byte("[agent]\n  interval = \"1s\"\n"), 0o600))
	require.Equal(t, before, fingerprint(opts), "a temporary file is not configuration")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() { defer close(done); watchConfig(ctx, opts, before, 10*time.Millisecond, changed) }()
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, "ockam-interval.conf")))
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("the new file was not noticed")
	}
	require.NotEqual(t, before, fingerprint(opts))
	cancel()
	<-done
}

func TestWatchFlags(t *testing.T) {
	opts, err := parseFlags([]string{"--watch-config", "poll", "--watch-interval", "250ms"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "poll", opts.watch)
	require.Equal(t, 250*time.Millisecond, opts.watchInterval)
	_, err = parseFlags([]string{"--watch-config", "inotify"}, io.Discard)
	require.ErrorContains(t, err, "want notify or poll")
	_, err = parseFlags([]string{"--watch-interval", "0s"}, io.Discard)
	require.ErrorContains(t, err, "must be positive")
}
