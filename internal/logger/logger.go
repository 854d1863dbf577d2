// Package logger declares the one small interface that the engines (sender,
// receiver), the trust loader and the transports log through, so that each
// need not declare its own. telegraf.Logger satisfies it, and so does any
// type with these four methods.
package logger

// Logger receives a package's few log lines. What is logged names peers,
// addresses and reasons, never a secret or a payload.
type Logger interface {
	Errorf(format string, args ...any)
	Debugf(format string, args ...any)
	Infof(format string, args ...any)
	Warnf(format string, args ...any)
}

// Nop is a Logger that discards everything: the logger of a configuration
// that gives none.
type Nop struct{}

// Errorf discards its arguments.
func (Nop) Errorf(string, ...any) {}

// Debugf discards its arguments.
func (Nop) Debugf(string, ...any) {}

// Infof discards its arguments.
func (Nop) Infof(string, ...any) {}

// Warnf discards its arguments.
func (Nop) Warnf(string, ...any) {}
