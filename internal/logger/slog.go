package logger

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
)

// Handler returns a slog.Handler that prints through l, in the same
// Telegraf format as l's own lines: "message key=value ...". A library that
// logs with slog (the authority) then reads like every other long-running
// command of the project. Debug records are printed only if l prints
// debug lines.
func (l Lines) Handler() slog.Handler { return slogHandler{lines: l} }

type slogHandler struct {
	lines  Lines
	attrs  string // "key=value ..." of WithAttrs, with a leading space
	prefix string // the groups of WithGroup, each followed by "."
}

func (h slogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo || h.lines.debug
}

func (h slogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.prefix, a)
		return true
	})
	indicator := "I!"
	switch {
	case r.Level >= slog.LevelError:
		indicator = "E!"
	case r.Level >= slog.LevelWarn:
		indicator = "W!"
	case r.Level < slog.LevelInfo:
		indicator = "D!"
	}
	h.lines.print(indicator, "%s", []any{b.String()})
	return nil
}

func (h slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		appendAttr(&b, h.prefix, a)
	}
	h.attrs = b.String()
	return h
}

func (h slogHandler) WithGroup(name string) slog.Handler {
	if name != "" {
		h.prefix += name + "."
	}
	return h
}

// appendAttr writes " key=value", quoting a value that is empty or holds
// spaces, quotes or "=" as slog's text handler does.
func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			appendAttr(b, prefix+a.Key+".", g)
		}
		return
	}
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \"=\t\n\\") {
		v = strconv.Quote(v)
	}
	b.WriteString(" ")
	b.WriteString(prefix)
	b.WriteString(a.Key)
	b.WriteString("=")
	b.WriteString(v)
}
