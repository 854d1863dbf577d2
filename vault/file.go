package vault

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// MaxRecordSize is the largest record WriteRecord stores and ReadRecord
// reads (1 MiB). Records are small; the bound keeps a stray large file in the
// vault directory from being read into memory.
const MaxRecordSize = 1 << 20

var (
	errUnprotected = errors.New("group or others have access")
	errWrongKind   = errors.New("wrong key kind")
	errTooLarge    = errors.New("record too large")
)

// File is a Vault kept in a directory: key "name" in "name.key" (see
// keyfile.go and docs/PROTOCOL.md, "Vault files") and record "name" in
// "name.rec". Every file is written 0600 to a temporary file in the same
// directory, synced and then renamed (records) or hard-linked (keys, so that
// an existing key is never replaced), and the directory is synced: a crash
// leaves the old file or the new one, never half of one. A crash can leave a
// complete temporary file ".name.key.*.tmp", which is safe to delete.
//
// With a passphrase, loading a key runs scrypt (about 0.1s); callers load each
// key once and keep the Signer or DH. File is safe for concurrent use, by
// several processes too.
type File struct {
	dir        string
	passphrase []byte
	logN       byte // scrypt cost for new keys; tests lower it
}

var _ Vault = (*File)(nil)

// OpenFile opens the vault in dir, creating it with mode 0700 if missing. It
// refuses a dir that group or others can access, and later refuses key files
// that they can access, as ssh refuses an unprotected private key.
//
// With an empty passphrase keys are stored in the clear, and reading an
// encrypted key fails with ErrPassphrase. With a passphrase (which OpenFile
// copies) new keys are encrypted, and reading a key stored in the clear fails:
// a vault is all encrypted or all plain.
func OpenFile(dir string, passphrase []byte) (*File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("vault: %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("vault: UNPROTECTED VAULT DIRECTORY %s: %w (mode %04o); run: chmod 700 %s",
			dir, errUnprotected, uint32(perm), dir)
	}
	return &File{dir: dir, passphrase: append([]byte(nil), passphrase...), logN: defaultLogN}, nil
}

// GenerateSigner creates a new Ed25519 key and stores it in name.key.
func (v *File) GenerateSigner(name string) (Signer, error) {
	var seed [keySize]byte
	defer clear(seed[:])
	rand.Read(seed[:]) // never fails (Go 1.24+)
	if err := v.storeKey(name, kindEd25519, &seed); err != nil {
		return nil, err
	}
	return NewSignerFromSeed(seed), nil
}

// Signer loads the Ed25519 key in name.key.
func (v *File) Signer(name string) (Signer, error) {
	seed, err := v.loadKey(name, kindEd25519)
	defer clear(seed[:])
	if err != nil {
		return nil, err
	}
	return NewSignerFromSeed(seed), nil
}

// GenerateDH creates a new X25519 key and stores it in name.key.
func (v *File) GenerateDH(name string) (DH, error) {
	var scalar [keySize]byte
	defer clear(scalar[:])
	rand.Read(scalar[:])
	if err := v.storeKey(name, kindX25519, &scalar); err != nil {
		return nil, err
	}
	return NewDHFromScalar(scalar), nil
}

// DH loads the X25519 key in name.key.
func (v *File) DH(name string) (DH, error) {
	scalar, err := v.loadKey(name, kindX25519)
	defer clear(scalar[:])
	if err != nil {
		return nil, err
	}
	return NewDHFromScalar(scalar), nil
}

// DeleteKey removes name.key.
func (v *File) DeleteKey(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	path := v.path(name, ".key")
	if err := os.Remove(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, path)
	} else if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	return syncDir(v.dir)
}

// WriteRecord atomically replaces name.rec with data.
func (v *File) WriteRecord(name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	if len(data) > MaxRecordSize {
		return fmt.Errorf("vault: %w: %q is %d bytes, the limit is %d", errTooLarge, name, len(data), MaxRecordSize)
	}
	return writeAtomic(v.dir, name+".rec", data, true)
}

// ReadRecord returns the contents of name.rec.
func (v *File) ReadRecord(name string) ([]byte, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	path := v.path(name, ".rec")
	b, err := readFile(path, MaxRecordSize, false)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("vault: %w: %s is larger than %d bytes", errTooLarge, path, MaxRecordSize)
	}
	return b, nil
}

func (v *File) path(name, ext string) string { return filepath.Join(v.dir, name+ext) }

// storeKey writes a new key file for key, failing with ErrExists if name.key
// exists.
func (v *File) storeKey(name string, kind byte, key *[keySize]byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	path := v.path(name, ".key")
	// Fail before paying for scrypt; the link in writeAtomic is the real check.
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	kf := newKeyFile(kind, key, v.passphrase, v.logN)
	b := kf.marshal()
	defer clear(b)
	clear(kf.key[:])
	err := writeAtomic(v.dir, name+".key", b, false)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	return err
}

// loadKey reads, checks and opens name.key, which must hold a key of kind.
func (v *File) loadKey(name string, kind byte) (key [keySize]byte, err error) {
	if err := checkName(name); err != nil {
		return key, err
	}
	path := v.path(name, ".key")
	b, err := readFile(path, sealedFileSize, true)
	defer clear(b)
	if err != nil {
		return key, err
	}
	kf, err := parseKeyFile(b)
	if err != nil {
		return key, fmt.Errorf("vault: %s: %w", path, err)
	}
	defer clear(kf.key[:])
	if kf.kind != kind {
		return key, fmt.Errorf("vault: %s: %w: it holds an %s key, not %s",
			path, errWrongKind, kindName(kf.kind), kindName(kind))
	}
	key, err = kf.open(v.passphrase)
	switch {
	case err == nil:
		return key, nil
	case errors.Is(err, errNotEncrypted):
		return key, fmt.Errorf("vault: %s: %w; unset the passphrase to use this key", path, err)
	case len(v.passphrase) == 0:
		return key, fmt.Errorf("%w: %s is encrypted and no passphrase is set; "+
			"set OCKAM_VAULT_PASSPHRASE or the plugin's vault_passphrase", err, path)
	default:
		return key, fmt.Errorf("%w: cannot decrypt %s (wrong passphrase, or the file was modified); "+
			"check OCKAM_VAULT_PASSPHRASE or the plugin's vault_passphrase", err, path)
	}
}

func kindName(kind byte) string {
	if kind == kindEd25519 {
		return "Ed25519"
	}
	return "X25519"
}

// readFile reads at most max+1 bytes of the regular file at path, so that
// the caller can tell a file over max. If secret, it refuses a file that
// group or others can access.
func readFile(path string, max int64, secret bool) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	} else if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("vault: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); secret && perm&0o077 != 0 {
		return nil, fmt.Errorf("vault: UNPROTECTED PRIVATE KEY FILE %s: %w (mode %04o); run: chmod 600 %s",
			path, errUnprotected, uint32(perm), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("vault: read %s: %w", path, err)
	}
	return b, nil
}

// writeAtomic writes data to dir/base through a temporary file created with
// O_EXCL and mode 0600 in dir, so that the file appears whole or not at all.
// If replace, it renames the temporary file over dir/base; otherwise it
// hard-links it, which fails (with an error wrapping fs.ErrExist) if dir/base
// exists, and removes the temporary name. Then it syncs dir.
func writeAtomic(dir, base string, data []byte, replace bool) error {
	final := filepath.Join(dir, base)
	// Names never start with a dot, so this never collides with a key or record.
	f, err := os.CreateTemp(dir, "."+base+".*.tmp") // O_RDWR|O_CREATE|O_EXCL, 0600
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	switch {
	case err != nil:
	case replace:
		err = os.Rename(tmp, final)
	default:
		err = os.Link(tmp, final) // unlike rename, never replaces final
	}
	if err != nil || !replace {
		if rerr := os.Remove(tmp); err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("vault: write %s: %w", final, err)
	}
	return syncDir(dir)
}

// syncDir makes the directory entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("vault: sync %s: %w", dir, err)
	}
	return nil
}
