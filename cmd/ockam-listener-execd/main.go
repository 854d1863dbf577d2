// Command ockam-listener-execd runs inputs.ockam_listener as a child of a
// stock Telegraf's inputs.execd, through Telegraf's execd shim: it accepts
// secure channels and prints the metrics it receives as line protocol on
// stdout. See README.md: this is best-effort, unlike the custom Telegraf
// (cmd/telegraf).
//
//	ockam-listener-execd --config /etc/telegraf/ockam-listener.conf
//
// SIGINT, SIGTERM or the end of stdin stop it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/influxdata/telegraf/plugins/common/shim"

	"github.com/ockam-addons/telegraf-ockam/internal/version"
	_ "github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main without the exit. The shim writes metrics to os.Stdout.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("ockam-listener-execd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "plugin configuration file, with one [[inputs.ockam_listener]] (required)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Println(version.Line("ockam-listener-execd", runtime.Version()))
		return 0
	}
	if *configFile == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "ockam-listener-execd: error: usage: ockam-listener-execd --config FILE")
		return 2
	}

	s := shim.New()
	if err := s.LoadConfig(configFile); err != nil {
		fmt.Fprintf(stderr, "ockam-listener-execd: error: %s: %v\n", *configFile, err)
		return 1
	}
	if s.Input == nil {
		fmt.Fprintf(stderr, "ockam-listener-execd: error: %s has no [[inputs.ockam_listener]]\n", *configFile)
		return 1
	}
	// A service input: it emits as channels deliver, not on a poll.
	if err := s.RunInput(shim.PollIntervalDisabled); err != nil {
		fmt.Fprintf(stderr, "ockam-listener-execd: error: %v\n", err)
		return 1
	}
	return 0
}
