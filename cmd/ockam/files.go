package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ockam-addons/telegraf-ockam/internal/atomicfile"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11"
	"github.com/ockam-addons/telegraf-ockam/vault/vaults"
)

// passphraseEnv names the environment variable that holds the vault
// passphrase. --passphrase-file, when given, takes precedence.
const passphraseEnv = "OCKAM_VAULT_PASSPHRASE"

// Size limits of the files ockam reads, checked before reading them whole.
const (
	maxPassphraseFile = 4 << 10 // a passphrase, not a key ring
	maxIdentityFile   = 64 << 10
	maxCredentialFile = 64 << 10 // a credential is at most ~14 KiB in PEM
	// A list of secure.MaxRevocationEntries identifiers is 32 MiB, ~45 MiB
	// in PEM; secure refuses anything larger.
	maxRevocationFile = 64 << 20
)

// publicFileMode is the mode of the files ockam writes: identity
// documents, credentials and revocation lists hold no secret.
const publicFileMode = 0o644

// vaultFlags are the flags of every command that opens a vault.
type vaultFlags struct {
	dir            string
	passphraseFile string
}

// register defines --vault and --passphrase-file on fs.
func (vf *vaultFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&vf.dir, "vault", "", "vault directory or pkcs11: spec")
	fs.StringVar(&vf.passphraseFile, "passphrase-file", "", "file holding the vault passphrase")
}

// passphrase returns the vault passphrase: the contents of --passphrase-file
// without one trailing newline, else $OCKAM_VAULT_PASSPHRASE, else nil
// (keys stored unencrypted).
func (vf *vaultFlags) passphrase(e *env) ([]byte, error) {
	if vf.passphraseFile == "" {
		if p := e.getenv(passphraseEnv); p != "" {
			return []byte(p), nil
		}
		return nil, nil
	}
	b, err := readBounded(vf.passphraseFile, maxPassphraseFile, true)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes.HasSuffix(b, []byte("\r\n")): // saved on Windows
		b = b[:len(b)-2]
	case bytes.HasSuffix(b, []byte("\n")):
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("passphrase file %s is empty", vf.passphraseFile)
	}
	return b, nil
}

// open opens the vault (a directory or a pkcs11: spec, see package
// vaults) and reports whether the keys it writes to its directory are
// encrypted. Unless create, the directory must already exist, since
// vaults.Open would create it.
func (vf *vaultFlags) open(e *env, create bool) (v vault.Vault, encrypted bool, err error) {
	pass, err := vf.passphrase(e)
	if err != nil {
		return nil, false, err
	}
	defer clear(pass) // the vault keeps its own copy
	if create {
		v, err = vaults.Open(vf.dir, pass)
	} else {
		v, err = vaults.OpenExisting(vf.dir, pass)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, withHint(fmt.Errorf("no vault at %s", vf.dir),
			fmt.Sprintf("run 'ockam identity create --vault %s' to create one", vf.dir))
	case errors.Is(err, pkcs11.ErrPIN):
		return nil, false, withHint(err, "check the PIN that pin-source names in --vault")
	case errors.Is(err, pkcs11.ErrTokenNotFound):
		return nil, false, withHint(err, "list the tokens with 'pkcs11-tool --module MODULE --list-token-slots' "+
			"(or 'softhsm2-util --show-slots'), and fix token= in --vault")
	case err != nil:
		return nil, false, err
	}
	return v, len(pass) > 0, nil
}

// load opens the vault and the identity in it.
func (vf *vaultFlags) load(e *env) (vault.Vault, *secure.LocalIdentity, error) {
	v, _, err := vf.open(e, false)
	if err != nil {
		return nil, nil, err
	}
	id, err := secure.LoadIdentity(v)
	switch {
	case errors.Is(err, vault.ErrNotFound):
		return nil, nil, withHint(fmt.Errorf("vault %s holds no identity: %w", vf.dir, err),
			fmt.Sprintf("run 'ockam identity create --vault %s' to create one", vf.dir))
	case errors.Is(err, vault.ErrPassphrase):
		return nil, nil, withHint(fmt.Errorf("open vault %s: %w", vf.dir, err),
			"set "+passphraseEnv+", or pass --passphrase-file FILE, to the passphrase the vault was created with")
	case err != nil:
		return nil, nil, fmt.Errorf("open vault %s: %w", vf.dir, err)
	}
	return v, id, nil
}

// readBounded reads the regular file at path, refusing one larger than max
// bytes and, if secret, one that group or others may read.
func readBounded(path string, max int64, secret bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); secret && perm&0o077 != 0 {
		return nil, withHint(fmt.Errorf("%s is readable by group or others (mode %04o)", path, uint32(perm)),
			fmt.Sprintf("run 'chmod 600 %s'", path))
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return b, nil
}

// readIdentityFile reads and parses an identity document.
func readIdentityFile(path string) (*secure.Identity, error) {
	return readParsed(path, maxIdentityFile, secure.ParseIdentityFile)
}

// readCredentialFile reads and parses a credential file.
func readCredentialFile(path string) (*secure.Credential, error) {
	return readParsed(path, maxCredentialFile, secure.ParseCredentialFile)
}

// readRevocationFile reads and parses a revocation list file.
func readRevocationFile(path string) (*secure.RevocationList, error) {
	return readParsed(path, maxRevocationFile, secure.ParseRevocationListFile)
}

// readParsed reads the public file at path, of at most max bytes, and
// parses it.
func readParsed[T any](path string, max int64, parse func([]byte) (T, error)) (T, error) {
	var zero T
	b, err := readBounded(path, max, false)
	if err != nil {
		return zero, err
	}
	v, err := parse(b)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// checkOutput fails early, before a vault is unlocked, if writeOutput
// would refuse path: a symbolic link, or an existing path unless force.
func checkOutput(path string, force bool) error {
	if path == "-" {
		return nil
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSymlink != 0:
		return withHint(fmt.Errorf("%s is a symbolic link: ockam does not write through one", path),
			"name the file itself")
	case !force:
		return withHint(fmt.Errorf("%s already exists", path), "pass --force to replace it")
	}
	return nil
}

// writeOutput writes a public file to path, or to stdout if path is "-".
// Unless force, it refuses to replace an existing file.
func writeOutput(e *env, path string, data []byte, force bool) error {
	if path == "-" {
		_, err := e.stdout.Write(data)
		return err
	}
	if err := checkOutput(path, force); err != nil {
		return err
	}
	err := writeFileAtomic(path, data, publicFileMode, force)
	if errors.Is(err, fs.ErrExist) { // created since checkOutput
		return checkOutput(path, force)
	}
	return err
}

// writeFileAtomic writes data to path so that path holds the old contents
// or the new ones, never a part: it writes a temporary file in the same
// directory, syncs it, then renames it over path (if replace) or hard-links
// it to path (which fails with fs.ErrExist if path exists), and syncs the
// directory. It refuses a symbolic link at path (a rename would replace
// it, not follow it, either way).
func writeFileAtomic(path string, data []byte, perm fs.FileMode, replace bool) (err error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return withHint(fmt.Errorf("%s is a symbolic link: ockam does not write through one", path), "name the file itself")
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil || !replace {
			os.Remove(tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // CreateTemp made it 0600
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path) // unlike rename, never replaces path
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.SyncDir(dir)
}
