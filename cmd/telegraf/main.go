// Command telegraf is Telegraf with the telegraf-ockam plugins compiled in
// (outputs.ockam and inputs.ockam_listener), a few stock plugins (plugins.go)
// and inputs.internal. It is built from Telegraf's own packages, wired as
// Telegraf's cmd/telegraf does, with fewer flags.
//
// Usage:
//
//	telegraf --config telegraf.conf [--config more.conf] [--config-directory dir]
//	telegraf --config telegraf.conf --test     # gather once, print, no outputs
//	telegraf --config telegraf.conf --once     # gather once, write, exit
//	telegraf --version
//
// SIGINT and SIGTERM stop it cleanly (the outputs get a last flush);
// SIGHUP reloads the configuration.
package main

//go:generate go run ./pluginsgen

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/awnumar/memguard"
	"github.com/influxdata/telegraf/agent"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/logger"

	"github.com/ockam-addons/telegraf-ockam/internal/version"
)

// options are the command-line flags.
type options struct {
	configs    []string
	configDirs []string
	once       bool
	test       bool
	testWait   time.Duration
	version    bool
	debug      bool
	quiet      bool
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, so that deferred cleanups run.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "telegraf: error: %v\n", err)
		return 2
	}
	if opts.version {
		fmt.Fprintln(stdout, versionString())
		return 0
	}

	// Erase secrets (memguard) and flush the log file on the way out.
	defer memguard.Purge()
	defer logger.CloseLogging()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runAgent(ctx, opts); err != nil {
		log.Printf("E! %v", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var opts options
	fs := flag.NewFlagSet("telegraf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var((*stringList)(&opts.configs), "config", "configuration file to load (repeatable)")
	fs.Var((*stringList)(&opts.configDirs), "config-directory", "directory of *.conf files to load (repeatable)")
	fs.BoolVar(&opts.once, "once", false, "gather once, write the metrics to the outputs and exit")
	fs.BoolVar(&opts.test, "test", false, "gather once, print the metrics to stdout and exit; outputs are not used")
	fs.DurationVar(&opts.testWait, "test-wait", 0, "with --test or --once, how long to wait for service inputs")
	fs.BoolVar(&opts.version, "version", false, "print the version and exit")
	fs.BoolVar(&opts.debug, "debug", false, "log at debug level")
	fs.BoolVar(&opts.quiet, "quiet", false, "log errors only")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: telegraf --config FILE [flags]\n\nTelegraf with the telegraf-ockam plugins.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	return opts, nil
}

// runAgent runs the agent until ctx ends, loading the configuration again
// on SIGHUP. --once and --test run once.
func runAgent(ctx context.Context, opts options) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		runCtx, cancel := context.WithCancel(ctx)
		reload := false
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-hup:
				reload = true
				cancel()
			case <-runCtx.Done():
			}
		}()
		err := runOnce(runCtx, opts)
		cancel()
		<-watched
		if !reload || opts.once || opts.test {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		log.Printf("I! Reloading Telegraf config")
	}
}

// runOnce loads the configuration and runs one agent.
func runOnce(ctx context.Context, opts options) error {
	config.ResetSecrets()
	c := config.NewConfig()
	c.Agent.Quiet = opts.quiet
	c.TestMode = opts.test && !opts.once
	files, err := configFiles(opts)
	if err != nil {
		return err
	}
	// LoadAll, not LoadConfig: it also orders processors and links secrets.
	if err := c.LoadAll(files...); err != nil {
		return err
	}
	if !opts.test && len(c.Outputs) == 0 {
		return errors.New("no outputs found, probably invalid config file provided")
	}
	if len(c.Inputs) == 0 {
		return errors.New("no inputs found, probably invalid config file provided")
	}

	err = logger.SetupLogging(&logger.Config{
		Debug:                   c.Agent.Debug || opts.debug,
		Quiet:                   c.Agent.Quiet || opts.quiet,
		LogTarget:               c.Agent.LogTarget,
		LogFormat:               c.Agent.LogFormat,
		Logfile:                 c.Agent.Logfile,
		StructuredLogMessageKey: c.Agent.StructuredLogMessageKey,
		RotationInterval:        time.Duration(c.Agent.LogfileRotationInterval),
		RotationMaxSize:         int64(c.Agent.LogfileRotationMaxSize),
		RotationMaxArchives:     c.Agent.LogfileRotationMaxArchives,
		LogWithTimezone:         c.Agent.LogWithTimezone,
	})
	if err != nil {
		return fmt.Errorf("setting up logging failed: %w", err)
	}
	log.Printf("I! Starting %s", versionString())
	log.Printf("I! Loaded inputs: %s", strings.Join(c.InputNames(), " "))
	log.Printf("I! Loaded processors: %s", strings.Join(c.ProcessorNames(), " "))
	log.Printf("I! Loaded aggregators: %s", strings.Join(c.AggregatorNames(), " "))
	if c.TestMode {
		log.Printf("W! Outputs are not used in testing mode!")
	} else {
		log.Printf("I! Loaded outputs: %s", strings.Join(c.OutputNames(), " "))
	}

	ag := agent.NewAgent(c)
	switch {
	case opts.once:
		return ag.Once(ctx, opts.testWait)
	case opts.test:
		return ag.Test(ctx, opts.testWait)
	}
	return ag.Run(ctx)
}

// configFiles lists the files of --config and --config-directory, or
// Telegraf's default locations when neither is given.
func configFiles(opts options) ([]string, error) {
	files := append([]string(nil), opts.configs...)
	for _, dir := range opts.configDirs {
		found, err := config.WalkDirectory(dir)
		if err != nil {
			return nil, fmt.Errorf("reading config directory failed: %w", err)
		}
		files = append(files, found...)
	}
	if len(files) > 0 {
		return files, nil
	}
	files, err := config.GetDefaultConfigPath()
	if err != nil {
		return nil, fmt.Errorf("no --config given and %w", err)
	}
	return files, nil
}

// versionString names this build, the Telegraf it is built on and Go:
// "telegraf-ockam v0.1.0 (Telegraf 1.39.3, go1.26.8)".
func versionString() string {
	return version.Line("telegraf-ockam", runtime.Version())
}
