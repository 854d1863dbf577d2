// Package docs_test runs the commands of the documentation and checks that
// each plugin's documentation names every option.
//
// Every ```sh block of the walkthrough documents (walkthroughs, below) is
// preceded by a marker that says what the test does with it:
//
//	<!-- test:run -->                 run it; every command must succeed
//	<!-- test:expect REGEXP -->       (after test:run, repeatable) its
//	                                  standard output must match REGEXP
//	<!-- test:skip REASON -->         do not run it, for REASON
//
// A block without a marker fails the test, and so does a command block
// fenced as bash, shell or console. The run blocks of a walkthrough's
// documents run in order, in one bash process (set -eu), in an empty directory, with the
// binaries of make build and make tools first on PATH, as a reader would
// paste them into one terminal. Background jobs they start are killed at the
// end. The only change made to the text: each fixed loopback port the
// documents use (127.0.0.1:8086, …) is replaced by a free one, the same
// everywhere, so that the test can run beside anything else.
package docs_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
)

// walkthroughs are the documents whose commands run. Each walkthrough runs
// in a directory of its own, its documents in this order: OPERATIONS.md
// continues in the directory of QUICKSTART.md, on its fleet; the README is
// a walkthrough of its own, from the root of a clone.
var walkthroughs = []struct {
	name string
	docs []string
}{
	{"quickstart", []string{"QUICKSTART.md", "OPERATIONS.md"}},
	{"readme", []string{"../README.md"}},
}

// loopbackPort matches the fixed loopback addresses the documents use
// (127.0.0.1:8086 and so on); 127.0.0.1:0 asks for a free port already.
var loopbackPort = regexp.MustCompile(`127\.0\.0\.1:([1-9][0-9]{1,4})\b`)

// block is one fenced ```sh block of a document.
type block struct {
	doc    string
	line   int // of the opening fence
	text   string
	run    bool
	skip   string           // the reason, for a skipped block
	expect []*regexp.Regexp // patterns its standard output must match
}

func (b block) String() string { return fmt.Sprintf("%s:%d", b.doc, b.line) }

var (
	fence      = regexp.MustCompile("^```\\s*([A-Za-z0-9_-]*)")
	marker     = regexp.MustCompile(`^<!--\s*test:(run|skip|expect)\b\s*(.*?)\s*-->$`)
	shellNames = map[string]bool{"bash": true, "shell": true, "console": true, "zsh": true}
)

// parseBlocks returns the ```sh blocks of a document with their markers.
func parseBlocks(doc, text string) ([]block, error) {
	var (
		blocks  []block
		markers []string // comment lines right above the current line
		lines   = strings.Split(text, "\n")
	)
	for i := 0; i < len(lines); i++ {
		// Fences and markers may be indented (inside a list item).
		raw := strings.TrimRight(lines[i], " \t\r")
		line := strings.TrimLeft(raw, " \t")
		indent := raw[:len(raw)-len(line)]
		m := fence.FindStringSubmatch(line)
		if m == nil {
			if marker.MatchString(line) {
				markers = append(markers, line)
			} else if line != "" {
				markers = nil
			}
			continue
		}
		// A fenced block: find its end.
		start := i
		var body []string
		for i++; i < len(lines) && !strings.HasPrefix(strings.TrimSpace(lines[i]), "```"); i++ {
			body = append(body, strings.TrimPrefix(lines[i], indent))
		}
		if i == len(lines) {
			return nil, fmt.Errorf("%s:%d: unclosed code block", doc, start+1)
		}
		lang := m[1]
		if shellNames[lang] {
			return nil, fmt.Errorf("%s:%d: a %q block: fence commands as ```sh, with a test marker", doc, start+1, lang)
		}
		if lang != "sh" {
			markers = nil
			continue
		}
		b := block{doc: doc, line: start + 1, text: strings.Join(body, "\n")}
		if err := b.mark(markers); err != nil {
			return nil, err
		}
		blocks = append(blocks, b)
		markers = nil
	}
	return blocks, nil
}

// mark applies the marker lines above the block.
func (b *block) mark(markers []string) error {
	for _, l := range markers {
		m := marker.FindStringSubmatch(l)
		switch m[1] {
		case "run":
			b.run = true
		case "skip":
			if m[2] == "" {
				return fmt.Errorf("%v: test:skip needs a reason", b)
			}
			b.skip = m[2]
		case "expect":
			re, err := regexp.Compile(m[2])
			if err != nil {
				return fmt.Errorf("%v: test:expect: %v", b, err)
			}
			b.expect = append(b.expect, re)
		}
	}
	switch {
	case b.run == (b.skip != ""):
		return fmt.Errorf("%v: a ```sh block needs exactly one of <!-- test:run --> and <!-- test:skip REASON --> right above it", b)
	case len(b.expect) > 0 && !b.run:
		return fmt.Errorf("%v: test:expect on a block that does not run", b)
	}
	return nil
}

// TestDocBlocksMarked: every command block of the walkthrough says whether
// it runs. It needs no binaries, so it runs everywhere.
func TestDocBlocksMarked(t *testing.T) {
	for _, w := range walkthroughs {
		n := 0
		for _, b := range readBlocks(t, w.docs) {
			if b.run {
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s: no block to run", w.name)
		}
	}
}

// readBlocks returns the ```sh blocks of the documents, in order.
func readBlocks(t *testing.T, docs []string) []block {
	t.Helper()
	var blocks []block
	for _, doc := range docs {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := parseBlocks(doc, string(text))
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, bs...)
	}
	return blocks
}

func TestParseBlocks(t *testing.T) {
	good := "text\n<!-- test:run -->\n<!-- test:expect ^ok$ -->\n```sh\necho ok\n```\n\n" +
		"<!-- test:skip needs docker -->\n```sh\ndocker compose up\n```\n```toml\n[agent]\n```\n" +
		"1. In a list:\n\n   <!-- test:run -->\n   ```sh\n   cat <<EOF\n   x\n   EOF\n   ```\n"
	blocks, err := parseBlocks("good.md", good)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 3 || !blocks[0].run || blocks[0].text != "echo ok" || len(blocks[0].expect) != 1 ||
		blocks[1].run || blocks[1].skip != "needs docker" ||
		!blocks[2].run || blocks[2].text != "cat <<EOF\nx\nEOF" {
		t.Fatalf("got %+v", blocks)
	}
	for name, bad := range map[string]string{
		"unmarked":          "```sh\necho\n```\n",
		"marker too far":    "<!-- test:run -->\nprose\n```sh\necho\n```\n",
		"skip w/o reason":   "<!-- test:skip -->\n```sh\necho\n```\n",
		"run and skip":      "<!-- test:run -->\n<!-- test:skip x -->\n```sh\necho\n```\n",
		"expect on skipped": "<!-- test:skip x -->\n<!-- test:expect y -->\n```sh\necho\n```\n",
		"bash fence":        "<!-- test:run -->\n```bash\necho\n```\n",
		"unclosed":          "<!-- test:run -->\n```sh\necho\n",
		"indented unmarked": "1. item\n\n   ```sh\n   echo\n   ```\n",
	} {
		if _, err := parseBlocks("bad.md", bad); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestDocCommands runs each walkthrough (see the package comment). It needs
// bin/ (make build) and influxd (make tools): with OCKAM_E2E=1 (make test)
// a missing binary fails it; without, it runs if they are there and is
// skipped if not.
func TestDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the documentation's commands for a minute")
	}
	path := binaries(t)
	for _, w := range walkthroughs {
		t.Run(w.name, func(t *testing.T) { runWalkthrough(t, path, readBlocks(t, w.docs)) })
	}
}

// runWalkthrough runs the run blocks in one bash process, in an empty
// directory, with path as PATH.
func runWalkthrough(t *testing.T, path string, blocks []block) {
	rewrite := freePorts(t, blocks)
	var script strings.Builder
	script.WriteString("set -eu\n")
	var ran []block
	for _, b := range blocks {
		if !b.run {
			t.Logf("%v: skipped: %s", b, b.skip)
			continue
		}
		fmt.Fprintf(&script, "printf '\\n@@block %d@@\\n'\nprintf '\\n@@block %d@@\\n' >&2\n", len(ran), len(ran))
		script.WriteString(rewrite.Replace(b.text) + "\n")
		ran = append(ran, b)
	}
	script.WriteString("printf '\\n@@end@@\\n'\n")

	work := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = work
	cmd.Env = docEnv(path, work)
	// Its own process group, so that the background jobs of the documents
	// go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// Files, not pipes: the background jobs hold them open after bash ends.
	stdoutFile, stderrFile := createFile(t, "stdout"), createFile(t, "stderr")
	cmd.Stdout, cmd.Stderr = stdoutFile, stderrFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	stopJobs := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }
	t.Cleanup(stopJobs)
	err := cmd.Wait()
	stopJobs()
	stdout, stderr := readAll(t, stdoutFile), readAll(t, stderrFile)

	outs, last, ended := splitOutput(stdout, len(ran))
	errs, _, _ := splitOutput(stderr, len(ran))
	failed := func(format string, args ...any) {
		t.Errorf(format, args...)
		dumpLogs(t, work)
	}
	if err != nil || !ended {
		if last < 0 {
			failed("the script failed before its first block (%v):\n%s", err, stderr)
			return
		}
		failed("%v: the block failed (%v):\n%s\nstdout:\n%s\nstderr:\n%s", ran[last], err, ran[last].text, outs[last], errs[last])
		return
	}
	for i, b := range ran {
		if testing.Verbose() {
			t.Logf("%v:\n%s", b, outs[i])
		}
		for _, re := range b.expect {
			if !re.MatchString(outs[i]) {
				failed("%v: output does not match %q:\n%s\nstderr:\n%s", b, re, outs[i], errs[i])
			}
		}
	}
}

// createFile creates a file in a temporary directory of t.
func createFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// readAll returns what was written to f.
func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// binaries returns PATH with the directories of the project's binaries
// first, or skips or fails t as TestDocCommands says.
func binaries(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("OCKAM_BIN")
	if bin == "" {
		bin = filepath.Join("..", "bin")
	}
	influxd := os.Getenv("INFLUXD")
	if influxd == "" {
		influxd = filepath.Join("..", ".tools", "bin", "influxd")
	}
	var dirs []string
	for _, p := range []string{
		filepath.Join(bin, "ockam"), filepath.Join(bin, "telegraf"), filepath.Join(bin, "ockam-intruder"),
		filepath.Join(bin, "ockam-output-execd"), filepath.Join(bin, "ockam-listener-execd"), influxd,
	} {
		abs, err := filepath.Abs(p)
		if err == nil {
			_, err = exec.LookPath(abs)
		}
		if err != nil {
			if os.Getenv("OCKAM_E2E") == "1" {
				t.Fatalf("OCKAM_E2E=1 but %s is not an executable (run make build tools): %v", p, err)
			}
			t.Skipf("the documentation's commands need %s (make build tools; make test runs them): %v", p, err)
		}
		dirs = append(dirs, filepath.Dir(abs))
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("the documentation's commands need curl")
	}
	return strings.Join(append(dirs, os.Getenv("PATH")), string(os.PathListSeparator))
}

// freePorts returns a replacer of every fixed loopback port that the run
// blocks name by a free one, the same one wherever it appears.
//
// The ports are found free now but bound later, some of them a minute later
// (and a relay's again after a restart), while other packages' tests run
// beside this one: see package freeport.
func freePorts(t *testing.T, blocks []block) *strings.Replacer {
	t.Helper()
	seen := map[string]bool{}
	var pairs []string
	for _, b := range blocks {
		for _, m := range loopbackPort.FindAllString(b.text, -1) {
			if !b.run || seen[m] {
				continue
			}
			seen[m] = true
			pairs = append(pairs, m, freeport.Addr(t))
		}
	}
	return strings.NewReplacer(pairs...)
}

// docEnv is the test's environment without what would make the documents'
// commands depend on the caller: the project's OCKAM_* variables (a vault
// passphrase, the ockam command's test clock) and HOME.
func docEnv(path, home string) []string {
	env := []string{"PATH=" + path, "HOME=" + home}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OCKAM_") || name == "PATH" || name == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// splitOutput splits the script's output at the block markers. It returns
// each block's part, the index of the last block that started (-1 for
// none) and whether the script reached its end.
func splitOutput(out string, n int) (parts []string, last int, ended bool) {
	parts = make([]string, n)
	cur, last := -1, -1
	s := bufio.NewScanner(strings.NewReader(out))
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		var i int
		if _, err := fmt.Sscanf(line, "@@block %d@@", &i); err == nil && i < n {
			cur, last = i, i
			continue
		}
		if line == "@@end@@" {
			cur, ended = -1, true
			continue
		}
		if cur >= 0 {
			parts[cur] += line + "\n"
		}
	}
	for i, p := range parts {
		// The next marker starts with a newline of its own.
		if strings.HasSuffix(p, "\n\n") {
			parts[i] = p[:len(p)-1]
		}
	}
	return parts, last, ended
}

// dumpLogs prints the end of every *.log file the documents' commands left
// in dir or one of its subdirectories.
func dumpLogs(t *testing.T, dir string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	deeper, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	logs = append(logs, deeper...)
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		rel, _ := filepath.Rel(dir, l)
		t.Logf("--- %s:\n%s", rel, strings.Join(lines, "\n"))
	}
}
