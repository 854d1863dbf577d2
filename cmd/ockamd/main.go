// Command ockamd receives metrics from devices over telegraf-ockam secure
// channels and writes them straight to InfluxDB: the receiving side of
// telegraf-ockam without a gateway Telegraf.
//
// It runs the receiving engine (package receiver: accept, verify, authorize,
// parse, stamp) that Telegraf runs as inputs.ockam_listener, configured from
// the [listener] table of its configuration file with the plugin's options
// and checks, and delivers to a Sink of its own (internal/sink) that writes
// each message to InfluxDB with a blocking write and only then answers the
// device: an ack once InfluxDB stored the points, a permanent nack when
// InfluxDB refused them, a transient nack otherwise.
//
// Usage:
//
//	ockamd --config /etc/ockamd/ockamd.toml
//	ockamd --config ockamd.toml --check   # check the configuration, the vault and the credential, then exit
//	ockamd --sample-config                # print a commented configuration
//	ockamd --version
//
// SIGINT and SIGTERM stop it: from then on new messages are nacked
// (transient), the writes under way finish (within shutdown_timeout) and are
// answered, the channels are closed, and ockamd exits with status 0. It exits
// with 1 when it cannot start, and 2 on a usage error. See README.md.
package main

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
	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/logger"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/cmd/ockamd/internal/sink"
	"github.com/ockam-addons/telegraf-ockam/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	config       string
	check        bool
	sampleConfig bool
	version      bool
}

// run is main without the exit, so that deferred cleanups run.
func run(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "ockamd: error: %v\n", err)
		return 2
	}
	switch {
	case opts.version:
		fmt.Fprintln(stdout, versionString())
		return 0
	case opts.sampleConfig:
		fmt.Fprint(stdout, sampleConfig)
		return 0
	}
	defer memguard.Purge() // the secrets of the configuration

	cfg, err := loadConfig(opts.config)
	if err != nil {
		fmt.Fprintf(stderr, "ockamd: error: %s: %v\n", opts.config, err)
		return 1
	}
	err = logger.SetupLogging(&logger.Config{
		Debug:        cfg.debug,
		Quiet:        cfg.quiet,
		LogFormat:    cfg.logFormat,
		InstanceName: "ockamd",
	})
	if err != nil {
		fmt.Fprintf(stderr, "ockamd: error: logging: %v\n", err)
		return 1
	}
	defer logger.CloseLogging()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// No reload: the listener re-reads its credential and revocation list
	// by itself; other changes need a restart. SIGHUP must not kill it.
	signal.Ignore(syscall.SIGHUP)
	if opts.check {
		err = checkOnly(cfg, stdout)
	} else {
		err = serve(ctx, cfg)
	}
	if err != nil {
		log.Printf("E! [ockamd] %v", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var opts options
	fs := flag.NewFlagSet("ockamd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.config, "config", "", "configuration file (required)")
	fs.BoolVar(&opts.check, "check", false, "check the configuration, the vault, the credential and the authorities, then exit")
	fs.BoolVar(&opts.sampleConfig, "sample-config", false, "print a commented configuration and exit")
	fs.BoolVar(&opts.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ockamd --config FILE [--check]\n\n"+
			"Receive metrics over telegraf-ockam secure channels and write them to InfluxDB.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	switch {
	case fs.NArg() > 0:
		return opts, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	case opts.config == "" && !opts.version && !opts.sampleConfig:
		return opts, errors.New("--config is required (ockamd --sample-config prints one)")
	}
	return opts, nil
}

// versionString names this build: "ockamd v0.1.0 (telegraf-ockam,
// Telegraf 1.39.3, go1.26.8)".
func versionString() string {
	return version.Line("ockamd", runtime.Version())
}

// checkOnly initializes the listener (vault, credential, authorities,
// revocation list, policy) and the writer, connects to nothing, and prints
// what it would run.
func checkOnly(cfg *daemonConfig, stdout io.Writer) error {
	w, err := initialize(cfg)
	if err != nil {
		return err
	}
	w.Close()
	where := cfg.listener.ServiceAddress
	if cfg.listener.RelayAddress != "" {
		where = strings.TrimPrefix(fmt.Sprintf("%s and relay %s as %q", where, cfg.listener.RelayAddress,
			cfg.listener.RelayName), " and ")
	}
	fmt.Fprintf(stdout, "ockamd: configuration OK: listener %s (vault %s); InfluxDB %s, bucket %q%s\n",
		where, cfg.listener.VaultPath, cfg.writer.URL, cfg.writer.Bucket, routing(cfg))
	return nil
}

// initialize runs the listener's Init (it opens no socket) and returns the
// InfluxDB writer (it connects to nothing). Each gets its logger and its
// internal metrics.
func initialize(cfg *daemonConfig) (*sink.Writer, error) {
	l := cfg.listener
	l.Log = logger.New("inputs", "ockam_listener", "")
	l.Statistics = selfstat.NewCollector(nil)
	if err := l.Init(); err != nil {
		return nil, fmt.Errorf("[listener] %w", err)
	}
	wc := cfg.writer
	wc.Log = logger.New("ockamd", "influxdb", "")
	wc.Statistics = selfstat.NewCollector(nil)
	w, err := sink.NewWriter(wc)
	if err != nil {
		return nil, fmt.Errorf("[influxdb] %w", err)
	}
	return w, nil
}

// serve runs the listener and the writer until ctx ends, then shuts down.
func serve(ctx context.Context, cfg *daemonConfig) error {
	logf := logger.New("", "ockamd", "")
	l := cfg.listener
	w, err := initialize(cfg)
	if err != nil {
		return err
	}
	defer w.Close()
	var h *healthServer
	if cfg.healthAddress != "" {
		if h, err = startHealth(cfg.healthAddress, w, logf); err != nil {
			return fmt.Errorf("health_address: %w", err)
		}
		defer h.close()
	}

	logf.Infof("Starting %s: writing to %s, bucket %q%s; InfluxDB token: %s", versionString(), cfg.writer.URL,
		cfg.writer.Bucket, routing(cfg), cfg.tokenSource)
	if err := w.Ping(ctx); err != nil {
		logf.Warnf("InfluxDB at %s does not answer /ping (%v): messages are nacked (transient) until it does",
			cfg.writer.URL, err)
	}
	s := sink.New(w, cfg.maxParallelWrites, l.MaxUndeliveredMessages, logf)
	r := l.Receiver()
	if err := r.Start(s); err != nil {
		s.Close()
		return err
	}
	<-ctx.Done()
	shutdown(cfg, r, s, h, logf)
	return nil
}

// routing describes bucket routing for the start-up log.
func routing(cfg *daemonConfig) string {
	if cfg.writer.BucketAttribute == "" {
		return ""
	}
	t := cfg.writer.BucketTemplate
	if t == "" {
		t = cfg.writer.Bucket + "_{{" + cfg.writer.BucketAttribute + "}}"
	}
	return fmt.Sprintf(", or %q by the sender's %s attribute", t, cfg.writer.BucketAttribute)
}

// replyGrace is how long the receiver gets to send the answers of the
// drained writes before Stop closes the channels. An answer lost here only
// makes its sender write the same points again, which InfluxDB stores once
// (same series and time).
const replyGrace = 200 * time.Millisecond

// receiverService is what shutdown needs of the receiver.
type receiverService interface{ Stop() }

// shutdown answers what it can and stops: new messages are nacked, the
// writes under way finish within shutdown_timeout and are answered, then
// the receiver closes every channel (a message still unanswered is
// delivered again by its sender) and the writes left are canceled.
func shutdown(cfg *daemonConfig, r receiverService, s *sink.Sink, h *healthServer, logf telegraf.Logger) {
	logf.Infof("Stopping: new messages are nacked (transient); waiting up to %v for the writes under way", cfg.shutdownTimeout)
	if h != nil {
		h.draining.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		logf.Warnf("Writes still under way after shutdown_timeout (%v): their senders deliver them again", cfg.shutdownTimeout)
	} else {
		time.Sleep(replyGrace)
	}
	r.Stop()
	s.Close()
	logf.Infof("Stopped")
}
