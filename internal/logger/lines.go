package logger

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Lines is the Logger of a long-running command: one line per message in
// Telegraf's log format ("2006-01-02T15:04:05Z I! [inlet] message"), on
// one writer shared by every name. It is safe for concurrent use.
type Lines struct {
	out   *lockedWriter
	name  string
	debug bool
}

var _ Logger = Lines{}

// lockedWriter serializes the lines of several loggers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLines returns a logger named name that prints on w the messages at
// info level and above, and debug messages too if debug.
func NewLines(w io.Writer, name string, debug bool) Lines {
	return Lines{out: &lockedWriter{w: w}, name: name, debug: debug}
}

// Named returns a logger on the same writer, with another name.
func (l Lines) Named(name string) Lines {
	l.name = name
	return l
}

func (l Lines) print(indicator, format string, args []any) {
	msg := fmt.Sprintf(format, args...)
	l.out.mu.Lock()
	defer l.out.mu.Unlock()
	fmt.Fprintf(l.out.w, "%s %s [%s] %s\n", time.Now().UTC().Format(time.RFC3339), indicator, l.name, msg)
}

// Errorf prints an error line.
func (l Lines) Errorf(format string, args ...any) { l.print("E!", format, args) }

// Warnf prints a warning line.
func (l Lines) Warnf(format string, args ...any) { l.print("W!", format, args) }

// Infof prints an informational line.
func (l Lines) Infof(format string, args ...any) { l.print("I!", format, args) }

// Debugf prints a debug line if the logger was made with debug.
func (l Lines) Debugf(format string, args ...any) {
	if l.debug {
		l.print("D!", format, args)
	}
}
