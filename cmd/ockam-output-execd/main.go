// Command ockam-output-execd runs outputs.ockam as a child of a stock
// Telegraf's outputs.execd, through Telegraf's execd shim: it reads line
// protocol on stdin and sends it to an ockam listener. See README.md: this is
// best-effort, unlike the custom Telegraf (cmd/telegraf).
//
//	ockam-output-execd --config /etc/telegraf/ockam-output.conf
//
// A batch the listener does not acknowledge is retried here, with backoff,
// while stdin is not read (backpressure), instead of being discarded as the
// shim would. SIGINT or SIGTERM stops the retries; what is not yet
// acknowledged is then lost.
//
// It is an adapter over the plugin (ockam.Output), and through it over
// package sender, rather than over the sender directly: its configuration
// file is an [[outputs.ockam]] table, which Telegraf's shim reads into the
// registered plugin (config.Secret for the passphrases, durations and
// sizes, the plugin's defaults, deprecations and Init messages), so the
// shim and the custom Telegraf take the same file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/common/shim"

	"github.com/ockam-addons/telegraf-ockam/internal/version"
	_ "github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
)

// stopGrace is how long a signal waits for the batch in hand before the
// process exits. Telegraf's execd sends SIGKILL 5 s after SIGTERM.
const stopGrace = 4 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run is main without the exit. The shim reads os.Stdin.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("ockam-output-execd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "plugin configuration file, with one [[outputs.ockam]] (required)")
	batchSize := fs.Int("batch-size", 1000, "metrics per write")
	batchTimeout := fs.Duration("batch-timeout", time.Second, "write a partial batch after this long")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Println(version.Line("ockam-output-execd", runtime.Version()))
		return 0
	}
	if *configFile == "" || fs.NArg() > 0 || *batchSize < 1 || *batchTimeout <= 0 {
		fmt.Fprintln(stderr, "ockam-output-execd: error: usage: ockam-output-execd --config FILE [--batch-size N] [--batch-timeout D]")
		return 2
	}

	s := shim.New()
	s.BatchSize, s.BatchTimeout = *batchSize, *batchTimeout
	if err := s.LoadConfig(configFile); err != nil {
		fmt.Fprintf(stderr, "ockam-output-execd: error: %s: %v\n", *configFile, err)
		return 1
	}
	if s.Output == nil {
		fmt.Fprintf(stderr, "ockam-output-execd: error: %s has no [[outputs.ockam]]\n", *configFile)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s.Output = &retryingOutput{Output: s.Output, ctx: ctx, log: s.Log(), minDelay: minRetry, maxDelay: maxRetry}
	return runOutput(ctx, s, stderr)
}

// runOutput runs the shim until stdin ends, or until a signal and then at
// most stopGrace.
func runOutput(ctx context.Context, s *shim.Shim, stderr io.Writer) int {
	done := make(chan error, 1)
	go func() { done <- s.RunOutput() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		select {
		case err = <-done:
		case <-time.After(stopGrace):
			fmt.Fprintln(stderr, "ockam-output-execd: stopped by a signal; metrics not yet acknowledged are lost")
			return 1
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "ockam-output-execd: error: %v\n", err)
		return 1
	}
	return 0
}

// retryingOutput retries a failed Write until it succeeds or ctx ends. The
// shim holds its batch lock meanwhile, so it stops reading stdin.
type retryingOutput struct {
	telegraf.Output
	ctx                context.Context
	log                telegraf.Logger
	minDelay, maxDelay time.Duration // between attempts, doubling
}

// Delays between attempts: doubling from minRetry to maxRetry. outputs.ockam
// already waits for a channel up to its timeout on each attempt.
const (
	minRetry = time.Second
	maxRetry = 30 * time.Second
)

func (r *retryingOutput) Write(metrics []telegraf.Metric) error {
	delay := r.minDelay
	for {
		err := r.Output.Write(metrics)
		if err == nil {
			return nil
		}
		if r.ctx.Err() != nil {
			return fmt.Errorf("stopping: %d metrics not acknowledged are lost: %w", len(metrics), err)
		}
		r.log.Errorf("Write of %d metrics failed, retrying in %v (stdin is not read meanwhile): %v", len(metrics), delay, err)
		t := time.NewTimer(delay)
		select {
		case <-r.ctx.Done():
			t.Stop()
			return fmt.Errorf("stopping: %d metrics not acknowledged are lost: %w", len(metrics), err)
		case <-t.C:
		}
		delay = min(2*delay, r.maxDelay)
	}
}
