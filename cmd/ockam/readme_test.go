package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readmePath is the README whose quick start TestREADMEQuickstart runs.
const readmePath = "../../README.md"

// Markers around the quick start block in the README.
const (
	quickstartBegin = "<!-- quickstart:begin -->"
	quickstartEnd   = "<!-- quickstart:end -->"
)

// TestREADMEQuickstart runs the README's quick start with a freshly built
// ockam, as a reader would: in an empty directory, with bash. Every command
// but the last must succeed; the last verifies a revoked credential and
// must fail with exit code 1, saying "revoked".
func TestREADMEQuickstart(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not found")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not found")
	}
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	commands := quickstartCommands(t, string(readme))

	bin := t.TempDir()
	build := exec.Command(goTool, "build", "-o", filepath.Join(bin, "ockam"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	work := t.TempDir()
	last := commands[len(commands)-1]
	script := "set -eu\n" +
		"trap 'echo \"quickstart: failed: $BASH_COMMAND\" >&2' ERR\n" +
		strings.Join(commands[:len(commands)-1], "\n") + "\n" +
		"trap - ERR\nset +e\n" +
		"{\n" + last + "\n} 2>last.stderr\n" +
		"echo $? >last.code\n"
	cmd := exec.Command(bash, "--noprofile", "--norc", "-c", script)
	cmd.Dir = work
	cmd.Env = append(quickstartEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // stdin is empty: /dev/null
	if err := cmd.Run(); err != nil {
		t.Fatalf("quick start: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())

	code, err := os.ReadFile(filepath.Join(work, "last.code"))
	if err != nil {
		t.Fatal(err)
	}
	lastStderr, err := os.ReadFile(filepath.Join(work, "last.stderr"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := strconv.Atoi(strings.TrimSpace(string(code))); got != exitFailure {
		t.Errorf("last command %q: exit code %s, want %d", last, bytes.TrimSpace(code), exitFailure)
	}
	if !bytes.Contains(lastStderr, []byte("revoked")) {
		t.Errorf("last command %q: stderr %q does not say %q", last, lastStderr, "revoked")
	}
}

// quickstartCommands returns the non-blank, non-comment lines of the sh
// block between the quick start markers.
func quickstartCommands(t *testing.T, readme string) []string {
	t.Helper()
	_, after, ok := strings.Cut(readme, quickstartBegin)
	if !ok {
		t.Fatalf("%s: no %s marker", readmePath, quickstartBegin)
	}
	block, _, ok := strings.Cut(after, quickstartEnd)
	if !ok {
		t.Fatalf("%s: no %s marker after %s", readmePath, quickstartEnd, quickstartBegin)
	}
	lines := strings.Split(strings.TrimSpace(block), "\n")
	if len(lines) < 2 || lines[0] != "```sh" || strings.TrimSpace(lines[len(lines)-1]) != "```" {
		t.Fatalf("%s: the quick start markers must enclose one ```sh block", readmePath)
	}
	var commands []string
	for _, l := range lines[1 : len(lines)-1] {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			commands = append(commands, l)
		}
	}
	if len(commands) < 2 {
		t.Fatalf("%s: the quick start block has %d commands, want at least 2", readmePath, len(commands))
	}
	return commands
}

// quickstartEnv returns the environment without the variables that would
// make the run depend on the caller: the vault passphrase and the test
// clock. PATH is left for the caller to set.
func quickstartEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case passphraseEnv, testNowEnv, "PATH":
			continue
		}
		env = append(env, kv)
	}
	return env
}
