// Command ockam manages the identities, credentials and revocation lists of
// telegraf-ockam: it creates identities in vaults, exports their public
// identity files, issues and verifies credentials, signs revocation
// lists, and signs control instructions to devices. The file formats are
// specified in docs/PROTOCOL.md.
//
// Usage:
//
//	ockam <command> <subcommand> [flags] [args]
//
// Run "ockam --help" for the list of commands. Exit codes: 0 success, 1
// failure (including a credential that does not verify), 2 usage error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/version"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed, or a check did not pass
	exitUsage   = 2 // unknown command or flag, missing flag, stray argument
)

// testNowEnv names the environment variable that, when set to an RFC 3339
// time, replaces the clock. It is for tests only (so that expiry can be
// tested without sleeping) and is deliberately left out of every usage text.
const testNowEnv = "OCKAM_TEST_NOW"

// main runs the command line and exits with its code.
func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args (without the program name), writing to
// stdout and stderr, and returns the exit code. It reads the environment
// with os.Getenv and never calls os.Exit, so tests can call it in-process.
func run(args []string, stdout, stderr io.Writer) int {
	e := &env{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	path, err := dispatch(e, root(), args)
	return e.report(path, err)
}

// env is what a command may use of the outside world besides files.
type env struct {
	stdin          io.Reader // nil: empty
	stdout, stderr io.Writer
	getenv         func(string) string
}

// now returns the current time, or the time in OCKAM_TEST_NOW if set.
func (e *env) now() (time.Time, error) {
	s := e.getenv(testNowEnv)
	if s == "" {
		return time.Now(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", testNowEnv, err)
	}
	return t, nil
}

// warnf prints "ockam: warning: …" on stderr.
func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "ockam: warning: "+format+"\n", args...)
}

// notef prints "ockam: note: …" on stderr.
func (e *env) notef(format string, args ...any) {
	fmt.Fprintf(e.stderr, "ockam: note: "+format+"\n", args...)
}

// report prints err, if any, for the command at path, and returns the exit
// code: usage goes to stdout for a help request, errors go to stderr as
// "ockam: error: …" followed by any "ockam: hint: …" lines.
func (e *env) report(path []string, err error) int {
	var usage *usageError
	var hinted *hintError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK // dispatch printed the usage
	case errors.As(err, &usage):
		fmt.Fprintf(e.stderr, "ockam: error: %s\n", usage.msg)
		fmt.Fprintf(e.stderr, "ockam: hint: run '%s --help' for usage\n", strings.Join(path, " "))
		return exitUsage
	case errors.As(err, &hinted):
		fmt.Fprintf(e.stderr, "ockam: error: %v\n", hinted.err)
		for _, h := range hinted.hints {
			fmt.Fprintf(e.stderr, "ockam: hint: %s\n", h)
		}
		return exitFailure
	default:
		fmt.Fprintf(e.stderr, "ockam: error: %v\n", err)
		return exitFailure
	}
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

// Error returns the message.
func (u *usageError) Error() string { return u.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// hintError is a failure with advice on what to do about it.
type hintError struct {
	err   error
	hints []string
}

// Error returns the message of the error, without the hints.
func (h *hintError) Error() string { return h.err.Error() }

// Unwrap returns the error, for errors.Is.
func (h *hintError) Unwrap() error { return h.err }

// withHint attaches hints to err; a nil err stays nil.
func withHint(err error, hints ...string) error {
	if err == nil {
		return nil
	}
	return &hintError{err: err, hints: hints}
}

// command is a node of the command tree: a group of subcommands, or a leaf
// whose flags define registers on a flag set and returns the action to run.
type command struct {
	name    string
	summary string // one line, for the parent's usage
	usage   string // the whole --help text of a leaf
	subs    []*command
	flags   func(fs *flag.FlagSet) action
}

// action runs a leaf command with its positional arguments, after its flags
// were parsed.
type action func(e *env, args []string) error

// root returns the command tree.
func root() *command {
	return &command{name: "ockam", subs: []*command{
		identityCommand(),
		credentialCommand(),
		revocationCommand(),
		purposeKeyCommand(),
		enrollCommand(),
		authorityCommand(),
		inletCommand(),
		relayCommand(),
		controlCommand(),
		{name: "version", summary: "print the version of ockam", usage: versionUsage, flags: versionFlags},
	}}
}

// dispatch finds the command named by args under c and runs it. It returns
// the path of the command it reached, for the usage hint.
func dispatch(e *env, c *command, args []string) ([]string, error) {
	path := []string{c.name}
	// A leaf may have subcommands too ("ockam enroll"): a name of one of
	// them selects it, anything else is the leaf's flags.
	for c.flags == nil || len(args) > 0 && c.sub(args[0]) != nil {
		if len(args) == 0 {
			printGroupUsage(e.stderr, c, path)
			return path, usagef("missing command")
		}
		name := args[0]
		switch {
		case name == "-h" || name == "--help" || name == "-help":
			printGroupUsage(e.stdout, c, path)
			return path, flag.ErrHelp
		case name == "help": // "ockam help credential issue" is "ockam credential issue --help"
			args = append(slices.Clone(args[1:]), "--help")
			continue
		case name == "--version" && len(path) == 1:
			name = "version"
		}
		sub := c.sub(name)
		if sub == nil {
			return path, usagef("unknown command %q", strings.Join(append(path[1:], name), " "))
		}
		c, args = sub, args[1:]
		path = append(path, c.name)
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	act := c.flags(fs)
	positional, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(e.stdout, c.usage)
		return path, err
	}
	if err != nil {
		return path, &usageError{msg: flagMessage(err)}
	}
	return path, act(e, positional)
}

// flagErrors rewrite the errors of package flag, which name flags with one
// dash, to name them as the usage texts do.
var flagErrors = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`^flag provided but not defined: -+(.*)$`), "unknown flag --$1"},
	{regexp.MustCompile(`^flag needs an argument: -+(.*)$`), "flag --$1 needs a value"},
	{regexp.MustCompile(`^invalid value (".*") for flag -([\w-]+): `), "invalid --$2 $1: "},
	{regexp.MustCompile(`^invalid boolean value (".*") for -([\w-]+): `), "invalid --$2 $1: "},
}

// flagMessage returns the message of a flag parsing error.
func flagMessage(err error) string {
	msg := err.Error()
	for _, f := range flagErrors {
		if f.re.MatchString(msg) {
			return f.re.ReplaceAllString(msg, f.repl)
		}
	}
	return msg
}

// sub returns the subcommand of c called name, or nil.
func (c *command) sub(name string) *command {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments, which it returns. "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// printGroupUsage prints the usage of a group: its leaves, one a line.
func printGroupUsage(w io.Writer, c *command, path []string) {
	prefix := strings.Join(path, " ")
	fmt.Fprintf(w, "Usage: %s <command> [flags] [args]\n\n", prefix)
	if c.name == "ockam" {
		fmt.Fprint(w, "Identities, credentials and revocation lists for telegraf-ockam.\n\n")
	}
	fmt.Fprint(w, "Commands:\n")
	var walk func(c *command, name string)
	walk = func(c *command, name string) {
		if c.flags != nil {
			fmt.Fprintf(w, "  %-20s %s\n", name, c.summary)
		}
		for _, s := range c.subs {
			walk(s, strings.TrimSpace(name+" "+s.name))
		}
	}
	walk(c, "")
	if c.name == "ockam" {
		fmt.Fprint(w, "\n"+passphraseHelp)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for the flags of a command.\n", prefix)
}

// passphraseHelp is shown in the top-level usage.
const passphraseHelp = `Vault keys are encrypted with the passphrase in OCKAM_VAULT_PASSPHRASE, or in
the file named by --passphrase-file, when one is set; otherwise they are
stored unencrypted.

A --vault of the form
  pkcs11:module=LIBRARY;token=LABEL;pin-source=file:PATH;dir=DIR
keeps the identity key in a PKCS#11 token (an HSM), where it is generated
and never leaves, and the purpose keys in DIR. pin-source may also be
env:NAME. See docs/CONCEPTS.md, "Vault backends".
`

// versionUsage is the --help text of "ockam version".
const versionUsage = `Usage: ockam version

Prints the version of ockam and of the Go toolchain that built it.
`

// versionFlags defines "ockam version", which takes no flags.
func versionFlags(*flag.FlagSet) action {
	return func(e *env, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, version.Line("ockam", runtime.Version()))
		return nil
	}
}
