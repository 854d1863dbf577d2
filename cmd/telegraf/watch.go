package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// defaultWatchInterval is how often --watch-config looks at the
// configuration files and directories.
const defaultWatchInterval = time.Second

// watchMode checks the value of --watch-config: "" (none), "notify" or
// "poll", Telegraf's two modes. This build polls in both.
func watchMode(s string) error {
	switch s {
	case "", "notify", "poll":
		return nil
	}
	return fmt.Errorf("--watch-config %q: want notify or poll", s)
}

// fingerprint describes the configuration as watched: each --config file,
// and each *.conf file of each --config-directory (as config.WalkDirectory
// finds them, subdirectories included), by name, size, mode and
// modification time. A missing file is part of the description too.
func fingerprint(opts options) string {
	var b strings.Builder
	stat := func(p string) {
		fi, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			return
		}
		fmt.Fprintf(&b, "%s %d %v %d\n", p, fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
	}
	for _, f := range opts.configs {
		stat(f)
	}
	for _, dir := range opts.configDirs {
		var files []string
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".conf") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", dir, err)
		}
		slices.Sort(files)
		for _, f := range files {
			stat(f)
		}
	}
	return b.String()
}

// watchConfig sends on changed (without blocking: one pending change is
// enough) whenever the fingerprint of the configuration changes from last,
// looking every interval, until ctx ends.
func watchConfig(ctx context.Context, opts options, last string, interval time.Duration, changed chan<- struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := fingerprint(opts); now != last {
			last = now
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}
}
