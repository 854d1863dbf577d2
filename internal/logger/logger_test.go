package logger

import (
	"errors"
	"log/slog"
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

// TestHandler: slog records print as Lines do, "message key=value", values
// with spaces or quotes quoted, attributes of WithAttrs and groups kept,
// debug only when asked for.
func TestHandler(t *testing.T) {
	var b strings.Builder
	log := slog.New(NewLines(&b, "authority", false).Handler())
	log.Info("serving", "address", "127.0.0.1:4100", "n", 3)
	log.Warn("refused", "err", errors.New(`bad "token"`), "empty", "")
	log.Error("store", "err", "disk full")
	log.Debug("hidden")
	log.With("remote", "10.0.0.1:5").WithGroup("req").Info("enrolled", "subject", "I12", slog.Group("g", "a", 1))
	slog.New(NewLines(&b, "authority", true).Handler()).Debug("shown", "k", "v=w")
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{
		"I! [authority] serving address=127.0.0.1:4100 n=3",
		`W! [authority] refused err="bad \"token\"" empty=""`,
		"E! [authority] store err=\"disk full\"",
		"I! [authority] enrolled remote=10.0.0.1:5 req.subject=I12 req.g.a=1",
		`D! [authority] shown k="v=w"`,
	}
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
