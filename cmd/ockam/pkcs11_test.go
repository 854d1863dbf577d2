//go:build cgo

package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ockam-addons/telegraf-ockam/vault/pkcs11/softhsmtest"
)

// TestPKCS11Script runs testdata/pkcs11/*.txtar, each with its own SoftHSM2
// tokens "device" and "authority" in $WORK/softhsm. Scripts find
// $SOFTHSM2_CONF, $PKCS11_MODULE and $PIN_FILE in their environment.
func TestPKCS11Script(t *testing.T) {
	module := softhsmtest.Module(t)
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/pkcs11",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			dir := filepath.Join(env.WorkDir, "softhsm")
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			tk, err := softhsmtest.Init(module, dir, "", "device", "authority")
			if err != nil {
				return err
			}
			env.Setenv("SOFTHSM2_CONF", tk.Conf)
			env.Setenv("PKCS11_MODULE", tk.Module)
			env.Setenv("PIN_FILE", tk.PINFile)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exit":    cmdExit,
			"capture": cmdCapture,
		},
	})
}
