// Package version names this build of telegraf-ockam. Every binary prints
// it (bin/telegraf, ockam, ockamd, the execd shims), the custom Telegraf's
// inputs.internal tags its metrics with it, and the inlet sends it as
// X-Influxdb-Version.
package version

import (
	"regexp"
	"runtime/debug"
)

// Telegraf is the version of Telegraf the plugins are built with: the
// version of github.com/influxdata/telegraf in go.mod (a test checks it).
const Telegraf = "1.39.3"

// Default is the release of telegraf-ockam this source tree is: Release
// falls back to it when neither the linker nor the Go toolchain recorded a
// version, as in a build with -buildvcs=false.
const Default = "v0.1.0"

// release is set by the Makefile (-ldflags "-X ...version.release=$(git
// describe)") when the clone has a release tag.
var release string

// Release returns the version of telegraf-ockam: the one the linker set,
// else the module version the Go toolchain recorded (go install
// ...@v0.2.0), else Default with the commit it was built from when the
// toolchain recorded one (v0.1.0+3f2a1c9d0b4e), else Default.
func Release() string {
	if release != "" {
		return release
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Default
	}
	return fromBuildInfo(info)
}

// pseudoVersion matches the end of a Go pseudo-version
// (v0.0.0-20261204185403-3f2a1c9d0b4e), which the toolchain records for an
// untagged commit: a date and a commit, not a release.
var pseudoVersion = regexp.MustCompile(`\d{14}-[0-9a-f]{12}(\+dirty)?$`)

// fromBuildInfo is Release without the linker's value.
func fromBuildInfo(info *debug.BuildInfo) string {
	if v := info.Main.Version; v != "" && v != "(devel)" && !pseudoVersion.MatchString(v) {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return Default + "+" + s.Value[:12]
		}
	}
	return Default
}

// String returns what the binaries print: "telegraf-ockam v0.1.0
// (Telegraf 1.39.3)".
func String() string {
	return "telegraf-ockam " + Release() + " (Telegraf " + Telegraf + ")"
}

// Line returns the version line of a program: "ockamd v0.1.0
// (telegraf-ockam, Telegraf 1.39.3, go1.26.8)"; for the custom Telegraf,
// whose program name is "telegraf-ockam", "telegraf-ockam v0.1.0
// (Telegraf 1.39.3, go1.26.8)".
func Line(program, goVersion string) string {
	project := "telegraf-ockam, "
	if program == "telegraf-ockam" {
		project = ""
	}
	return program + " " + Release() + " (" + project + "Telegraf " + Telegraf + ", " + goVersion + ")"
}
