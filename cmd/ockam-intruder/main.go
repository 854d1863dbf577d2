// Command ockam-intruder plays an attacker on the network of a gateway, for
// the compose demo and the docs: it connects to an inputs.ockam_listener and
// tries what an outsider can try, and reports whether each attempt was
// refused. The listener counts every refusal in its internal metrics
// (internal_ockam_listener handshakes_failed, by reason).
//
// Usage:
//
//	ockam-intruder --address HOST:PORT [--authority FILE] [--rounds N] [--every D]
//
// The attempts, with the reason the listener counts:
//
//	plaintext         line protocol in the clear, as to an unprotected
//	                  Telegraf                                   malformed
//	forged-hello      a handshake message 1 of another protocol
//	                  version                                    unsupported_version
//	rogue-authority   a full handshake with a credential from an authority
//	                  the listener does not trust                unknown_issuer
//	forged-signature  a credential that names the real authority as its
//	                  issuer, signed with another key            bad_signature
//
// The last two need --authority, the public identity file of the
// authority the listener's own credential comes from, to get past the
// listener's message 2; without it they are skipped. The identities and
// credentials they present are made in memory at start.
//
// Exit codes: 0 every attempt was refused; 1 one was not (the listener
// acknowledged the data, or did not close the connection in time); 2 the
// listener could not be reached or a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitRefused  = 0
	exitAccepted = 1
	exitError    = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the exit.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ockam-intruder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	address := fs.String("address", "", "host:port of the listener (required)")
	authority := fs.String("authority", "", "identity file of the listener's authority (enables the credential attempts)")
	rounds := fs.Int("rounds", 1, "how many rounds of attempts; 0 repeats until stopped")
	every := fs.Duration("every", 30*time.Second, "pause between rounds")
	timeout := fs.Duration("timeout", 5*time.Second, "how long one attempt may wait for the listener")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitRefused
		}
		return exitError
	}
	if *address == "" || fs.NArg() > 0 || *rounds < 0 || *every <= 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "ockam-intruder: error: usage: ockam-intruder --address HOST:PORT [--authority FILE] [--rounds N] [--every D]")
		return exitError
	}
	attempts, err := newAttempts(*authority, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "ockam-intruder: error: %v\n", err)
		return exitError
	}
	if *authority == "" {
		fmt.Fprintln(stderr, "ockam-intruder: no --authority: the credential attempts are skipped")
	}

	worst := exitRefused
	for round := 1; *rounds == 0 || round <= *rounds; round++ {
		if round > 1 {
			select {
			case <-ctx.Done():
				return worst
			case <-time.After(*every):
			}
		}
		for _, a := range attempts {
			actx, cancel := context.WithTimeout(ctx, *timeout)
			outcome, err := a.run(actx, *address)
			cancel()
			if ctx.Err() != nil {
				return worst
			}
			code := report(stdout, stderr, a.name, outcome, err)
			worst = max(worst, code)
		}
	}
	return worst
}

// report prints the outcome of one attempt and returns its exit code.
func report(stdout, stderr io.Writer, name string, o outcome, err error) int {
	switch o {
	case refused:
		fmt.Fprintf(stdout, "ockam-intruder: %-16s refused: %v\n", name, err)
		return exitRefused
	case accepted:
		fmt.Fprintf(stdout, "ockam-intruder: %-16s NOT REFUSED: %v\n", name, err)
		return exitAccepted
	}
	fmt.Fprintf(stderr, "ockam-intruder: %-16s error: %v\n", name, err)
	return exitError
}
