package main

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/awnumar/memguard"
	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/logger"
)

// runSecrets runs telegraf secrets list|get|set as Telegraf does: it loads
// only the secret stores of the configuration (no inputs, no outputs).
//
//	secrets list [STORE...]     the keys of each store
//	secrets get STORE KEY       prints a secret
//	secrets set STORE KEY VALUE stores a secret (stores that can, as jose and os)
func runSecrets(opts options, stdout io.Writer) error {
	if err := logger.SetupLogging(&logger.Config{Debug: opts.debug, Quiet: true}); err != nil {
		return err
	}
	// As Telegraf: a filter no plugin is called loads no input or output.
	opts.filters.input, opts.filters.output = []string{"-"}, []string{"-"}
	c, err := loadConfig(opts)
	if err != nil {
		return err
	}
	args := opts.args
	switch sub := opts.command[1]; {
	case sub == "list":
		return listSecrets(c, args, stdout)
	case sub == "get" && len(args) == 2:
		store, err := secretStore(c, args[0])
		if err != nil {
			return err
		}
		v, err := store.Get(args[1])
		if err != nil {
			return fmt.Errorf("secret %q of store %q: %w", args[1], args[0], err)
		}
		defer memguard.WipeBytes(v)
		fmt.Fprintf(stdout, "%s:%s = %s\n", args[0], args[1], v)
		return nil
	case sub == "set" && len(args) == 3:
		store, err := secretStore(c, args[0])
		if err != nil {
			return err
		}
		editor, ok := store.(telegraf.SecretStoreEditor)
		if !ok {
			return fmt.Errorf("secret store %q cannot store secrets", args[0])
		}
		return editor.Set(args[1], args[2])
	}
	return errors.New("usage: telegraf secrets list [STORE...] | get STORE KEY | set STORE KEY VALUE")
}

// secretStore returns the secret store of the configuration with that id.
func secretStore(c *config.Config, id string) (telegraf.SecretStore, error) {
	store, ok := c.SecretStores[id]
	if !ok {
		return nil, fmt.Errorf("no secret store with id %q in the configuration", id)
	}
	return store, nil
}

// listSecrets prints the keys of the stores ids, or of every store.
func listSecrets(c *config.Config, ids []string, stdout io.Writer) error {
	if len(ids) == 0 {
		for id := range c.SecretStores {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		store, err := secretStore(c, id)
		if err != nil {
			return err
		}
		keys, err := store.List()
		if err != nil {
			return fmt.Errorf("secrets of store %q: %w", id, err)
		}
		sort.Strings(keys)
		fmt.Fprintf(stdout, "Known secrets for store %q:\n", id)
		for _, k := range keys {
			fmt.Fprintf(stdout, "    %s\n", k)
		}
	}
	return nil
}
