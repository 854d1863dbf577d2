package trust

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// loadState reads the revocation list kept in a state file: nil, nil if
// there is none yet. The list's signature is checked when it is applied.
func loadState(path string) (*secure.RevocationList, error) {
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return secure.ParseRevocationListFile(data)
}

// saveState writes list to path, readable by its owner only: a temporary
// file in the same directory, synced, then renamed into place, so that a
// crash leaves the old state or the new one, never a mix. A symlink at
// path is replaced, not followed.
func saveState(path string, list *secure.RevocationList) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(list.MarshalFile()); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return nil
}
