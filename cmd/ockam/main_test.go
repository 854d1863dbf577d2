package main

import (
	"bytes"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary run as "ockam" inside the scripts.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"ockam": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// TestScript runs testdata/script/*.txtar. Besides the standard commands,
// scripts may use:
//
//	exit N CMD [ARGS...]   run CMD and require exit code N
//	capture VAR            set $VAR to the last stdout, trimmed
//	mode FILE PERM         require FILE's permission bits to be PERM (octal)
//	flipsig FILE           flip a bit of the signature of the PEM file FILE
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exit":    cmdExit,
			"capture": cmdCapture,
			"mode":    cmdMode,
			"flipsig": cmdFlipSig,
		},
	})
}

// cmdExit runs a command and checks its exit code, which "exec" cannot.
func cmdExit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exit N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	got := 0
	var exitErr *exec.ExitError
	if err := ts.Exec(args[1], args[2:]...); errors.As(err, &exitErr) {
		got = exitErr.ExitCode()
	} else if err != nil {
		ts.Fatalf("%v", err)
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// cmdCapture sets an environment variable to the last command's stdout.
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: capture VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

// cmdMode checks the permission bits of a file.
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mode FILE PERM")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	if got := fi.Mode().Perm(); uint64(got) != want {
		ts.Fatalf("%s has mode %04o, want %04o", args[0], got, want)
	}
}

// cmdFlipSig flips the last bit of the PEM block in a file: the last byte
// of every signed encoding is part of its signature.
func cmdFlipSig(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: flipsig FILE")
	}
	path := ts.MkAbs(args[0])
	b, err := os.ReadFile(path)
	ts.Check(err)
	block, _ := pem.Decode(b)
	if block == nil {
		ts.Fatalf("%s: no PEM block", args[0])
	}
	block.Bytes[len(block.Bytes)-1] ^= 1
	ts.Check(os.WriteFile(path, pem.EncodeToMemory(block), 0o644))
}

// TestUsageNamesEveryFlag checks that each command's --help text documents
// each of its flags, and that "--help" prints it on stdout with exit 0.
func TestUsageNamesEveryFlag(t *testing.T) {
	var walk func(c *command, path []string)
	walk = func(c *command, path []string) {
		path = append(path, c.name)
		for _, s := range c.subs {
			walk(s, path)
		}
		if c.flags == nil {
			return
		}
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		c.flags(fs)
		fs.VisitAll(func(f *flag.Flag) {
			if !strings.Contains(c.usage, "--"+f.Name) {
				t.Errorf("%s: usage does not mention --%s", strings.Join(path, " "), f.Name)
			}
		})
		var stdout, stderr bytes.Buffer
		if code := run(append(path[1:], "--help"), &stdout, &stderr); code != exitOK || stdout.String() != c.usage || stderr.Len() != 0 {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", strings.Join(path, " "), code, stdout.String(), stderr.String())
		}
	}
	walk(root(), nil)
}

func TestParseTTL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"720h", 720 * time.Hour},
		{"30d", 30 * 24 * time.Hour},
		{"1d", 24 * time.Hour},
		{"90m", 90 * time.Minute},
		{"1s", time.Second},
		{"1h30m", 90 * time.Minute},
	} {
		got, err := parseTTL(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseTTL(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "0", "0s", "-1h", "0d", "-2d", "d", "1.5d", "30 d", "1e3d", "999999999999d", "forever"} {
		if got, err := parseTTL(in); err == nil {
			t.Errorf("parseTTL(%q) = %v, want an error", in, got)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // positional args, then the flags
	}{
		{[]string{"a", "--x", "1", "b"}, "[a b] x=1"},
		{[]string{"--x=1", "a"}, "[a] x=1"},
		{[]string{"a", "--", "--x", "b"}, "[a --x b] x="},
		{[]string{"-", "--x", "2"}, "[-] x=2"},
		{nil, "[] x="},
	} {
		fs := flag.NewFlagSet("", flag.ContinueOnError)
		x := fs.String("x", "", "")
		pos, err := parseInterspersed(fs, tc.args)
		if got := fmt.Sprintf("%v x=%s", pos, *x); err != nil || got != tc.want {
			t.Errorf("parseInterspersed(%q) = %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

func TestPassphraseFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ file, want string }{
		{"p\n", "p"},
		{"p\r\n", "p"},
		{"p", "p"},
		{"p\n\n", "p\n"},
		{"p\r", "p\r"},
		{" two words \n", " two words "},
	} {
		path := filepath.Join(dir, "pass")
		if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
			t.Fatal(err)
		}
		vf := vaultFlags{passphraseFile: path}
		got, err := vf.passphrase(&env{getenv: func(string) string { return "from env" }})
		if err != nil || string(got) != tc.want {
			t.Errorf("passphrase file %q: got %q, %v; want %q", tc.file, got, err, tc.want)
		}
		os.Remove(path)
	}
}
