package ockam_listener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// server is the state of a started Listener.
type server struct {
	ln      net.Listener   // service_address (TCP or MQTT), nil without one
	relay   net.Listener   // the relay registration, nil without relay_address
	stop    func()         // cancels the context of every goroutine
	running sync.WaitGroup // every goroutine Start began
	acc     telegraf.TrackingAccumulator
	// resend: the accumulator's results do not say why a group was not
	// delivered, so the listener finds out by sending it again (outcome.go).
	resend bool
	// Used by the delivery loop only (outcome.go).
	suspects []pendingMessage // not delivered, waiting to be probed
	probing  bool             // a probe is under way

	// undelivered is the semaphore of max_undelivered_messages: a slot is
	// taken before AddTrackingMetricGroup and given back when its delivery
	// result has been read from acc.Delivered().
	undelivered chan struct{}
	// connections holds one slot per open connection (max_connections).
	connections chan struct{}
	// handshaking counts the connections in their handshake per source
	// address (max_handshakes_per_ip).
	handshaking *keyedLimit
	// perIdentity counts the open channels of each identity
	// (max_channels_per_identity).
	perIdentity *keyedLimit
	// budget bounds the undelivered bytes per channel and per identity.
	budget *byteBudget

	mu      sync.Mutex // held around AddTrackingMetricGroup + pending insert
	pending map[telegraf.TrackingID]pendingMessage

	refusals    onceSet        // (sender, reason) pairs already logged
	identityLog rateLimit      // channels_over_identity_limit warnings
	rejectLog   rateLimit      // connections_rejected warnings
	throttleLog rateLimit      // connections_throttled warnings
	stallLog    rateLimit      // byte_limit_stalls warnings
	acceptLog   rateLimit      // Accept errors
	refusalLog  keyedRateLimit // handshake refusals, per identity (or source) and reason
	// undeliveredLog: warnings about messages the outputs did not deliver.
	undeliveredLog undeliveredLog
}

// pendingMessage is an emitted message awaiting its delivery result.
type pendingMessage struct {
	conn  *conn
	batch uint64
	size  int64 // taken from budget

	// For an accumulator without DeliveryOutcome (Telegraf's): a copy of
	// the metrics as emitted, to emit them again on their own (outcome.go).
	copies   []telegraf.Metric
	evicted  int64 // models.AgentMetricsDropped when (last) emitted
	written  int64 // models.AgentMetricsWritten when first emitted
	rejected int64 // models.AgentMetricsRejected when last emitted as a probe
	probes   int   // times emitted again as a probe
}

// Start listens on service_address and registers at the relay, and serves
// every connection in its own goroutine until Stop.
func (l *Listener) Start(acc telegraf.Accumulator) error {
	ln, err := l.listenService()
	if err != nil {
		return err
	}
	var rl net.Listener
	if l.RelayAddress != "" {
		rl, err = relay.Listen(relay.ListenConfig{
			Relay: l.RelayAddress,
			Name:  l.RelayName,
			Credentials: func() (*secure.LocalIdentity, *secure.Credential, error) {
				cur := l.trust.Current()
				return cur.Identity, cur.Credential, nil
			},
			Logger: l.Log,
		})
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("relay_address %q: %w", l.RelayAddress, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.server = server{
		ln:          ln,
		relay:       rl,
		stop:        cancel,
		acc:         acc.WithTracking(l.MaxUndeliveredMessages),
		resend:      !reportsOutcomes(acc),
		undelivered: make(chan struct{}, l.MaxUndeliveredMessages),
		connections: make(chan struct{}, l.MaxConnections),
		handshaking: newKeyedLimit(l.MaxHandshakesPerIP),
		perIdentity: newKeyedLimit(l.MaxChannelsPerIdentity),
		budget:      newByteBudget(int64(l.MaxUndeliveredBytesPerChannel), int64(l.MaxUndeliveredBytesPerIdentity)),
		pending:     make(map[telegraf.TrackingID]pendingMessage),
	}
	l.running.Add(2)
	go l.deliveryLoop(ctx)
	go func() {
		// revocation_list, credential_path, the vault and revocation_source
		defer l.running.Done()
		l.trust.Run(ctx, time.Duration(l.RevocationCheckInterval))
	}()
	if ln != nil {
		l.running.Add(1)
		go l.acceptLoop(ctx, ln)
		l.Log.Infof("Listening on %s as %s", ln.Addr(), l.trust.Current().Identity.Identifier())
	}
	if rl != nil {
		l.running.Add(1)
		go l.acceptLoop(ctx, rl)
		l.Log.Infof("Registering as %q at relay %s as %s", l.RelayName, l.RelayAddress, l.trust.Current().Identity.Identifier())
	}
	return nil
}

// listenService listens on service_address: a TCP port, or an MQTT
// broker's topic. It returns nil without a service_address.
func (l *Listener) listenService() (net.Listener, error) {
	switch l.network {
	case "":
		return nil, nil
	case "mqtt":
		opts := mqtt.Options{Username: l.MQTTUsername, MaxSessions: l.MaxConnections, Logger: l.Log}
		if !l.MQTTPassword.Empty() {
			password, err := l.MQTTPassword.Get()
			if err != nil {
				return nil, fmt.Errorf("mqtt_password: %w", err)
			}
			opts.Password = password.String()
			password.Destroy()
		}
		ln, err := mqtt.Listen(l.address, opts)
		if err != nil {
			return nil, fmt.Errorf("service_address %q: %w", l.ServiceAddress, err)
		}
		return ln, nil
	}
	ln, err := net.Listen(l.network, l.address)
	if err != nil {
		return nil, fmt.Errorf("service_address %q: %w", l.ServiceAddress, err)
	}
	return ln, nil
}

// Stop closes the listener and every connection, and returns once every
// goroutine has ended. Messages still awaiting delivery are not answered:
// their senders deliver them again.
func (l *Listener) Stop() {
	if l.stop == nil {
		return
	}
	l.stop()
	for _, ln := range []net.Listener{l.ln, l.relay} {
		if ln != nil {
			ln.Close()
		}
	}
	l.running.Wait()
	l.stop = nil
	if err := l.trust.Close(); err != nil {
		l.Log.Warnf("%v", err)
	}
	l.VaultPassphrase.Destroy()
	l.MQTTPassword.Destroy()
}

// acceptLoop accepts the connections of ln until it is closed.
func (l *Listener) acceptLoop(ctx context.Context, ln net.Listener) {
	defer l.running.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if l.acceptLog.allow(time.Now(), time.Minute) {
				l.Log.Errorf("Accepting a connection failed (retrying): %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		source := sourceOf(nc.RemoteAddr())
		if !l.handshaking.acquire(source) {
			l.stats.connectionsThrottled.Incr(1)
			go nc.Close() // an MQTT session's close waits for the broker: never in the accept loop
			if l.throttleLog.allow(time.Now(), time.Minute) {
				l.Log.Warnf("Rejected a connection from %s: %d handshakes from %s already under way "+
					"(max_handshakes_per_ip); further rejections are counted in connections_throttled "+
					"and logged at most once a minute", nc.RemoteAddr(), l.MaxHandshakesPerIP, source)
			}
			continue
		}
		select {
		case l.connections <- struct{}{}:
		default:
			l.handshaking.release(source)
			l.stats.connectionsRejected.Incr(1)
			go nc.Close()
			if l.rejectLog.allow(time.Now(), time.Minute) {
				l.Log.Warnf("Rejected a connection from %s: max_connections (%d) reached; "+
					"further rejections are counted in connections_rejected and logged at most once a minute",
					nc.RemoteAddr(), l.MaxConnections)
			}
			continue
		}
		l.running.Add(1)
		go l.serve(ctx, nc, func() { l.handshaking.release(source) })
	}
}

// deliveryLoop routes each delivery result to the connection that sent the
// message (outcome.go).
func (l *Listener) deliveryLoop(ctx context.Context) {
	defer l.running.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case info := <-l.acc.Delivered():
			l.delivered(info)
		}
	}
}

// serve runs one connection: the handshake, then the receive loop, with a
// writer goroutine for the replies while there are any. handshakeDone gives back the handshake
// slot of the connection's source address.
func (l *Listener) serve(ctx context.Context, nc net.Conn, handshakeDone func()) {
	defer l.running.Done()
	defer func() { <-l.connections }()
	defer nc.Close()

	c := newConn(nc)
	stop := context.AfterFunc(ctx, func() { c.shutdown(closeStopping) })
	defer stop()
	defer c.shutdown("")

	ch, err := l.handshake(c)
	handshakeDone()
	if err != nil {
		l.handshakeFailed(ctx, c, err)
		return
	}
	defer l.perIdentity.release(ch.Peer().Identifier.String()) // taken by admit
	ch.SetMaxMessageSize(int(l.MaxReceivedMessageSize))
	parser, err := newParser()
	if err != nil { // checked in Init
		ch.Close("internal error")
		l.Log.Errorf("Line protocol parser: %v", err)
		return
	}
	c.ch, c.peer, c.parser = ch, ch.Peer(), parser
	c.key = c.peer.Identifier.String()
	c.grant = l.policy.grant(c.peer.Credential.Attributes)
	c.tags = l.tagsFor(c.peer)
	l.stats.handshakesOK.Incr(1)
	l.stats.channelsOpen.Incr(1)
	defer l.stats.channelsOpen.Incr(-1)
	l.Log.Debugf("Channel from %s open: %s", c.remote, c.peer.Identifier.Short())

	l.track(c)
	defer l.untrack(c)

	c.touch()
	if d := time.Duration(l.ReadTimeout); d > 0 {
		idle := c.watchIdle(d)
		defer idle.Stop()
	}
	c.open()
	reason := l.receiveLoop(c)
	c.closeAfterReplies(reason)
	<-c.writerDone
	l.Log.Debugf("Channel from %s (%s) closed: %s", c.remote, c.peer.Identifier.Short(), c.closeReason())
}

// handshake runs the responder's side of the handshake within
// handshake_timeout.
func (l *Listener) handshake(c *conn) (*secure.Channel, error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Duration(l.HandshakeTimeout))
	defer cancel()
	// With a revocation_source, no handshake before a list at least as
	// new as the persisted one (fail-closed): wait for it within the
	// handshake's time.
	if err := l.trust.WaitReady(ctx); err != nil {
		return nil, err
	}
	cur := l.trust.Current() // the purpose key current when the connection came
	t := secure.NewStreamTransport(&helloGuard{Conn: c.nc})
	admitted := ""
	ch, err := secure.Accept(ctx, t, secure.HandshakeConfig{
		Identity:   cur.Identity,
		Credential: cur.Credential,
		Verifier:   cur.Verifier,
		Now:        l.now,
		Admit: func(p *secure.Peer) error {
			// A compromised device must not hold every connection slot
			// with its one credential (docs/SECURITY.md, W5).
			if !l.perIdentity.acquire(p.Identifier.String()) {
				return &secure.RefusalError{Code: secure.RefusedTooManyChannels,
					Err: fmt.Errorf("it has %d channels open already (max_channels_per_identity)", l.MaxChannelsPerIdentity)}
			}
			admitted = p.Identifier.String()
			return nil
		},
	})
	if err != nil && admitted != "" {
		l.perIdentity.release(admitted) // the accept was not sent
	}
	return ch, err
}

// handshakeFailed counts and logs a failed handshake, unless the listener
// is stopping.
func (l *Listener) handshakeFailed(ctx context.Context, c *conn, err error) {
	if ctx.Err() != nil {
		return
	}
	if re, ok := errors.AsType[*secure.RefusalError](err); ok && re.Code == secure.RefusedTooManyChannels {
		l.stats.channelsOverIdentityLimit.Incr(1)
		if l.identityLog.allow(time.Now(), time.Minute) {
			l.Log.Warnf("Refused a channel from %s (%v); "+
				"further refusals are counted in channels_over_identity_limit and logged at most once a minute",
				c.remote, err)
		}
		return
	}
	reason := handshakeReason(err)
	l.stats.handshakesFailed[reason].Incr(1)
	if credentialReasons[reason] {
		// A device that needs its operator: expired, revoked, foreign.
		// It was told why and backs off, but it keeps dialing until its
		// operator acts: say it once per identity and reason per interval.
		pe, known := errors.AsType[*secure.PeerError](err)
		if !known {
			l.Log.Infof("Handshake from %s failed (%s): %v", c.remote, reason, err)
		} else if l.refusalLog.allow(pe.Identifier.String()+" "+reason, time.Now(), refusalLogInterval) {
			l.Log.Infof("Handshake from %s failed (%s), the device was told: %v; "+
				"further refusals of this device for this reason are counted in handshakes_failed and logged at most every %v",
				c.remote, reason, err, refusalLogInterval)
		} else {
			l.Log.Debugf("Handshake from %s failed (%s): %v", c.remote, reason, err)
		}
	} else {
		// Scanners, plaintext clients, broken links: expected noise.
		l.Log.Debugf("Handshake from %s failed (%s): %v", c.remote, reason, err)
	}
}

// receiveLoop handles data messages until the channel fails, the peer
// closes it, or a message requires closing it. It returns the reason to
// send in the close message.
func (l *Listener) receiveLoop(c *conn) string {
	for {
		m, err := c.ch.Receive()
		if err != nil {
			return l.receiveFailed(c, err)
		}
		c.touch()
		if m.Type != secure.TypeData {
			// A device sends data, rekey and close only (docs/PROTOCOL.md,
			// section 9); Receive handles the last two.
			return l.receiveFailed(c, fmt.Errorf("%w: %v message from a device", secure.ErrMalformed, m.Type))
		}
		l.stats.bytesReceived.Incr(int64(len(m.Payload)))
		if closeReason, ok := l.handle(c, m); !ok {
			return closeReason
		}
	}
}

// receiveFailed logs why a channel ended and returns the close reason.
func (l *Listener) receiveFailed(c *conn, err error) string {
	switch {
	case c.ctx.Err() != nil:
		return "" // shut down: the reason is already set
	case errors.Is(err, secure.ErrClosed):
		l.Log.Debugf("Channel from %s (%s): %v", c.remote, c.peer.Identifier.Short(), err)
		return ""
	case isEOF(err) && !errors.Is(err, io.ErrUnexpectedEOF):
		// Between frames: the peer or the network ended it.
		l.Log.Debugf("Channel from %s (%s) ended: %v", c.remote, c.peer.Identifier.Short(), err)
		return ""
	}
	// A tampered, replayed, injected, cut or malformed message.
	reason := channelFailureReason(err)
	l.stats.channelsFailed[reason].Incr(1)
	l.Log.Infof("Channel from %s (%s) failed (%s): %v", c.remote, c.peer.Identifier.Short(), reason, err)
	return "protocol error"
}

// track registers c's open channel for closeRevoked. A list applied
// between the handshake's check and now is caught here: closeRevoked did
// not see c.
func (l *Listener) track(c *conn) {
	l.channelsMu.Lock()
	if l.channels == nil {
		l.channels = make(map[*conn]struct{})
	}
	l.channels[c] = struct{}{}
	l.channelsMu.Unlock()
	if errors.Is(l.verifier.CheckCurrent(c.peer.Credential, l.now()), secure.ErrRevoked) {
		l.Log.Infof("Channel from %s (%s) closed: revoked", c.remote, c.peer.Identifier.Short())
		c.shutdown(reasonRevoked)
	}
}

// untrack removes c once its channel has ended.
func (l *Listener) untrack(c *conn) {
	l.channelsMu.Lock()
	delete(l.channels, c)
	l.channelsMu.Unlock()
}

// closeRevoked closes, with reason "revoked", the channels of the
// identities that the current revocation lists revoke. The loader calls it
// as soon as a new list is applied (trust.Config.OnRevocation), so an idle
// channel of a revoked device does not stay open until its next message or
// read_timeout (docs/SECURITY.md, W14). Messages of these channels still
// awaiting delivery are not answered. It does not block: shutdown only
// hands the close to the channel's writer.
func (l *Listener) closeRevoked() {
	now := l.now()
	var revoked []*conn
	l.channelsMu.Lock()
	for c := range l.channels {
		// The credential was verified in the handshake; only revocation
		// is new. An expired one is left to the next message, whose
		// transient nack makes the device reload its credential.
		if c.ctx.Err() == nil && errors.Is(l.verifier.CheckCurrent(c.peer.Credential, now), secure.ErrRevoked) {
			revoked = append(revoked, c)
		}
	}
	l.channelsMu.Unlock()
	for _, c := range revoked {
		c.shutdown(reasonRevoked)
	}
	if len(revoked) > 0 {
		// Once per list: not a per-channel flood.
		l.Log.Infof("Closed %d channels of identities revoked by the new revocation list (first: %s from %s)",
			len(revoked), revoked[0].peer.Identifier.Short(), revoked[0].remote)
	}
}
