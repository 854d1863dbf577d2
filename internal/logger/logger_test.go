package logger

import "github.com/influxdata/telegraf"

// Telegraf's logger, which the plugins hand to the transports, and Nop are
// Loggers: this file does not compile otherwise.
var (
	_ Logger = telegraf.Logger(nil)
	_ Logger = Nop{}
)
