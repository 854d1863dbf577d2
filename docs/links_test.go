package docs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

var (
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	refLink    = regexp.MustCompile(`(?m)^\[[^\]]+\]:\s*(\S+)`)
	heading    = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
	codeFence  = regexp.MustCompile("(?ms)^\\s*```.*?^\\s*```")
)

// TestDocLinks: every relative link of the documentation points to a file
// of the repository, and every #fragment to a heading of that file.
func TestDocLinks(t *testing.T) {
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../*.md")
	readmes, _ := filepath.Glob("../*/*/README.md")
	deeper, _ := filepath.Glob("../*/*/*/README.md")
	docs = append(append(append(docs, more...), readmes...), deeper...)
	for _, doc := range docs {
		text := codeFence.ReplaceAllString(readDoc(t, doc), "")
		var links []string
		for _, m := range inlineLink.FindAllStringSubmatch(text, -1) {
			links = append(links, m[1])
		}
		for _, m := range refLink.FindAllStringSubmatch(text, -1) {
			links = append(links, m[1])
		}
		for _, link := range links {
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, fragment, _ := strings.Cut(link, "#")
			path := doc
			if target != "" {
				path = filepath.Join(filepath.Dir(doc), target)
			}
			info, err := os.Stat(path)
			if err != nil {
				t.Errorf("%s: link %q: %v", doc, link, err)
				continue
			}
			if fragment == "" || info.IsDir() || !strings.HasSuffix(path, ".md") {
				continue
			}
			if !anchors(readDoc(t, path))[fragment] {
				t.Errorf("%s: link %q: %s has no heading for #%s", doc, link, path, fragment)
			}
		}
	}
}

// anchors returns the fragments GitHub gives the headings of a Markdown
// text: lower case, punctuation dropped, spaces turned into hyphens, and
// -1, -2 … after repeats.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, m := range heading.FindAllStringSubmatch(codeFence.ReplaceAllString(text, ""), -1) {
		title := regexp.MustCompile(`<!--.*?-->`).ReplaceAllString(m[1], "")
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(title)) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		slug := b.String()
		if n := seen[slug]; n > 0 {
			out[slug+"-"+strconv.Itoa(n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

// telegrafLink matches a link to Telegraf's documentation or source.
var telegrafLink = regexp.MustCompile(`https?://(?:github\.com/influxdata/telegraf|docs\.influxdata\.com/telegraf)[^\s)>\]]*`)

// TestTelegrafLinks: links to Telegraf's documentation have one style. Out
// of Telegraf's tree a relative link (Telegraf's own rule) cannot reach it,
// so they are absolute, to GitHub at the Telegraf version in go.mod (the
// documentation of the code that is built): blob/<version>/ for a file,
// tree/<version>/ for a folder.
func TestTelegrafLinks(t *testing.T) {
	mod := readDoc(t, "../go.mod")
	version := regexp.MustCompile(`(?m)^\s*github\.com/influxdata/telegraf (v\S+)`).FindStringSubmatch(mod)
	if version == nil {
		t.Fatal("go.mod does not require github.com/influxdata/telegraf")
	}
	file := "https://github.com/influxdata/telegraf/blob/" + version[1] + "/"
	dir := "https://github.com/influxdata/telegraf/tree/" + version[1] + "/"
	docs, _ := filepath.Glob("*.md")
	more, _ := filepath.Glob("../*.md")
	readmes, _ := filepath.Glob("../*/*/README.md")
	deeper, _ := filepath.Glob("../*/*/*/README.md")
	docs = append(append(append(docs, more...), readmes...), deeper...)
	// The links point into the module's source, as go.mod pins it: check
	// each target and #fragment there.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/influxdata/telegraf").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/influxdata/telegraf: %v", err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		t.Fatal("github.com/influxdata/telegraf is not in the module cache: run go mod download")
	}
	n := 0
	for _, doc := range docs {
		text := codeFence.ReplaceAllString(readDoc(t, doc), "")
		for _, link := range telegrafLink.FindAllString(text, -1) {
			n++
			var rest string
			switch {
			case strings.HasPrefix(link, file):
				rest = strings.TrimPrefix(link, file)
			case strings.HasPrefix(link, dir):
				rest = strings.TrimPrefix(link, dir)
			default:
				t.Errorf("%s: link %q: want a link into %s… (a file) or %s… (a folder)", doc, link, file, dir)
				continue
			}
			target, fragment, _ := strings.Cut(rest, "#")
			path := filepath.Join(root, filepath.FromSlash(target))
			info, err := os.Stat(path)
			switch {
			case err != nil:
				t.Errorf("%s: link %q: Telegraf %s has no %s", doc, link, version[1], target)
			case info.IsDir() != strings.HasPrefix(link, dir):
				t.Errorf("%s: link %q: a folder is linked by tree/, a file by blob/", doc, link)
			case fragment != "" && !anchors(readDoc(t, path))[fragment]:
				t.Errorf("%s: link %q: Telegraf's %s has no heading for #%s", doc, link, target, fragment)
			}
		}
	}
	if n == 0 {
		t.Error("no link to Telegraf's documentation found: the pattern is broken")
	}
}
