// Command telegraf is Telegraf with the telegraf-ockam plugins compiled in
// (outputs.ockam, inputs.ockam_listener and inputs.internal), the stock
// plugins of plugins.txt (plugins.go), built from Telegraf's own packages
// and wired as Telegraf's cmd/telegraf does, with the flags and commands of
// Telegraf's that out-of-tree code can reach (README.md lists them).
//
// Usage:
//
//	telegraf --config telegraf.conf [--config more.conf] [--config-directory dir] [--watch-config poll]
//	telegraf --config telegraf.conf --test     # gather once, print, no outputs
//	telegraf --config telegraf.conf --once     # gather once, write, exit
//	telegraf [--input-filter cpu:mem] [--output-filter ockam] config > telegraf.conf
//	telegraf config check --config telegraf.conf
//	telegraf --usage modbus
//	telegraf plugins
//	telegraf version
//
// SIGINT and SIGTERM stop it cleanly (the outputs get a last flush);
// SIGHUP reloads the configuration, and so, with --watch-config, does a
// change of a --config file or of a *.conf file of a --config-directory
// (polled every --watch-interval, 1 s by default).
package main

//go:generate go run ../../tools/pluginsgen

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
	configs      []string
	configDirs   []string
	once         bool
	test         bool
	testWait     time.Duration
	version      bool
	debug        bool
	quiet        bool
	sampleConfig bool
	usage        string
	password     string
	nonStrictEnv bool
	strictEnv    bool
	selections   []string
	// watch is --watch-config ("", notify or poll), watchInterval how
	// often it looks.
	watch         string
	watchInterval time.Duration
	filters       filters
	// command is the command (config, config check, secrets set, ...) and
	// args its arguments.
	command, args []string
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	// As Telegraf: keep the keyring of secretstores.os off KWallet's D-Bus.
	os.Setenv("DISABLE_KWALLET", "1")
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

	// Erase secrets (memguard) and flush the log file on the way out.
	defer memguard.Purge()
	defer logger.CloseLogging()

	switch {
	case len(opts.command) > 0:
		err = runCommand(opts, stdout)
	case opts.version:
		fmt.Fprintln(stdout, versionString())
	case opts.usage != "":
		err = printUsage(stdout, opts.usage)
	case opts.sampleConfig:
		printSampleConfig(stdout, opts.filters)
	default:
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = runAgent(ctx, opts)
	}
	if err != nil {
		log.Printf("E! %v", err)
		return 1
	}
	return 0
}

// flagSet returns the flags that a place of the command line takes: the
// configuration files and the filters everywhere, the rest only before a
// command.
func flagSet(name string, opts *options, f *filters, stderr io.Writer, global bool) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var((*stringList)(&opts.configs), "config", "configuration file to load (repeatable)")
	fs.Var((*stringList)(&opts.configDirs), "config-directory", "directory of *.conf files to load (repeatable)")
	fs.Var((*filterList)(&f.section), "section-filter", "sections to print, separated by ':' "+
		"(global_tags, agent, secretstores, outputs, processors, aggregators, inputs)")
	fs.Var((*filterList)(&f.input), "input-filter", "inputs to print or enable, separated by ':'")
	fs.Var((*filterList)(&f.output), "output-filter", "outputs to print or enable, separated by ':'")
	fs.Var((*filterList)(&f.aggregator), "aggregator-filter", "aggregators to print, separated by ':'")
	fs.Var((*filterList)(&f.processor), "processor-filter", "processors to print, separated by ':'")
	fs.Var((*filterList)(&f.secretstore), "secretstore-filter", "secret stores to print or enable, separated by ':'")
	// BoolVar sets its variable to the default: a command's flags must not
	// undo the same flags given before the command.
	fs.BoolVar(&opts.debug, "debug", opts.debug, "log at debug level")
	fs.BoolVar(&opts.quiet, "quiet", opts.quiet, "log errors only")
	fs.StringVar(&opts.password, "password", opts.password, "password to unlock secret stores")
	fs.BoolVar(&opts.strictEnv, "strict-env-handling", opts.strictEnv,
		"replace environment variables only in strings (the default since Telegraf 1.38)")
	fs.BoolVar(&opts.nonStrictEnv, "non-strict-env-handling", opts.nonStrictEnv,
		"replace environment variables everywhere, as before Telegraf 1.38 (unsafe)")
	if !global {
		return fs
	}
	fs.BoolVar(&opts.once, "once", false, "gather once, write the metrics to the outputs and exit")
	fs.BoolVar(&opts.test, "test", false, "gather once, print the metrics to stdout and exit; outputs are not used")
	fs.DurationVar(&opts.testWait, "test-wait", 0, "with --test or --once, how long to wait for service inputs")
	fs.StringVar(&opts.watch, "watch-config", "", "reload the configuration when a --config file or a *.conf file of a "+
		"--config-directory changes: notify or poll (this build polls in both modes)")
	fs.DurationVar(&opts.watchInterval, "watch-interval", defaultWatchInterval, "how often --watch-config looks")
	fs.BoolVar(&opts.version, "version", false, "print the version and exit")
	fs.BoolVar(&opts.sampleConfig, "sample-config", false, "print a sample configuration (see the filters) and exit")
	fs.StringVar(&opts.usage, "usage", "", "print the sample configuration of input or output `NAME` and exit")
	fs.Var((*stringList)(&opts.selections), "select", "enable only plugins whose labels match the `selection` "+
		"(key=value pairs separated by ';', values with wildcards; repeatable: any one matches)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: telegraf [flags] [command]\n\nTelegraf %s with the telegraf-ockam plugins.\n\n"+
			"Commands:\n"+
			"  config [create]  print a sample configuration (the filters select plugins)\n"+
			"  config check     load the configuration and initialize its plugins, start nothing\n"+
			"  plugins          list the plugins of this build (--deprecated: only deprecated ones)\n"+
			"  secrets list [STORE...] | get STORE KEY | set STORE KEY VALUE\n"+
			"                   the secrets of the secret stores the configuration defines\n"+
			"  version          print the version\n\nFlags:\n", version.Telegraf)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var opts options
	fs := flagSet("telegraf", &opts, &opts.filters, stderr, true)
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if err := watchMode(opts.watch); err != nil {
		return opts, err
	}
	if opts.watchInterval <= 0 {
		return opts, fmt.Errorf("--watch-interval %v: must be positive", opts.watchInterval)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return opts, nil
	}
	switch rest[0] {
	case "config", "plugins", "secrets", "version":
	default:
		return opts, fmt.Errorf("unknown command %q (flags start with --; telegraf --help lists the commands)", rest[0])
	}
	// telegraf [flags] config [create|check] [flags]: flags may follow
	// each word, as in Telegraf; filters add up. After "secrets list|get|set"
	// come its arguments.
	opts.command = rest[:1]
	for rest = rest[1:]; ; {
		var more filters
		fs := flagSet("telegraf "+strings.Join(opts.command, " "), &opts, &more, stderr, false)
		deprecated := false
		if opts.command[0] == "plugins" {
			fs.BoolVar(&deprecated, "deprecated", false, "list only deprecated plugins")
		}
		if err := fs.Parse(rest); err != nil {
			return opts, err
		}
		opts.filters.add(more)
		if deprecated {
			opts.command = append(opts.command, "--deprecated")
		}
		rest = fs.Args()
		switch {
		case len(rest) == 0:
			return opts, nil
		case opts.command[0] == "secrets" && len(opts.command) > 1:
			opts.args = append(opts.args, rest[0])
		case (opts.command[0] == "config" || opts.command[0] == "secrets") && len(opts.command) == 1:
			opts.command = append(opts.command, rest[0])
		default:
			return opts, fmt.Errorf("unexpected argument %q after %q", rest[0], strings.Join(opts.command, " "))
		}
		rest = rest[1:]
	}
}

// runCommand runs the command of the command line.
func runCommand(opts options, stdout io.Writer) error {
	switch strings.Join(opts.command, " ") {
	case "version":
		fmt.Fprintln(stdout, versionString())
	case "plugins":
		printPlugins(stdout, false)
	case "plugins --deprecated":
		printPlugins(stdout, true)
	case "config", "config create":
		printSampleConfig(stdout, opts.filters)
	case "config check":
		return checkConfig(opts)
	case "secrets list", "secrets get", "secrets set":
		return runSecrets(opts, stdout)
	case "config migrate":
		return errors.New("config migrate is not in this build (it would compile in Telegraf's migrations " +
			"of every plugin): run a stock telegraf 1.39 config migrate, then use the result here")
	default:
		return fmt.Errorf("unknown command %q (config, config create, config check, plugins, "+
			"secrets list|get|set, version)",
			strings.Join(opts.command, " "))
	}
	return nil
}

// checkConfig loads the configuration and initializes its plugins without
// starting them (telegraf config check).
func checkConfig(opts options) error {
	if err := logger.SetupLogging(&logger.Config{Debug: opts.debug, Quiet: opts.quiet}); err != nil {
		return err
	}
	c, err := loadConfig(opts)
	if err != nil {
		return err
	}
	// As Telegraf's config check: Run sets this default, InitPlugins needs it.
	if c.Agent.SkipProcessorsAfterAggregators == nil {
		log.Printf("W! [agent] The default value of 'skip_processors_after_aggregators' will change to 'true' " +
			"with Telegraf v1.40.0! If you need the current default behavior, please explicitly set the option to 'false'!")
		skip := false
		c.Agent.SkipProcessorsAfterAggregators = &skip
	}
	return agent.NewAgent(c).InitPlugins()
}

// runAgent runs the agent until ctx ends, loading the configuration again
// on SIGHUP. --once and --test run once.
func runAgent(ctx context.Context, opts options) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	changed := make(chan struct{}, 1)
	if opts.watch != "" && !opts.once && !opts.test {
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go watchConfig(watchCtx, opts, fingerprint(opts), opts.watchInterval, changed)
		log.Printf("I! Watching the configuration for changes every %v", opts.watchInterval)
	}
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
			case <-changed:
				log.Printf("I! Configuration changed (--watch-config)")
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
	c, err := loadConfig(opts)
	if err != nil {
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

// loadConfig reads the configuration files, with the input, output and
// secret store filters applied as Telegraf applies them.
func loadConfig(opts options) (*config.Config, error) {
	if opts.strictEnv && opts.nonStrictEnv {
		return nil, errors.New("--strict-env-handling and --non-strict-env-handling cannot be used together")
	}
	config.NonStrictEnvVarHandling = opts.nonStrictEnv
	if err := config.SetPluginLabelSelections(opts.selections); err != nil {
		return nil, err
	}
	config.ResetSecrets()
	if opts.password != "" {
		config.Password = config.NewSecret([]byte(opts.password))
	}
	c := config.NewConfig()
	c.Agent.Quiet = opts.quiet
	c.TestMode = opts.test && !opts.once
	c.InputFilters = opts.filters.input
	c.OutputFilters = opts.filters.output
	c.SecretStoreFilters = opts.filters.secretstore
	files, err := configFiles(opts)
	if err != nil {
		return nil, err
	}
	// LoadAll, not LoadConfig: it also orders processors and links secrets.
	if err := c.LoadAll(files...); err != nil {
		return nil, err
	}
	return c, nil
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
