package vaults

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/vault"
)

func TestParseSpec(t *testing.T) {
	const secret = "s3cret-1234"
	tests := []struct {
		name string
		spec string
		want *spec // nil: an error
		text string
	}{
		{
			name: "minimal",
			spec: "pkcs11:module=/lib/m.so;token=ockam;pin-source=file:/etc/pin;dir=/var/v",
			want: &spec{module: "/lib/m.so", token: "ockam", pinSource: "file:/etc/pin", dir: "/var/v", labelPrefix: "ockam-"},
		},
		{
			name: "any order, label prefix",
			spec: "pkcs11:dir=/var/v;label-prefix=dev1-;pin-source=env:PIN;token=t 1;module=m.so",
			want: &spec{module: "m.so", token: "t 1", pinSource: "env:PIN", dir: "/var/v", labelPrefix: "dev1-"},
		},
		{name: "missing module", spec: "pkcs11:token=t;pin-source=env:P;dir=d", text: `"module" is required`},
		{name: "missing dir", spec: "pkcs11:module=m;token=t;pin-source=env:P", text: `"dir" is required`},
		{name: "missing pin source", spec: "pkcs11:module=m;token=t;dir=d", text: `"pin-source" is required`},
		{name: "empty", spec: "pkcs11:", text: "without '='"},
		{name: "trailing separator", spec: "pkcs11:module=m;token=t;pin-source=env:P;dir=d;", text: "without '='"},
		{name: "unknown", spec: "pkcs11:module=m;token=t;pin-source=env:P;dir=d;slot=" + secret, text: `unknown parameter "slot"`},
		{name: "twice", spec: "pkcs11:module=m;token=t;token=u;pin-source=env:P;dir=d", text: `"token" given twice`},
		{name: "empty value", spec: "pkcs11:module=;token=t;pin-source=env:P;dir=d", text: `"module" is empty`},
		{name: "pin-value", spec: "pkcs11:module=m;token=t;pin-value=" + secret + ";dir=d", text: "must not be written in the spec"},
		{name: "pin", spec: "pkcs11:module=m;token=t;pin=" + secret + ";dir=d", text: "must not be written in the spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSpec(tt.spec)
			if tt.want != nil {
				require.NoError(t, err)
				require.Equal(t, tt.want, got)
				return
			}
			require.ErrorContains(t, err, tt.text)
			require.NotContains(t, err.Error(), secret, "errors never echo values")
		})
	}
}

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(data), mode))
		require.NoError(t, os.Chmod(p, mode))
		return p
	}
	t.Setenv("OCKAM_TEST_PIN", "from-env")
	tests := []struct {
		source string
		want   string // "" for an error
		text   string
	}{
		{"file:" + write("plain", "1234", 0o600), "1234", ""},
		{"file:" + write("newline", "1234\n", 0o600), "1234", ""},
		{"file:" + write("crlf", "1234\r\n", 0o400), "1234", ""},
		{"file:" + write("two-newlines", "1234\n\n", 0o600), "1234\n", ""},
		{"file:" + write("empty", "\n", 0o600), "", "is empty"},
		{"file:" + write("readable", "1234", 0o640), "", "UNPROTECTED PIN FILE"},
		{"file:" + write("large", string(make([]byte, maxPINFile+1)), 0o600), "", "larger than"},
		{"file:" + filepath.Join(dir, "missing"), "", "no such file"},
		{"file:" + dir, "", "not a regular file"},
		{"env:OCKAM_TEST_PIN", "from-env", ""},
		{"env:OCKAM_TEST_PIN_UNSET", "", "unset or empty"},
		{"1234", "", "must be file:PATH or env:NAME"},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			pin, err := readPIN(tt.source)
			if tt.want == "" {
				require.ErrorContains(t, err, tt.text)
				require.NotErrorIs(t, err, fs.ErrNotExist, "a missing PIN file is not a missing vault")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, string(pin))
		})
	}
}

// TestOpenDirectory: a spec that is not pkcs11: is a file vault, as
// vault.OpenFile opens it.
func TestOpenDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vault")
	_, err := OpenExisting(dir, nil)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, fs.ErrNotExist, "OpenExisting creates nothing")

	v, err := Open(dir, []byte("pass"))
	require.NoError(t, err)
	require.IsType(t, &vault.File{}, v)
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	v, err = OpenExisting(dir, nil)
	require.NoError(t, err)
	require.IsType(t, &vault.File{}, v)

	require.NoError(t, os.Chmod(dir, 0o750))
	v, err = OpenExisting(dir, nil)
	require.ErrorContains(t, err, "UNPROTECTED VAULT DIRECTORY")
	require.Nil(t, v, "no typed nil")
}

func TestOpenPKCS11Errors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vault")
	spec := "pkcs11:module=/nonexistent/lib.so;token=t;pin-source=env:OCKAM_TEST_PIN;dir=" + dir
	_, err := OpenExisting(spec, nil)
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = Open(spec, nil)
	require.ErrorContains(t, err, "OCKAM_TEST_PIN is unset")
	_, err = Open("pkcs11:module=m", nil)
	require.ErrorContains(t, err, `"token" is required`)
	require.True(t, IsPKCS11(spec))
	require.False(t, IsPKCS11(dir))
}
