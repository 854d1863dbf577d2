package docs_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/outputs"

	_ "github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	_ "github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
)

// modulePath prefixes the packages whose struct fields are options too
// (the listener's allow blocks); other types (config.Duration,
// config.Secret) are values.
const modulePath = "github.com/ockam-addons/telegraf-ockam/"

// TestPluginOptionsDocumented: every option of each plugin (every toml tag
// of its configuration struct, nested blocks included) appears in its
// sample.conf, and is described in its README outside the configuration
// block; and the README's configuration block is sample.conf, verbatim.
func TestPluginOptionsDocumented(t *testing.T) {
	for _, p := range []struct {
		dir     string
		options []option
	}{
		{"../plugins/outputs/ockam", tomlTags(reflect.TypeOf(outputs.Outputs["ockam"]()))},
		{"../plugins/inputs/ockam_listener", tomlTags(reflect.TypeOf(inputs.Inputs["ockam_listener"]()))},
		// Go's internal rule keeps this package from importing it: read its source.
		{"../cmd/telegraf/internal", sourceTags(t, "../cmd/telegraf/internal", "Internal")},
	} {
		t.Run(filepath.Base(p.dir), func(t *testing.T) {
			options := p.options
			if len(options) == 0 {
				t.Fatalf("%s: no toml tags found", p.dir)
			}
			sample := readDoc(t, filepath.Join(p.dir, "sample.conf"))
			readme := readDoc(t, filepath.Join(p.dir, "README.md"))
			block, prose := sampleBlock(t, readme)
			if block != sample {
				t.Errorf("%s/README.md: the ```toml @sample.conf block differs from sample.conf", p.dir)
			}
			for _, o := range options {
				// A key (`key = …`), or a block (`[[inputs.name.key]]`), commented out or not.
				inSample := regexp.MustCompile(`(?m)^\s*#?\s*(` + regexp.QuoteMeta(o.name) + `\s*=|\[\[?[a-z_.]+\.` +
					regexp.QuoteMeta(o.name) + `\]\]?)`)
				if !inSample.MatchString(sample) {
					t.Errorf("%s/sample.conf: option %q is missing (as `%s = …` or `# %s = …`)", p.dir, o.name, o.name, o.name)
				}
				described := strings.Contains(prose, "`"+o.name+"`") ||
					o.block && regexp.MustCompile("`\\[\\[?[a-z_.]+\\."+regexp.QuoteMeta(o.name)+"\\]\\]?`").MatchString(prose)
				if !described {
					t.Errorf("%s/README.md: option %q is not described (no `%s` outside the configuration block)", p.dir, o.name, o.name)
				}
			}
		})
	}
}

// option is one toml key of a plugin's configuration.
type option struct {
	name  string
	block bool // a table (array): [[inputs.x.name]]
}

// tomlTags returns the options of the struct t points to, and of the
// structs (or slices of them) of this module it holds.
func tomlTags(t reflect.Type) []option {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var options []option
	for _, f := range reflect.VisibleFields(t) {
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		// A deprecated option (Telegraf's `deprecated` tag) stays out of
		// sample.conf, as in Telegraf's own plugins.
		if !f.IsExported() || tag == "-" || f.Anonymous || f.Tag.Get("deprecated") != "" {
			continue
		}
		if tag == "" {
			tag = f.Name // what Telegraf's TOML decoder matches
		}
		inner := f.Type
		for inner.Kind() == reflect.Pointer || inner.Kind() == reflect.Slice {
			inner = inner.Elem()
		}
		ours := inner.Kind() == reflect.Struct && strings.HasPrefix(inner.PkgPath(), modulePath)
		options = append(options, option{name: tag, block: ours})
		if ours {
			options = append(options, tomlTags(inner)...)
		}
	}
	return options
}

// sourceTags returns the toml tags of the fields of the struct typeName
// declared in the Go files of dir (tests excluded).
func sourceTags(t *testing.T, dir, typeName string) []option {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var options []option
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != typeName {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			for _, field := range st.Fields.List {
				if field.Tag == nil {
					continue
				}
				tag, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					t.Fatal(err)
				}
				name, _, _ := strings.Cut(reflect.StructTag(tag).Get("toml"), ",")
				if name != "" && name != "-" {
					options = append(options, option{name: name})
				}
			}
			return false
		})
	}
	return options
}

// sampleBlock returns the README's ```toml @sample.conf block (with its
// final newline, as in the file) and the README without it.
func sampleBlock(t *testing.T, readme string) (block, prose string) {
	t.Helper()
	const open = "```toml @sample.conf\n"
	before, rest, ok := strings.Cut(readme, open)
	if !ok {
		t.Fatal("README.md has no ```toml @sample.conf block")
	}
	block, after, ok := strings.Cut(rest, "```\n")
	if !ok {
		t.Fatal("README.md: the ```toml @sample.conf block is not closed")
	}
	return block, before + after
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTomlTags guards the test above: nested blocks of this module are
// followed; skipped and unexported fields are not listed.
func TestTomlTags(t *testing.T) {
	type rule struct {
		Names []string `toml:"names"`
	}
	type plugin struct {
		Address string          `toml:"address"`
		Rules   []rule          `toml:"rule"` // declared in this module: its fields are options
		Log     any             `toml:"-"`
		Plain   int             // Telegraf matches the field name
		Secret  reflect.Value   `toml:"secret"` // a struct of another package: a value
		_       int             `toml:"unexported"`
		Ptr     *map[string]int `toml:"ptr"`
	}
	got := tomlTags(reflect.TypeOf(&plugin{}))
	want := []option{{"address", false}, {"rule", true}, {"names", false}, {"Plain", false}, {"secret", false}, {"ptr", false}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
