package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
)

// lineLogger is the telegraf.Logger of a long-running command: Telegraf's
// log format ("2006-01-02T15:04:05Z I! [inlet] message"), one line per
// message, on one writer shared by every name.
type lineLogger struct {
	out   *lockedWriter
	name  string
	level telegraf.LogLevel
}

var _ telegraf.Logger = lineLogger{}

// lockedWriter serializes the lines of several loggers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// newLineLogger returns a logger named name that prints messages of level
// and above on w.
func newLineLogger(w io.Writer, name string, level telegraf.LogLevel) lineLogger {
	return lineLogger{out: &lockedWriter{w: w}, name: name, level: level}
}

// named returns a logger on the same writer, with another name.
func (l lineLogger) named(name string) lineLogger {
	l.name = name
	return l
}

func (l lineLogger) print(level telegraf.LogLevel, msg string) {
	if !l.level.Includes(level) {
		return
	}
	l.out.mu.Lock()
	defer l.out.mu.Unlock()
	fmt.Fprintf(l.out.w, "%s %s [%s] %s\n", time.Now().UTC().Format(time.RFC3339), level.Indicator(), l.name, msg)
}

// Level returns the least severe level printed.
func (l lineLogger) Level() telegraf.LogLevel { return l.level }

// AddAttribute does nothing: lines carry no attributes.
func (lineLogger) AddAttribute(string, any) {}

// The methods of telegraf.Logger, by level.

func (l lineLogger) Errorf(format string, args ...any) {
	l.print(telegraf.Error, fmt.Sprintf(format, args...))
}

func (l lineLogger) Error(args ...any) {
	l.print(telegraf.Error, fmt.Sprint(args...))
}

func (l lineLogger) Warnf(format string, args ...any) {
	l.print(telegraf.Warn, fmt.Sprintf(format, args...))
}

func (l lineLogger) Warn(args ...any) {
	l.print(telegraf.Warn, fmt.Sprint(args...))
}

func (l lineLogger) Infof(format string, args ...any) {
	l.print(telegraf.Info, fmt.Sprintf(format, args...))
}

func (l lineLogger) Info(args ...any) {
	l.print(telegraf.Info, fmt.Sprint(args...))
}

func (l lineLogger) Debugf(format string, args ...any) {
	l.print(telegraf.Debug, fmt.Sprintf(format, args...))
}

func (l lineLogger) Debug(args ...any) {
	l.print(telegraf.Debug, fmt.Sprint(args...))
}

func (l lineLogger) Tracef(format string, args ...any) {
	l.print(telegraf.Trace, fmt.Sprintf(format, args...))
}

func (l lineLogger) Trace(args ...any) {
	l.print(telegraf.Trace, fmt.Sprint(args...))
}
