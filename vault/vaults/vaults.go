// Package vaults opens a vault from the string that names it in a
// configuration (vault_path) or on a command line (--vault): a directory
// path opens a file vault (vault.OpenFile); a "pkcs11:" spec opens a
// pkcs11.Vault, whose identity key is in a PKCS#11 token and whose purpose
// keys and records are in a directory. docs/CONCEPTS.md, "Vault backends",
// documents the spec for operators.
package vaults

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/ockam-addons/telegraf-ockam/vault"
	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11"
)

// Open opens the vault that spec names, creating its directory (mode 0700)
// if it is missing. passphrase encrypts the keys kept in the directory, as
// for vault.OpenFile; Open does not keep it.
//
// A spec without the "pkcs11:" prefix is a directory, and Open is
// vault.OpenFile. A pkcs11 spec is
//
//	pkcs11:module=PATH;token=LABEL;pin-source=SOURCE;dir=PATH[;label-prefix=PREFIX]
//
// with the parameters in any order, each once: module is the PKCS#11
// library; token the token's label; pin-source "file:PATH" (a file
// readable by its owner only; one trailing newline is ignored) or
// "env:NAME" (an environment variable); dir the directory of the purpose
// keys and records; label-prefix starts the labels of the token's keys
// (default pkcs11.DefaultLabelPrefix). A value cannot contain ';'. The PIN
// itself never appears in a spec, nor in an error. Errors of the token wrap
// the pkcs11 sentinels (pkcs11.ErrModule, ErrTokenNotFound, ErrPIN,
// ErrNoEdDSA).
//
// The vault a pkcs11 spec opens holds a logged-in token session; it
// implements io.Closer, and closing it logs out once nothing else in the
// process uses the token.
func Open(spec string, passphrase []byte) (vault.Vault, error) {
	return open(spec, passphrase, true)
}

// OpenExisting is Open for a vault that must already exist: if its
// directory is missing, it returns an error wrapping fs.ErrNotExist instead
// of creating an empty vault. No other error it returns wraps
// fs.ErrNotExist.
func OpenExisting(spec string, passphrase []byte) (vault.Vault, error) {
	return open(spec, passphrase, false)
}

// IsPKCS11 reports whether spec names a pkcs11 vault rather than a
// directory.
func IsPKCS11(spec string) bool { return strings.HasPrefix(spec, scheme) }

const scheme = "pkcs11:"

func open(spec string, passphrase []byte, create bool) (vault.Vault, error) {
	if !IsPKCS11(spec) {
		if err := checkDir(spec, create); err != nil {
			return nil, err
		}
		v, err := vault.OpenFile(spec, passphrase)
		if err != nil {
			return nil, err // not a typed nil
		}
		return v, nil
	}
	p, err := parseSpec(spec)
	if err != nil {
		return nil, err
	}
	if err := checkDir(p.dir, create); err != nil {
		return nil, err
	}
	files, err := vault.OpenFile(p.dir, passphrase) // cheap checks before loading a library
	if err != nil {
		return nil, err
	}
	pin, err := readPIN(p.pinSource)
	defer clear(pin)
	if err != nil {
		return nil, err
	}
	token, err := pkcs11.OpenToken(p.module, p.token, pin)
	if err != nil {
		return nil, err
	}
	return pkcs11.NewVault(token, p.labelPrefix, files), nil
}

// checkDir returns an error wrapping fs.ErrNotExist if dir is missing and
// may not be created.
func checkDir(dir string, create bool) error {
	if create {
		return nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vault: no vault directory %s: %w", dir, fs.ErrNotExist)
	}
	return nil // OpenFile reports any other problem
}

// spec is a parsed pkcs11 spec.
type spec struct {
	module, token, pinSource, dir, labelPrefix string
}

// parseSpec parses a pkcs11 spec strictly: every parameter known, given
// once, with a value. Errors name parameters, never values, so that a PIN
// written into a spec by mistake is not echoed.
func parseSpec(s string) (*spec, error) {
	p := &spec{labelPrefix: pkcs11.DefaultLabelPrefix}
	fields := map[string]*string{
		"module": &p.module, "token": &p.token, "pin-source": &p.pinSource, "dir": &p.dir,
		"label-prefix": &p.labelPrefix,
	}
	seen := map[string]bool{}
	for _, param := range strings.Split(strings.TrimPrefix(s, scheme), ";") {
		key, value, ok := strings.Cut(param, "=")
		field, known := fields[key]
		switch {
		case !ok:
			return nil, fmt.Errorf("vault spec: want key=value parameters separated by ';', got a parameter without '='")
		case key == "pin" || key == "pin-value":
			return nil, errors.New("vault spec: the PIN must not be written in the spec; use pin-source=file:PATH or pin-source=env:NAME")
		case !known:
			return nil, fmt.Errorf("vault spec: unknown parameter %q (known: module, token, pin-source, dir, label-prefix)", key)
		case seen[key]:
			return nil, fmt.Errorf("vault spec: parameter %q given twice", key)
		case value == "":
			return nil, fmt.Errorf("vault spec: parameter %q is empty", key)
		}
		seen[key] = true
		*field = value
	}
	for _, key := range []string{"module", "token", "pin-source", "dir"} {
		if !seen[key] {
			return nil, fmt.Errorf("vault spec: parameter %q is required "+
				"(pkcs11:module=PATH;token=LABEL;pin-source=file:PATH;dir=PATH)", key)
		}
	}
	return p, nil
}

// maxPINFile bounds the PIN file: PINs are short.
const maxPINFile = 1 << 10

// readPIN returns the PIN that source names: "file:PATH" or "env:NAME".
func readPIN(source string) ([]byte, error) {
	kind, arg, _ := strings.Cut(source, ":")
	var pin []byte
	switch kind {
	case "file":
		b, err := readPINFile(arg)
		if err != nil {
			return nil, err
		}
		pin = b
	case "env":
		pin = []byte(os.Getenv(arg))
		if len(pin) == 0 {
			return nil, fmt.Errorf("vault spec: pin-source: environment variable %s is unset or empty", arg)
		}
	default:
		return nil, errors.New("vault spec: pin-source must be file:PATH or env:NAME")
	}
	return pin, nil
}

// readPINFile reads a PIN file, refusing one that group or others can
// access, and drops one trailing newline.
func readPINFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vault spec: pin-source: %v", err) // %v: not the vault that is missing
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("vault spec: pin-source: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("vault spec: pin-source: %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("vault spec: UNPROTECTED PIN FILE %s (mode %04o); run: chmod 600 %s", path, uint32(perm), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPINFile+1))
	if err != nil {
		return nil, fmt.Errorf("vault spec: pin-source: %v", err)
	}
	if len(b) > maxPINFile {
		clear(b)
		return nil, fmt.Errorf("vault spec: pin-source: %s is larger than %d bytes", path, maxPINFile)
	}
	if n := len(b); bytes.HasSuffix(b, []byte("\r\n")) {
		b = b[:n-2]
	} else if bytes.HasSuffix(b, []byte("\n")) {
		b = b[:n-1]
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("vault spec: pin-source: %s is empty", path)
	}
	return b, nil
}
