package logger

import (
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
)

// Telegraf's logger, which the plugins hand to the transports, and Nop are
// Loggers: this file does not compile otherwise.
var (
	_ Logger = telegraf.Logger(nil)
	_ Logger = Nop{}
)

// TestLines: one line per message, in Telegraf's format, under its name;
// debug lines only when asked for.
func TestLines(t *testing.T) {
	var b strings.Builder
	l := NewLines(&b, "inlet", false)
	l.Errorf("e %d", 1)
	l.Warnf("w")
	l.Infof("i")
	l.Debugf("hidden")
	l.Named("relay").Infof("other name")
	NewLines(&b, "inlet", true).Debugf("d")
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{"E! [inlet] e 1", "W! [inlet] w", "I! [inlet] i", "I! [relay] other name", "D! [inlet] d"}
	if len(lines) != len(want) {
		t.Fatalf("got %q, want %q", lines, want)
	}
	for i, line := range lines {
		stamp, rest, _ := strings.Cut(line, " ")
		if _, err := time.Parse(time.RFC3339, stamp); err != nil || rest != want[i] {
			t.Errorf("line %d: %q, want a time and %q", i, line, want[i])
		}
	}
}
