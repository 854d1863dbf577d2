package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/selfstat"

	"github.com/ockam-addons/telegraf-ockam/inlet"
	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/internal/version"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
	"github.com/ockam-addons/telegraf-ockam/trust"
)

// inletCommand returns "ockam inlet".
func inletCommand() *command {
	return &command{name: "inlet", subs: []*command{
		{name: "influxdb", summary: "serve the InfluxDB write API locally; send each write through the channel",
			usage: inletInfluxDBUsage, flags: inletInfluxDB},
	}}
}

// inletInfluxDBUsage is the --help text of "ockam inlet influxdb".
const inletInfluxDBUsage = `Usage: ockam inlet influxdb --vault DIR --credential FILE --authority FILE
                           (--address ADDR | --route HOP...) [--listen ADDR]
                           [--listener-identity ID] [--token-file FILE]
                           [--timeout D] [--max-body-size SIZE]

Serves the write endpoints of the InfluxDB HTTP API on a local address, so
that stock Telegraf (outputs.influxdb_v2; or outputs.influxdb, with
skip_database_creation = true) or any InfluxDB client can send metrics
through the secure channel of the device in --vault, to the listener at
--address, as outputs.ockam does. Each write is answered only once the
listener answered:

  204  the listener acknowledged every point (it delivered them)
  400  the listener refused points for good (policy, revoked credential,
       bad points): the client drops them; the reason is in the body
  503  no channel, no answer within --timeout, or the listener asked to
       retry: the client keeps the points and retries (Retry-After: 1)
  413  the body is over --max-body-size: Telegraf splits the batch
  401  --token-file is set and the request does not carry the token

Endpoints: POST /api/v2/write?bucket=B&precision=ns|us|ms|s (org is
ignored), POST /write?db=D&rp=R&precision=n|ns|u|us|ms|s|m|h (1.x),
GET /ping, GET /health (200 while a channel is open, else 503; with
counters). Bodies may be gzip. Every point carries its bucket ("db/rp" for
1.x) in the tag _ockam_bucket, which the gateway can route by and remove
(outputs.influxdb_v2: bucket_tag = "_ockam_bucket", exclude_bucket_tag =
true). Runs until SIGINT or SIGTERM, then finishes the writes in flight.

Flags:
  --vault DIR              the device's vault directory, or a pkcs11: spec
                           (required)
  --credential FILE        the device's credential (required; read again
                           before every connection)
  --authority FILE         the identity file of the authority (required)
  --address ADDR           the listener, as tcp://host:port, or an MQTT
                           broker and topic, mqtt://host:port/topic
  --route HOP              instead of --address, a route through relays,
                           one hop per flag: the first relay's
                           tcp://host:port, further relays, then the name
                           the listener registered (outputs.ockam's route)
  --listen ADDR            where to serve HTTP (default 127.0.0.1:8086);
                           a loopback address unless --allow-remote
  --allow-remote           allow a --listen address that is not loopback
  --listener-identity ID   pin the listener's identifier (I and 64 hex
                           digits)
  --revocation-list FILE   a signed revocation list: a listener it revokes
                           is refused, also on an open channel (re-read
                           when it changes; outputs.ockam's revocation_list)
  --revocation-source ADDR the authority service, tcp://host:port, asked
                           for its list every 30s; no channel opens before
                           its first answer unless a list was kept in
                           --revocation-state
  --revocation-state FILE  where the newest list from --revocation-source
                           is kept across restarts (default: the
                           credential file with ".revocation-state"
                           appended)
  --token-file FILE        require the token in this file (mode 0600) as
                           "Authorization: Token …" (1.x: also the password
                           of basic authentication, or p=)
  --timeout D              how long to wait for a channel, and for each
                           answer of the listener (default 10s); clients
                           should wait longer (Telegraf: timeout = "15s")
  --max-body-size SIZE     the largest body, compressed or not (default
                           25MiB; 26214400, 512KiB, 1MB …)
  --passphrase-file FILE   the file holding the vault passphrase
  --debug                  log every write

Anyone who can reach the inlet writes as this device: keep it on loopback,
and set --token-file when other local users must not write as the device.
`

// inletTrustNames name the trust options as the inlet's flags, in
// messages.
var inletTrustNames = trust.Names{
	Vault: "--vault", Passphrase: "--passphrase-file", Credential: "--credential",
	Authority: "--authority", Authorities: "--authority",
	RevocationList: "--revocation-list", RevocationSource: "--revocation-source", RevocationState: "--revocation-state",
}

// maxInletTokenFile bounds the token file.
const maxInletTokenFile = 4 << 10

// Shutdown: SIGTERM stops accepting writes and waits for those in flight,
// each of which may wait up to --timeout for a channel and then --timeout
// for each answer.
const shutdownMargin = 5 * time.Second

// inletInfluxDB defines "ockam inlet influxdb".
func inletInfluxDB(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	credential := fs.String("credential", "", "the device's credential")
	authority := fs.String("authority", "", "the authority's identity file")
	address := fs.String("address", "", "the listener, tcp://host:port or mqtt://host:port/topic")
	var route stringList
	fs.Var(&route, "route", "a hop of the route through relays (repeat it)")
	listen := fs.String("listen", "127.0.0.1:8086", "where to serve HTTP")
	allowRemote := fs.Bool("allow-remote", false, "allow a listen address that is not loopback")
	listenerID := fs.String("listener-identity", "", "the listener's identifier to pin")
	revocationList := fs.String("revocation-list", "", "a revocation list file checked against the listener")
	revocationSource := fs.String("revocation-source", "", "the authority service asked for its revocation list")
	revocationState := fs.String("revocation-state", "", "where the newest list from --revocation-source is kept")
	tokenFile := fs.String("token-file", "", "file holding the token clients must send")
	timeout := fs.Duration("timeout", 10*time.Second, "wait for a channel and for each answer")
	maxBody := sizeFlag(inlet.DefaultMaxBodySize)
	fs.Var(&maxBody, "max-body-size", "the largest request body")
	debug := fs.Bool("debug", false, "log every write")
	return func(e *env, args []string) error {
		if _, err := begin(e, fs, args, "vault", "credential", "authority"); err != nil {
			return err
		}
		if (*address == "") == (len(route) == 0) {
			return usagef("set either --address or --route (one --route per hop)")
		}
		if *timeout <= 0 {
			return usagef("--timeout %v: must be positive", *timeout)
		}
		if maxBody <= 0 {
			return usagef("--max-body-size %d: must be positive", int64(maxBody))
		}
		log := logger.NewLines(e.stderr, "inlet", *debug)
		token, err := readToken(*tokenFile)
		if err != nil {
			return err
		}
		defer clear(token)
		pass, err := vf.passphrase(e)
		if err != nil {
			return err
		}
		stats := selfstat.NewCollector(nil)
		out, err := newInletSender(inletOptions{
			address: *address, route: route, vault: vf.dir, passphrase: pass, credential: *credential,
			authority: *authority, listenerIdentity: *listenerID, timeout: *timeout,
			revocationList: *revocationList, revocationSource: *revocationSource, revocationState: *revocationState,
		}, log.Named("outputs.ockam"), stats)
		if err != nil {
			return withHint(err, "--vault, --credential, --authority, --address, --route, --listener-identity and "+
				"--revocation-* are outputs.ockam's vault_path, credential_path, authority_path, address, route, "+
				"listener_identity and revocation_*")
		}
		defer out.close() // releases the vault on every path; serveInlet closes the sender first
		ln, err := listenLocal(*listen, *allowRemote)
		if err != nil {
			return err
		}
		h, err := inlet.New(inlet.Config{
			Sender: out.sender, Token: token, MaxBodySize: int64(maxBody), Version: version.String(),
			Log: log, Statistics: stats,
		})
		if err != nil {
			ln.Close()
			return err
		}
		if len(token) == 0 && !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
			log.Warnf("Listening on %s without --token-file: anyone who can reach it writes as this device", ln.Addr())
		}
		out.sender.Start() // dials in the background
		return serveInlet(ln, h, out.sender, *timeout, log)
	}
}

// serveInlet serves h on ln until a signal, then shuts down: the writes in
// flight are answered before the channel is closed.
func serveInlet(ln net.Listener, h *inlet.Handler, out *sender.Sender, timeout time.Duration, log logger.Lines) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute, // the body, too: a write holds one of a few slots while it is read
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Infof("Listening on http://%s (InfluxDB write API: /api/v2/write, /write), sending to %s", ln.Addr(), out.Target())

	var err error
	select {
	case <-ctx.Done():
		log.Infof("Stopping: no new writes; waiting for those in flight")
	case err = <-served:
		err = fmt.Errorf("serve HTTP: %w", err)
	}
	stop() // a second signal kills the process
	shutdown, cancel := context.WithTimeout(context.Background(), 2*timeout+shutdownMargin)
	defer cancel()
	if serr := srv.Shutdown(shutdown); serr != nil {
		log.Warnf("Writes still in flight after %v were cut off (their clients retry): %v", 2*timeout+shutdownMargin, serr)
		_ = srv.Close()
	}
	out.Close()
	if counters := h.Counters(); counters != nil {
		log.Infof("Stopped: %d writes acknowledged, %d refused, %d unavailable; %d points acknowledged",
			counters["ockam_inlet.writes_acked"], counters["ockam_inlet.writes_refused"],
			counters["ockam_inlet.writes_unavailable"], counters["ockam_inlet.metrics_acked"])
	}
	return err
}

// inletOptions are the flags of "ockam inlet influxdb" that configure its
// sender.
type inletOptions struct {
	address          string
	route            []string
	vault            string
	passphrase       []byte // wiped by newInletSender
	credential       string
	authority        string
	listenerIdentity string
	timeout          time.Duration
	revocationList   string
	revocationSource string
	revocationState  string
}

// inletSender is the inlet's sender and the trust loader it sends with.
type inletSender struct {
	sender *sender.Sender
	trust  *trust.Trust
	log    logger.Logger
}

// newInletSender opens the device's trust files and returns a sender to
// the listener, not yet started; its errors name the flags. It counts in
// stats as outputs.ockam does (measurement internal_ockam).
func newInletSender(o inletOptions, log logger.Logger, stats *selfstat.Collector) (*inletSender, error) {
	defer clear(o.passphrase)
	target, err := sender.ParseTarget(o.address, o.route)
	if err != nil {
		return nil, err
	}
	var pin secure.Identifier
	if o.listenerIdentity != "" {
		if pin, err = secure.ParseIdentifier(o.listenerIdentity); err != nil {
			return nil, fmt.Errorf("--listener-identity: %w", err)
		}
	}
	t, err := trust.Open(sender.TrustConfig(trust.Config{
		Vault:          o.vault,
		Passphrase:     o.passphrase,
		Credential:     o.credential,
		Authority:      o.authority,
		RevocationList: o.revocationList,
		Revocation: trust.RevocationConfig{
			Source: o.revocationSource,
			State:  o.revocationState,
		},
		Names: inletTrustNames,
		Log:   log,
	}))
	if err != nil {
		return nil, err
	}
	s, err := sender.New(sender.Config{
		Target:           target,
		Trust:            t,
		ListenerIdentity: pin,
		Timeout:          o.timeout,
		CredentialPath:   o.credential,
		Log:              log,
		Stats:            sender.NewStats(func(field string) sender.Counter { return stats.Register("ockam", field, nil) }),
	})
	if err != nil {
		_ = t.Close()
		return nil, err
	}
	return &inletSender{sender: s, trust: t, log: log}, nil
}

// close closes the sender, then the trust loader (the vault).
func (s *inletSender) close() {
	s.sender.Close()
	if err := s.trust.Close(); err != nil {
		s.log.Warnf("%v", err)
	}
}

// listenLocal listens on addr (host:port), refusing an address that is not
// loopback unless allowRemote: the inlet writes as this device for whoever
// reaches it, over plain HTTP.
func listenLocal(addr string, allowRemote bool) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() && !allowRemote {
		ln.Close()
		bound := ip.String()
		if ip.IsUnspecified() {
			bound = "every interface"
		}
		return nil, withHint(fmt.Errorf("--listen %s is not a loopback address (it binds %s): whoever reaches the inlet "+
			"writes as this device, over plain HTTP", addr, bound),
			"listen on 127.0.0.1 or [::1], or pass --allow-remote (with --token-file) if the network in front of it is yours")
	}
	return ln, nil
}

// readToken reads the token file, without one trailing newline. The file
// must be readable by its owner only.
func readToken(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := readBounded(path, maxInletTokenFile, true) // its errors name path (and give a hint)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("--token-file %s is empty", path)
	}
	return b, nil
}

// sizeFlag is a byte size flag: a number of bytes, or a number with a unit
// (KiB, MiB, KB, MB …), as in Telegraf's configuration.
type sizeFlag int64

// String prints the size in bytes.
func (s *sizeFlag) String() string { return fmt.Sprint(int64(*s)) }

// Set parses a size.
func (s *sizeFlag) Set(v string) error {
	var c config.Size
	if err := c.UnmarshalText([]byte(v)); err != nil || v == "" {
		return errors.New("want a size such as 26214400, 512KiB or 25MiB")
	}
	*s = sizeFlag(c)
	return nil
}
