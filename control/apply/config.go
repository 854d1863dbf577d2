package apply

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unicode/utf8"

	"github.com/influxdata/telegraf/config"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
)

// FragmentMode is the mode of a written fragment: 0600. The fragment is
// written by the device's Telegraf (outputs.ockam runs inside it) and read
// by the same process when it reloads, so no one else needs to read it, and
// a fragment may hold a plugin's password or token.
const FragmentMode fs.FileMode = 0o600

// ConfigDir applies config instructions: it writes each fragment to
// Dir/ockam-<name>.conf, atomically (a temporary file whose name does not
// end in .conf, then a rename), in the directory that the device's
// Telegraf reads with --config-directory and watches with --watch-config.
// A fragment of the same name replaces the previous one; an empty fragment
// removes it.
type ConfigDir struct {
	// Dir is the watched configuration directory.
	Dir string
	// Check loads a fragment as Telegraf would, and returns its error; nil:
	// CheckFragment.
	Check func(fragment []byte, source string) error
}

// FragmentPath returns the file of the fragment name in dir, after checking
// the name (control.CheckName), so that no name reaches outside dir.
func FragmentPath(dir, name string) (string, error) {
	if err := control.CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(dir, "ockam-"+name+".conf"), nil
}

// Apply writes or removes the fragment of a config instruction. A fragment
// that Check refuses is refused (RefusedInvalidPayload) and not written.
func (c *ConfigDir) Apply(_ context.Context, in *control.Instruction) error {
	p, err := control.ParseNamed(in.Payload)
	if err != nil {
		return payloadError(err)
	}
	path, err := FragmentPath(c.Dir, p.Name)
	if err != nil {
		return payloadError(err)
	}
	if len(p.Data) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove fragment %s: %w", p.Name, err)
		}
		return atomicfile.SyncDir(c.Dir)
	}
	check := c.Check
	if check == nil {
		check = CheckFragment
	}
	if err := check(p.Data, path); err != nil {
		return refuse(control.RefusedInvalidPayload, fmt.Errorf("fragment %s does not load: %w", p.Name, err))
	}
	return atomicfile.Write(path, p.Data, FragmentMode)
}

// CheckFragment loads fragment with Telegraf's own loader (config.Config's
// LoadConfigData), as the agent will when it reloads: a TOML error, an
// unknown option, or a plugin this binary does not have ("undefined but
// requested input") is an error. The plugins are those registered in this
// process, that is, those compiled into the device's Telegraf. The fragment
// is checked alone, not together with the other files of the directory, and
// its secrets are not linked (a reference to a secret store of another file
// passes). Like Telegraf's loader, it builds each plugin without starting it,
// and calls Init of the fragment's secret stores.
func CheckFragment(fragment []byte, source string) error {
	if !utf8.Valid(fragment) {
		return errors.New("fragment is not UTF-8")
	}
	return config.NewConfig().LoadConfigData(fragment, source)
}
