package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/filewatch"
	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// relayCommand returns "ockam relay".
func relayCommand() *command {
	return &command{name: "relay", subs: []*command{
		{name: "serve", summary: "run a relay that forwards channels to listeners behind NAT",
			usage: relayServeUsage, flags: relayServe},
	}}
}

// relayServeUsage is the --help text of "ockam relay serve".
const relayServeUsage = `Usage: ockam relay serve --listen tcp://HOST:PORT --authority FILE [--authority FILE ...]
                         [--revocation-list FILE] [--next-hop tcp://HOST:PORT ...]
                         [--max-connections N] [--max-connections-per-ip N]
                         [--log-level info|debug]

Runs a relay (docs/PROTOCOL.md, section 15): listeners that no device can
reach (behind NAT, no inbound port) connect out to it and register a
forwarding name; devices reach them through a route such as
  tcp://relay-a:4000 tcp://relay-b:4000 plant-7-gateway
The relay reads only routing headers: the channel is end to end, and the
relay cannot read or change what it forwards.

A listener registers a name with a credential from an --authority that
carries the attribute relay=NAME, issued with
  ockam credential issue ... --attr relay=plant-7-gateway
Another identity cannot take a name while its holder is connected.

Prints "relay listening on tcp://HOST:PORT" on stdout once listening, logs on stderr,
and stops on SIGINT or SIGTERM.

Flags:
  --listen ADDR            where to listen, tcp://HOST:PORT (required; port 0
                           picks a free one)
  --authority FILE         the identity file of an authority whose
                           credentials register names (required; repeatable)
  --revocation-list FILE   a revocation list of an authority: its revoked
                           credentials register nothing. Read again every
                           second when it changes: a registration it revokes
                           ends at once
  --next-hop ADDR          a relay, tcp://HOST:PORT, that routes may continue
                           to from here (repeatable); any other is refused, so
                           that the relay is no open proxy into its network
  --max-connections N      the most connections, incoming and outgoing
                           (default 10000)
  --max-connections-per-ip N
                           the most incoming connections from one IP
                           address (default 1024), so that one host cannot
                           hold every slot
  --log-level LEVEL        info (default) or debug (also every connection and
                           every frame that could not be forwarded)
`

// relayServe defines "ockam relay serve".
func relayServe(fs *flag.FlagSet) action {
	listen := fs.String("listen", "", "where to listen, tcp://HOST:PORT")
	var authorities, nextHops stringList
	fs.Var(&authorities, "authority", "an authority's identity file (repeatable)")
	revocations := fs.String("revocation-list", "", "a revocation list file")
	fs.Var(&nextHops, "next-hop", "a relay routes may continue to (repeatable)")
	maxConns := fs.Int("max-connections", relay.DefaultMaxConnections, "the most connections")
	maxPerIP := fs.Int("max-connections-per-ip", relay.DefaultMaxConnectionsPerIP, "the most connections from one IP address")
	logLevel := fs.String("log-level", "info", "info or debug")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "listen", "authority"); err != nil {
			return err
		}
		addr, err := parseTCPAddress("listen", *listen)
		if err != nil {
			return err
		}
		debug, ok := map[string]bool{"info": false, "debug": true}[*logLevel]
		if !ok {
			return usagef("--log-level %q: want info or debug", *logLevel)
		}
		if *maxConns <= 0 {
			return usagef("--max-connections %d: must be positive", *maxConns)
		}
		if *maxPerIP <= 0 {
			return usagef("--max-connections-per-ip %d: must be positive", *maxPerIP)
		}
		for _, h := range nextHops {
			if _, err := parseTCPAddress("next-hop", h); err != nil {
				return err
			}
		}
		cfg := relay.ServerConfig{NextHops: nextHops, MaxConnections: *maxConns, MaxConnectionsPerIP: *maxPerIP, Now: e.clock(),
			Logger: logger.NewLines(e.stderr, "relay", debug)}
		for _, path := range authorities {
			id, err := readIdentityFile(path)
			if err != nil {
				return err
			}
			cfg.Authorities = append(cfg.Authorities, id)
		}
		var watch *filewatch.Watch // the list is read through it, so that a later change is noticed
		if *revocations != "" {
			watch = filewatch.New(*revocations, maxRevocationFile)
			data, err := watch.Poll(time.Now())
			if err != nil {
				return err
			}
			if cfg.Revocations, err = secure.ParseRevocationListFile(data); err != nil {
				return fmt.Errorf("%s: %w", *revocations, err)
			}
		}
		s, err := relay.NewServer(cfg)
		if errors.Is(err, secure.ErrUnknownIssuer) {
			return withHint(err, "the revocation list must be signed by one of the --authority")
		}
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		return serveRelay(e, s, ln, cfg.Logger, watch)
	}
}

// serveRelay serves s on ln until SIGINT or SIGTERM, applying the
// revocation list that watch (if any) watches whenever it changes.
func serveRelay(e *env, s *relay.Server, ln net.Listener, log logger.Logger, watch *filewatch.Watch) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if watch != nil {
		go watchRevocations(ctx, s, watch, log)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	fmt.Fprintf(e.stdout, "relay listening on tcp://%s\n", ln.Addr())
	log.Infof("Listening on tcp://%s", ln.Addr())
	var err error
	select {
	case <-ctx.Done():
		log.Infof("Stopping")
	case err = <-served:
		err = fmt.Errorf("serve: %w", err)
	}
	stop()
	_ = s.Close()
	log.Infof("Stopped")
	return err
}

// revocationPoll is how often the relay looks at its --revocation-list.
const revocationPoll = time.Second

// watchRevocations applies the list watch watches to s whenever its
// content changes, until ctx ends. A file that cannot be read or applied
// (being written, stale, foreign) is reported once and the list in force
// stays.
func watchRevocations(ctx context.Context, s *relay.Server, watch *filewatch.Watch, log logger.Logger) {
	t := time.NewTicker(revocationPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := watch.Check(time.Now(), func(data []byte) error {
			list, err := secure.ParseRevocationListFile(data)
			if err != nil {
				return err
			}
			if err := s.UpdateRevocations(list); err != nil {
				return err
			}
			log.Infof("Applied revocation list %d of %s from %s", list.Sequence, list.Issuer.Short(), watch.Path)
			return nil
		})
		switch msg, changed := watch.Report(err); {
		case !changed:
		case msg == "":
			log.Infof("--revocation-list %s: OK again", watch.Path)
		default:
			log.Warnf("--revocation-list %s: %v; the list in force stays", watch.Path, err)
		}
	}
}
