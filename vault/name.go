package vault

import (
	"errors"
	"fmt"
)

// maxNameLen bounds a name so that "<name>.key" and the temporary files
// beside it stay well under NAME_MAX (255) on every file system we target.
const maxNameLen = 64

var errInvalidName = errors.New("invalid name")

// checkName reports whether name is a valid key or record name: 1 to 64
// characters of [a-z0-9._-], not starting with a dot. A valid name is safe to
// use as a file name (no separators, never "." or "..", never hidden).
func checkName(name string) error {
	if len(name) == 0 || len(name) > maxNameLen || name[0] == '.' {
		return fmt.Errorf("vault: %w %q: want 1 to %d characters of [a-z0-9._-], not starting with a dot",
			errInvalidName, name, maxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("vault: %w %q: character %q is not one of [a-z0-9._-]", errInvalidName, name, c)
		}
	}
	return nil
}

// CheckName returns an error if name is not a valid key or record name (see
// Vault). Backends outside this package call it so that every vault accepts
// the same names.
func CheckName(name string) error { return checkName(name) }
