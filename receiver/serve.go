package receiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// server is the state of a started Receiver.
type server struct {
	ln      net.Listener    // the service (TCP or MQTT), nil without one
	relay   net.Listener    // the relay registration, nil without one
	control net.Listener    // the control endpoint, nil without one
	stop    func()          // cancels the context of every goroutine
	ctx     context.Context // of every goroutine; canceled by Stop
	running sync.WaitGroup  // every goroutine Start began
	sink    Sink
	// keepsCopies: the sink keeps a copy of each message (CopyKeeper).
	keepsCopies bool

	// undelivered is the semaphore of max_undelivered_messages: a slot is
	// taken before Sink.Deliver and given back by its done.
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

	refusals    onceSet        // (sender, reason) pairs already logged
	identityLog rateLimit      // channels_over_identity_limit warnings
	rejectLog   rateLimit      // connections_rejected warnings
	throttleLog rateLimit      // connections_throttled warnings
	stallLog    rateLimit      // byte_limit_stalls warnings
	acceptLog   rateLimit      // Accept errors
	endpointLog rateLimit      // control endpoint refusals and errors
	refusalLog  keyedRateLimit // handshake refusals, per identity (or source) and reason
}

// Start listens on the service address and registers at the relay, and
// serves every connection in its own goroutine until Stop, delivering to
// sink. It returns an error if it cannot listen.
func (r *Receiver) Start(sink Sink) error {
	ln, err := r.listenService()
	if err != nil {
		return err
	}
	var rl net.Listener
	if r.cfg.RelayAddress != "" {
		rl, err = relay.Listen(relay.ListenConfig{
			Relay: r.cfg.RelayAddress,
			Name:  r.cfg.RelayName,
			Credentials: func() (*secure.LocalIdentity, *secure.Credential, error) {
				cur := r.trust.Current()
				return cur.Identity, cur.Credential, nil
			},
			Logger: r.log,
		})
		if err != nil {
			if ln != nil {
				ln.Close()
			}
			return fmt.Errorf("relay_address %q: %w", r.cfg.RelayAddress, err)
		}
	}
	var cl net.Listener
	if r.cfg.ControlSocket != "" {
		ucl, err := listenControl(r.cfg.ControlSocket)
		if err != nil {
			for _, l := range []net.Listener{ln, rl} {
				if l != nil {
					l.Close()
				}
			}
			return fmt.Errorf("control_socket: %w", err)
		}
		cl = ucl
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.server = server{
		ln:          ln,
		relay:       rl,
		control:     cl,
		stop:        cancel,
		ctx:         ctx,
		sink:        sink,
		keepsCopies: keepsCopies(sink),
		undelivered: make(chan struct{}, r.cfg.MaxUndeliveredMessages),
		connections: make(chan struct{}, r.cfg.MaxConnections),
		handshaking: newKeyedLimit(r.cfg.MaxHandshakesPerIP),
		perIdentity: newKeyedLimit(r.cfg.MaxChannelsPerIdentity),
		budget:      newByteBudget(r.cfg.MaxUndeliveredBytesPerChannel, r.cfg.MaxUndeliveredBytesPerIdentity),
	}
	r.running.Add(1)
	go func() {
		// revocation_list, credential_path, the vault and revocation_source
		defer r.running.Done()
		r.trust.Run(ctx, r.cfg.RevocationCheckInterval)
	}()
	if ln != nil {
		r.running.Add(1)
		go r.acceptLoop(ctx, ln)
		r.log.Infof("Listening on %s as %s", ln.Addr(), r.trust.Current().Identity.Identifier())
	}
	if cl != nil {
		r.running.Add(1)
		go r.serveControl(ctx, cl)
		r.log.Infof("Control endpoint on %s (%d instructions pending)", r.cfg.ControlSocket, r.pending.Len())
	}
	if rl != nil {
		r.running.Add(1)
		go r.acceptLoop(ctx, rl)
		r.log.Infof("Registering as %q at relay %s as %s", r.cfg.RelayName, r.cfg.RelayAddress, r.trust.Current().Identity.Identifier())
	}
	return nil
}

// keepsCopies reports whether s keeps a copy of each message until done.
func keepsCopies(s Sink) bool {
	k, ok := s.(CopyKeeper)
	return ok && k.KeepsCopies()
}

// Addr returns the address of the service, nil without one or before
// Start.
func (r *Receiver) Addr() net.Addr {
	if r.ln == nil {
		return nil
	}
	return r.ln.Addr()
}

// ServeConn serves a connection that a carrier of the caller's accepted,
// as the accept loop serves one: it waits for a max_connections slot, but
// takes no max_handshakes_per_ip slot. Call it between Start and Stop; Stop
// ends the connection and waits for it.
func (r *Receiver) ServeConn(nc net.Conn) {
	select {
	case r.connections <- struct{}{}:
	case <-r.ctx.Done():
		nc.Close()
		return
	}
	r.running.Add(1)
	go r.serve(r.ctx, nc, func() {})
}

// listenService listens on the service address: a TCP port, or an MQTT
// broker's topic. It returns nil without one.
func (r *Receiver) listenService() (net.Listener, error) {
	switch r.cfg.Network {
	case "":
		return nil, nil
	case "mqtt":
		opts := mqtt.Options{Username: r.cfg.MQTTUsername, MaxSessions: r.cfg.MaxConnections, Logger: r.log}
		if r.cfg.MQTTPassword != nil {
			password, err := r.cfg.MQTTPassword()
			if err != nil {
				return nil, fmt.Errorf("mqtt_password: %w", err)
			}
			opts.Password = password
		}
		ln, err := mqtt.Listen(r.cfg.Address, opts)
		if err != nil {
			return nil, fmt.Errorf("service_address %q: %w", r.cfg.Address, err)
		}
		return ln, nil
	}
	ln, err := net.Listen(r.cfg.Network, r.cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("service_address %q: %w", r.cfg.Network+"://"+r.cfg.Address, err)
	}
	return ln, nil
}

// Stop closes the listeners and every connection, and returns once every
// goroutine has ended; then it closes the trust files. Messages still
// awaiting delivery are not answered: their senders deliver them again.
// Their done may still be called, and does nothing.
func (r *Receiver) Stop() {
	if r.stop == nil {
		return
	}
	r.stop()
	for _, ln := range []net.Listener{r.ln, r.relay, r.control} {
		if ln != nil {
			ln.Close()
		}
	}
	if r.control != nil {
		_ = os.Remove(r.cfg.ControlSocket)
	}
	r.running.Wait()
	r.stop = nil
	if err := r.trust.Close(); err != nil {
		r.log.Warnf("%v", err)
	}
}

// acceptLoop accepts the connections of ln until it is closed.
func (r *Receiver) acceptLoop(ctx context.Context, ln net.Listener) {
	defer r.running.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			if r.acceptLog.allow(time.Now(), time.Minute) {
				r.log.Errorf("Accepting a connection failed (retrying): %v", err)
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
		if !r.handshaking.acquire(source) {
			r.stats.connectionsThrottled.Incr(1)
			go nc.Close() // an MQTT session's close waits for the broker: never in the accept loop
			if r.throttleLog.allow(time.Now(), time.Minute) {
				r.log.Warnf("Rejected a connection from %s: %d handshakes from %s already under way "+
					"(max_handshakes_per_ip); further rejections are counted in connections_throttled "+
					"and logged at most once a minute", nc.RemoteAddr(), r.cfg.MaxHandshakesPerIP, source)
			}
			continue
		}
		select {
		case r.connections <- struct{}{}:
		default:
			r.handshaking.release(source)
			r.stats.connectionsRejected.Incr(1)
			go nc.Close()
			if r.rejectLog.allow(time.Now(), time.Minute) {
				r.log.Warnf("Rejected a connection from %s: max_connections (%d) reached; "+
					"further rejections are counted in connections_rejected and logged at most once a minute",
					nc.RemoteAddr(), r.cfg.MaxConnections)
			}
			continue
		}
		r.running.Add(1)
		go r.serve(ctx, nc, func() { r.handshaking.release(source) })
	}
}

// serve runs one connection: the handshake, then the receive loop, with a
// writer goroutine for the replies while there are any. handshakeDone gives back the handshake
// slot of the connection's source address.
func (r *Receiver) serve(ctx context.Context, nc net.Conn, handshakeDone func()) {
	defer r.running.Done()
	defer func() { <-r.connections }()
	defer nc.Close()

	c := newConn(nc)
	stop := context.AfterFunc(ctx, func() { c.shutdown(CloseStopping) })
	defer stop()
	defer c.shutdown("")

	ch, err := r.handshake(c)
	handshakeDone()
	if err != nil {
		r.handshakeFailed(ctx, c, err)
		return
	}
	defer r.perIdentity.release(ch.Peer().Identifier.String()) // taken by admit
	parser, err := newParser()
	if err != nil { // checked in Init
		ch.Close("internal error")
		r.log.Errorf("Line protocol parser: %v", err)
		return
	}
	c.ch, c.peer, c.parser = ch, ch.Peer(), parser
	c.key = c.peer.Identifier.String()
	c.grant = r.policy.grant(c.peer.Credential.Attributes)
	c.tags = r.tagsFor(c.peer)
	r.stats.handshakesOK.Incr(1)
	r.stats.channelsOpen.Incr(1)
	defer r.stats.channelsOpen.Incr(-1)
	r.log.Debugf("Channel from %s open: %s", c.remote, c.peer.Identifier.Short())

	r.track(c)
	defer r.untrack(c)

	c.touch()
	if d := time.Duration(r.cfg.ReadTimeout); d > 0 {
		idle := c.watchIdle(d)
		defer idle.Stop()
	}
	c.open()
	reason := r.receiveLoop(c)
	c.closeAfterReplies(reason)
	<-c.writerDone
	r.log.Debugf("Channel from %s (%s) closed: %s", c.remote, c.peer.Identifier.Short(), c.closeReason())
}

// handshake runs the responder's side of the handshake within
// handshake_timeout.
func (r *Receiver) handshake(c *conn) (*secure.Channel, error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Duration(r.cfg.HandshakeTimeout))
	defer cancel()
	// With a revocation_source, no handshake before a list at least as
	// new as the persisted one (fail-closed): wait for it within the
	// handshake's time.
	if err := r.trust.WaitReady(ctx); err != nil {
		return nil, err
	}
	cur := r.trust.Current() // the purpose key current when the connection came
	t := secure.NewStreamTransport(&helloGuard{Conn: c.nc})
	admitted := ""
	ch, err := secure.Accept(ctx, t, secure.HandshakeConfig{
		Identity:   cur.Identity,
		Credential: cur.Credential,
		Verifier:   cur.Verifier,
		Now:        r.now,
		// max_received_message_size: a larger message is nacked for good
		MaxMessageSize: r.cfg.MaxReceivedMessageSize,
		Admit: func(p *secure.Peer) error {
			// A compromised device must not hold every connection slot
			// with its one credential (docs/SECURITY.md, W5).
			if !r.perIdentity.acquire(p.Identifier.String()) {
				return &secure.RefusalError{Code: secure.RefusedTooManyChannels,
					Err: fmt.Errorf("it has %d channels open already (max_channels_per_identity)", r.cfg.MaxChannelsPerIdentity)}
			}
			admitted = p.Identifier.String()
			return nil
		},
	})
	if err != nil && admitted != "" {
		r.perIdentity.release(admitted) // the accept was not sent
	}
	return ch, err
}

// handshakeFailed counts and logs a failed handshake, unless the listener
// is stopping.
func (r *Receiver) handshakeFailed(ctx context.Context, c *conn, err error) {
	if ctx.Err() != nil {
		return
	}
	if re, ok := errors.AsType[*secure.RefusalError](err); ok && re.Code == secure.RefusedTooManyChannels {
		r.stats.channelsOverIdentityLimit.Incr(1)
		if r.identityLog.allow(time.Now(), time.Minute) {
			r.log.Warnf("Refused a channel from %s (%v); "+
				"further refusals are counted in channels_over_identity_limit and logged at most once a minute",
				c.remote, err)
		}
		return
	}
	reason := handshakeReason(err)
	r.stats.handshakesFailed[reason].Incr(1)
	if credentialReasons[reason] {
		// A device that needs its operator: expired, revoked, foreign.
		// It was told why and backs off, but it keeps dialing until its
		// operator acts: say it once per identity and reason per interval.
		pe, known := errors.AsType[*secure.PeerError](err)
		if !known {
			r.log.Infof("Handshake from %s failed (%s): %v", c.remote, reason, err)
		} else if r.refusalLog.allow(pe.Identifier.String()+" "+reason, time.Now(), refusalLogInterval) {
			r.log.Infof("Handshake from %s failed (%s), the device was told: %v; "+
				"further refusals of this device for this reason are counted in handshakes_failed and logged at most every %v",
				c.remote, reason, err, refusalLogInterval)
		} else {
			r.log.Debugf("Handshake from %s failed (%s): %v", c.remote, reason, err)
		}
	} else {
		// Scanners, plaintext clients, broken links: expected noise.
		r.log.Debugf("Handshake from %s failed (%s): %v", c.remote, reason, err)
	}
}

// receiveLoop handles data messages until the channel fails, the peer
// closes it, or a message requires closing it. It returns the reason to
// send in the close message.
func (r *Receiver) receiveLoop(c *conn) string {
	for {
		m, err := c.ch.Receive()
		if err != nil {
			return r.receiveFailed(c, err)
		}
		c.touch()
		switch {
		case m.Type == secure.TypeData:
			r.stats.bytesReceived.Incr(int64(len(m.Payload)))
			if closeReason, ok := r.handle(c, m); !ok {
				return closeReason
			}
		case m.Type == secure.TypeReady && r.pending != nil:
			if err := r.ready(c, m); err != nil {
				return r.receiveFailed(c, err)
			}
		case m.Type == secure.TypeOutcome && r.pending != nil:
			r.stats.bytesReceived.Incr(int64(len(m.Payload)))
			if closeReason, ok := r.outcome(c, m); !ok {
				return closeReason
			}
		default:
			// A device sends data, rekey and close (docs/PROTOCOL.md,
			// section 9; Receive handles the last two), and to a gateway
			// configured for control ready and outcome (section 17.5).
			return r.receiveFailed(c, fmt.Errorf("%w: %v message from a device", secure.ErrMalformed, m.Type))
		}
	}
}

// receiveFailed logs why a channel ended and returns the close reason.
func (r *Receiver) receiveFailed(c *conn, err error) string {
	switch {
	case c.ctx.Err() != nil:
		return "" // shut down: the reason is already set
	case errors.Is(err, secure.ErrClosed):
		r.log.Debugf("Channel from %s (%s): %v", c.remote, c.peer.Identifier.Short(), err)
		return ""
	case isEOF(err) && !errors.Is(err, io.ErrUnexpectedEOF):
		// Between frames: the peer or the network ended it.
		r.log.Debugf("Channel from %s (%s) ended: %v", c.remote, c.peer.Identifier.Short(), err)
		return ""
	}
	// A tampered, replayed, injected, cut or malformed message.
	reason := channelFailureReason(err)
	r.stats.channelsFailed[reason].Incr(1)
	r.log.Infof("Channel from %s (%s) failed (%s): %v", c.remote, c.peer.Identifier.Short(), reason, err)
	return "protocol error"
}

// track registers c's open channel for closeRevoked. A list applied
// between the handshake's check and now is caught here: closeRevoked did
// not see c.
func (r *Receiver) track(c *conn) {
	r.channelsMu.Lock()
	if r.channels == nil {
		r.channels = make(map[*conn]struct{})
	}
	r.channels[c] = struct{}{}
	r.channelsMu.Unlock()
	if errors.Is(r.verifier.CheckCurrent(c.peer.Credential, r.now()), secure.ErrRevoked) {
		r.log.Infof("Channel from %s (%s) closed: revoked", c.remote, c.peer.Identifier.Short())
		c.shutdown(ReasonRevoked)
	}
}

// untrack removes c once its channel has ended.
func (r *Receiver) untrack(c *conn) {
	r.channelsMu.Lock()
	delete(r.channels, c)
	r.channelsMu.Unlock()
}

// closeRevoked closes, with reason "revoked", the channels of the
// identities that the current revocation lists revoke. The loader calls it
// as soon as a new list is applied (trust.Config.OnRevocation), so an idle
// channel of a revoked device does not stay open until its next message or
// read_timeout (docs/SECURITY.md, W14). Messages of these channels still
// awaiting delivery are not answered. It does not block: shutdown only
// hands the close to the channel's writer.
func (r *Receiver) closeRevoked() {
	now := r.now()
	var revoked []*conn
	r.channelsMu.Lock()
	for c := range r.channels {
		// The credential was verified in the handshake; only revocation
		// is new. An expired one is left to the next message, whose
		// transient nack makes the device reload its credential.
		if c.ctx.Err() == nil && errors.Is(r.verifier.CheckCurrent(c.peer.Credential, now), secure.ErrRevoked) {
			revoked = append(revoked, c)
		}
	}
	r.channelsMu.Unlock()
	for _, c := range revoked {
		c.shutdown(ReasonRevoked)
	}
	if len(revoked) > 0 {
		// Once per list: not a per-channel flood.
		r.log.Infof("Closed %d channels of identities revoked by the new revocation list (first: %s from %s)",
			len(revoked), revoked[0].peer.Identifier.Short(), revoked[0].remote)
	}
}
