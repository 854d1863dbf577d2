package version

import (
	"os"
	"regexp"
	"runtime/debug"
	"testing"
)

// TestTelegrafMatchesGoMod: the Telegraf version the binaries claim is the
// one go.mod builds them with.
func TestTelegrafMatchesGoMod(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/influxdata/telegraf v(\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/influxdata/telegraf")
	}
	if got := string(m[1]); got != Telegraf {
		t.Errorf("go.mod has Telegraf v%s, version.Telegraf is %s", got, Telegraf)
	}
}

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		info debug.BuildInfo
		want string
	}{
		{"go install @version", debug.BuildInfo{Main: debug.Module{Version: "v0.3.1"}}, "v0.3.1"},
		{"work tree, no VCS (-buildvcs=false)", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, Default},
		{"no main module version", debug.BuildInfo{}, Default},
		{"work tree with VCS", debug.BuildInfo{
			Main:     debug.Module{Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "3f2a1c9d0b4e5f60718293a4b5c6d7e8f9012345"}},
		}, Default + "+3f2a1c9d0b4e"},
		{"tagged, modified work tree", debug.BuildInfo{Main: debug.Module{Version: "v0.3.1+dirty"}}, "v0.3.1+dirty"},
		{"pseudo-version of an untagged commit", debug.BuildInfo{
			Main:     debug.Module{Version: "v0.0.0-20261204185403-3f2a1c9d0b4e"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "3f2a1c9d0b4e5f60718293a4b5c6d7e8f9012345"}},
		}, Default + "+3f2a1c9d0b4e"},
		{"pseudo-version of a dirty tree", debug.BuildInfo{
			Main:     debug.Module{Version: "v0.0.0-20261204185403-3f2a1c9d0b4e+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "3f2a1c9d0b4e5f60718293a4b5c6d7e8f9012345"}},
		}, Default + "+3f2a1c9d0b4e"},
	} {
		if got := fromBuildInfo(&tc.info); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	defer func(r string) { release = r }(release)
	release = "v0.2.0"
	if got, want := String(), "telegraf-ockam v0.2.0 (Telegraf 1.39.3)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	// In this test binary (built with -buildvcs=false or from a work tree).
	release = ""
	if got := String(); !regexp.MustCompile(`^telegraf-ockam v\d+\.\d+\.\d+\S* \(Telegraf 1\.39\.3\)$`).MatchString(got) {
		t.Errorf("String() = %q", got)
	}
}

func TestLine(t *testing.T) {
	defer func(r string) { release = r }(release)
	release = "v0.2.0"
	for program, want := range map[string]string{
		"ockamd":         "ockamd v0.2.0 (telegraf-ockam, Telegraf 1.39.3, go1.26.8)",
		"telegraf-ockam": "telegraf-ockam v0.2.0 (Telegraf 1.39.3, go1.26.8)",
	} {
		if got := Line(program, "go1.26.8"); got != want {
			t.Errorf("Line(%q) = %q, want %q", program, got, want)
		}
	}
}
