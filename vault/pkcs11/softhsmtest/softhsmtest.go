//go:build cgo

// Package softhsmtest makes throwaway SoftHSM2 tokens for the tests of the
// pkcs11 vault and of what uses it. It installs nothing: `make test` (the
// Makefile's tools target) installs SoftHSM2 and sets OCKAM_PKCS11_MODULE.
package softhsmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"
)

// ModuleEnv names the environment variable that holds the path of the
// SoftHSM2 module (/usr/lib/softhsm/libsofthsm2.so on Debian).
const ModuleEnv = "OCKAM_PKCS11_MODULE"

// Credentials of every token New makes.
const (
	PIN   = "ockam-test-pin"
	SOPIN = "ockam-test-so-pin"
)

// Module returns the module in OCKAM_PKCS11_MODULE. Without it the test is
// skipped, unless OCKAM_E2E=1 (set by make test), where the SoftHSM tests
// must run: then it fails.
func Module(t testing.TB) string {
	t.Helper()
	m := os.Getenv(ModuleEnv)
	if m == "" {
		if os.Getenv("OCKAM_E2E") == "1" {
			t.Fatalf("OCKAM_E2E=1 but %s is not set: make test sets it after installing softhsm2", ModuleEnv)
		}
		t.Skipf("PKCS#11 test skipped: install softhsm2 and set %s=/usr/lib/softhsm/libsofthsm2.so to run it "+
			"(make test does both)", ModuleEnv)
	}
	if _, err := os.Stat(m); err != nil {
		t.Fatalf("%s: %v", ModuleEnv, err)
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Fatalf("%s is set but softhsm2-util is not in PATH (install softhsm2): %v", ModuleEnv, err)
	}
	return m
}

// Tokens is a SoftHSM2 configuration in a temporary directory, with its
// own token directory and initialised tokens.
type Tokens struct {
	Module  string
	Conf    string // the SOFTHSM2_CONF file
	PINFile string // holds PIN, mode 0600
}

// New initialises one token per label (user PIN PIN, security officer PIN
// SOPIN) in a new SoftHSM2 configuration, and sets SOFTHSM2_CONF to it for
// the rest of the test, so the test must not be parallel. mechanisms, if
// not empty, is SoftHSM's slots.mechanisms setting: the mechanisms the
// tokens offer. Processes the test starts inherit SOFTHSM2_CONF.
//
// SoftHSM reads its configuration and finds tokens when the module is
// initialised, so open nothing before New, and close every pkcs11 vault a
// test opened before the next test calls New.
func New(t testing.TB, mechanisms string, labels ...string) *Tokens {
	t.Helper()
	module := Module(t)
	// Not t.TempDir: its name comes from the test's, and SoftHSM's
	// configuration parser cuts a value at the first '='.
	dir, err := os.MkdirTemp("", "softhsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tk, err := Init(module, dir, mechanisms, labels...)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tk.Conf)
	return tk
}

// Init is New for a caller that manages the environment itself: it makes
// the configuration, the PIN file and the tokens in dir (which must exist
// and have no '=' in its path) and sets nothing. Pass SOFTHSM2_CONF=Conf to
// the processes that use the tokens.
func Init(module, dir, mechanisms string, labels ...string) (*Tokens, error) {
	if strings.Contains(dir, "=") {
		return nil, fmt.Errorf("softhsmtest: SoftHSM cannot use a directory with '=' in its path: %s", dir)
	}
	tk := &Tokens{Module: module, Conf: filepath.Join(dir, "softhsm2.conf"), PINFile: filepath.Join(dir, "pin")}
	tokenDir := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokenDir, 0o700); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokenDir)
	if mechanisms != "" {
		conf += "slots.mechanisms = " + mechanisms + "\n"
	}
	for path, data := range map[string]string{tk.Conf: conf, tk.PINFile: PIN + "\n"} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			return nil, err
		}
	}
	for _, label := range labels {
		cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SOPIN, "--pin", PIN)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+tk.Conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("softhsm2-util --init-token --label %s: %v\n%s", label, err, out)
		}
	}
	return tk, nil
}

// Spec returns the vault spec of token, with purpose keys and records in
// dir and the PIN read from PINFile.
func (tk *Tokens) Spec(token, dir string) string {
	return fmt.Sprintf("pkcs11:module=%s;token=%s;pin-source=file:%s;dir=%s", tk.Module, token, tk.PINFile, dir)
}

// KeyAttributes are the attributes of a private key object that decide
// whether it can leave the token.
type KeyAttributes struct {
	Sensitive, AlwaysSensitive, Extractable, NeverExtractable bool
	// ValueErr is what reading CKA_VALUE, the private key itself, returned.
	ValueErr error
}

// PrivateKey reads, with the binding directly rather than through package
// pkcs11, the attributes of the private key labelled label in token, and
// tries to read its value. It logs in with PIN.
func (tk *Tokens) PrivateKey(t testing.TB, token, label string) KeyAttributes {
	t.Helper()
	ctx := p11.New(tk.Module) // never Destroyed: unloading the module is not safe
	if ctx == nil {
		t.Fatalf("cannot load %s", tk.Module)
	}
	err := ctx.Initialize()
	if ours := err == nil; ours {
		defer ctx.Finalize()
	} else if !isRV(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		t.Fatalf("C_Initialize: %v", err)
	}
	h := openSession(t, ctx, token)
	defer ctx.CloseSession(h)
	if err := ctx.Login(h, p11.CKU_USER, PIN); err != nil && !isRV(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		t.Fatalf("C_Login: %v", err)
	}
	template := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	if err := ctx.FindObjectsInit(h, template); err != nil {
		t.Fatal(err)
	}
	found, _, err := ctx.FindObjects(h, 2)
	ctx.FindObjectsFinal(h)
	if err != nil || len(found) != 1 {
		t.Fatalf("private key %q in token %q: found %d objects, err %v", label, token, len(found), err)
	}
	attrs, err := ctx.GetAttributeValue(h, found[0], []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_ALWAYS_SENSITIVE, nil),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, nil),
		p11.NewAttribute(p11.CKA_NEVER_EXTRACTABLE, nil),
	})
	if err != nil {
		t.Fatalf("C_GetAttributeValue: %v", err)
	}
	isTrue := func(a *p11.Attribute) bool { return len(a.Value) == 1 && a.Value[0] == 1 }
	k := KeyAttributes{
		Sensitive: isTrue(attrs[0]), AlwaysSensitive: isTrue(attrs[1]),
		Extractable: isTrue(attrs[2]), NeverExtractable: isTrue(attrs[3]),
	}
	_, k.ValueErr = ctx.GetAttributeValue(h, found[0], []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
	return k
}

// ValueIsSensitive reports whether reading CKA_VALUE failed because the
// attribute is sensitive (CKR_ATTRIBUTE_SENSITIVE).
func (k KeyAttributes) ValueIsSensitive() bool { return isRV(k.ValueErr, p11.CKR_ATTRIBUTE_SENSITIVE) }

// openSession opens a read-only session on the token labelled label.
func openSession(t testing.TB, ctx *p11.Ctx, label string) p11.SessionHandle {
	t.Helper()
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		if info, err := ctx.GetTokenInfo(slot); err == nil && info.Label == label {
			h, err := ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION)
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
	}
	t.Fatalf("no token labelled %q", label)
	return 0
}

func isRV(err error, rv uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == rv
}
