// Package sender is the device side of telegraf-ockam: it keeps one secure
// channel open to a listener (secure.Dial over TCP, MQTT or a route through
// relays; docs/PROTOCOL.md "Handshake"), sends line protocol in data
// messages, and waits until the listener answered each with an ack or a
// nack ("Transport messages").
//
// outputs.ockam, the execd shim (through it) and the inlet are adapters
// over it. It imports no Telegraf plugin machinery: it logs through
// internal/logger.Logger and counts through Counter.
package sender

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/trust"
)

// Defaults of the Config fields left zero.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultMaxMessageSize = 256 << 10
	// DefaultRevocationCheckInterval is how often the trust files are
	// refreshed and the open channel's listener checked against the
	// revocation lists, as in the listener.
	DefaultRevocationCheckInterval = time.Second
)

// Config says where to send and with what. Target and Trust are required.
type Config struct {
	Target Target
	// MQTTUsername and MQTTPassword authenticate to the broker of an
	// mqtt:// Target. MQTTPassword, if set, is called at every dial, so
	// that the caller keeps the secret in its own store meanwhile.
	MQTTUsername string
	MQTTPassword func() (string, error)

	// Trust is this device's identity, credential and verifier. The
	// caller opens it and closes it after Close; the Sender refreshes it
	// (Trust.Run) between Start and Close, and reloads it before each dial.
	Trust *trust.Trust
	// ListenerIdentity, if not zero, is the only listener accepted.
	ListenerIdentity secure.Identifier
	// ListenerAttributes must all be in the listener's credential.
	ListenerAttributes map[string]string

	// Timeout bounds a dial, the wait of a Send for a channel, and the
	// wait for each answer; DefaultTimeout if zero.
	Timeout time.Duration
	// MaxMessageSize is the packing target: whole lines are packed into
	// data messages of at most this many bytes (a longer line travels
	// alone). DefaultMaxMessageSize if zero; at most
	// secure.DefaultMaxMessageSize, the most a listener accepts.
	MaxMessageSize int
	// RevocationCheckInterval is how often the trust files are refreshed
	// and the open channel's listener checked against the revocation
	// lists; DefaultRevocationCheckInterval if zero.
	RevocationCheckInterval time.Duration

	// Control, if set, takes control instructions on every channel
	// (docs/PROTOCOL.md, section 17.5): it opts in with ready, so only
	// set it for a listener configured for control (control_socket);
	// another closes the channel.
	Control Control

	// CredentialPath is the credential file that Trust reads, for
	// messages.
	CredentialPath string
	// Log receives what the sender does; nothing is logged if nil.
	Log   logger.Logger
	Stats Stats
}

// TrustConfig returns cfg with the settings of a sender's trust loader:
// every dial re-reads the credential file and dials only with what it
// holds now (StrictCredential), and a device that was off past its
// credential's expiry starts, buffers, and connects once the file is
// renewed (StartExpired). Peers names "the listener" in messages.
func TrustConfig(cfg trust.Config) trust.Config {
	cfg.Peers = "the listener"
	cfg.StrictCredential = true
	cfg.StartExpired = true
	return cfg
}

// Sender keeps a channel to one listener and sends through it. Send, Peer
// and Status are safe for concurrent use; Start and Close are called once
// each, in that order.
type Sender struct {
	cfg       Config
	log       logger.Logger
	stats     Stats
	lastBatch atomic.Uint64 // the last batch id used

	// Set by Start, ended by Close.
	cancel     context.CancelFunc
	dialerDone chan struct{}
	trustDone  chan struct{} // closed when Trust.Run returned
	kick       chan struct{} // wakes the dialer from its backoff
	readers    sync.WaitGroup

	mu       sync.Mutex
	link     *link         // the current channel, nil when there is none
	links    uint64        // channels opened
	started  uint64        // dial attempts begun
	finished uint64        // the number of the last attempt that ended
	lastErr  error         // why the last attempt failed or the last link ended
	changed  chan struct{} // closed and replaced whenever link, finished or lastErr change
}

// New checks cfg and returns a Sender that connects to nothing until Start.
func New(cfg Config) (*Sender, error) {
	switch {
	case cfg.Target.kind == targetNone:
		return nil, errors.New("sender: Config.Target is required")
	case cfg.Trust == nil:
		return nil, errors.New("sender: Config.Trust is required")
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("timeout %v: must be positive", cfg.Timeout)
	case cfg.RevocationCheckInterval < 0:
		return nil, fmt.Errorf("revocation_check_interval %v: must be positive", cfg.RevocationCheckInterval)
	case cfg.MaxMessageSize < 0 || cfg.MaxMessageSize > secure.DefaultMaxMessageSize:
		return nil, fmt.Errorf("max_message_size %d: must be between 1 and %d bytes (the most a listener accepts)",
			cfg.MaxMessageSize, secure.DefaultMaxMessageSize)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RevocationCheckInterval == 0 {
		cfg.RevocationCheckInterval = DefaultRevocationCheckInterval
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	s := &Sender{cfg: cfg, log: cfg.Log, stats: cfg.Stats.orNop(), changed: make(chan struct{})}
	if s.log == nil {
		s.log = logger.Nop{}
	}
	return s, nil
}

// Start refreshes the trust files and dials the listener in the
// background; it never blocks. Send reports whether there is a channel.
func (s *Sender) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.dialerDone = make(chan struct{})
	s.kick = make(chan struct{}, 1)
	s.trustDone = make(chan struct{})
	go func() {
		// revocation lists, the credential, the vault, the revocation source
		defer close(s.trustDone)
		s.cfg.Trust.Run(ctx, s.cfg.RevocationCheckInterval)
	}()
	go s.runDialer(ctx)
}

// Close closes the channel, telling the listener why (within Timeout), and
// stops the background goroutines. It waits for them to end. Sends still
// waiting fail. It does not close Trust. Later calls return at once.
func (s *Sender) Close() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.dialerDone
	<-s.trustDone
	s.mu.Lock()
	l := s.link
	s.link = nil
	s.mu.Unlock()
	if l != nil {
		l.shutdown(closeReason, s.cfg.Timeout)
	}
	s.readers.Wait()
}

// Target returns where the channels go.
func (s *Sender) Target() Target { return s.cfg.Target }

// Peer returns the identifier of the listener that the current channel is
// open to or, when there is no channel, an error saying why: the last dial
// failed, the last channel ended, or the first dial is under way.
func (s *Sender) Peer() (secure.Identifier, error) {
	st := s.Status()
	if st.Channel == 0 {
		return secure.Identifier{}, st.Err
	}
	return st.Peer, nil
}

// Status is the state of a Sender's connection at one moment.
type Status struct {
	// Channel numbers the open channel: 1 for the first one the Sender
	// opened, 2 for the next; 0 when none is open.
	Channel uint64
	// Peer is the listener the open channel goes to.
	Peer secure.Identifier
	// Dials counts the dial attempts begun.
	Dials uint64
	// Err says why no channel is open: the last dial failed, the last
	// channel ended, or "connecting".
	Err error
}

// Status returns the state of the connection now.
func (s *Sender) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Dials: s.started}
	switch {
	case s.link != nil && !s.link.ended():
		st.Channel, st.Peer = s.link.number, s.link.peer
	case s.lastErr != nil:
		st.Err = s.lastErr
	default:
		st.Err = errors.New("connecting")
	}
	return st
}

// Control is the device's side of the control direction (docs/PROTOCOL.md,
// section 17.5): package control/agent implements it, so that the sender
// depends neither on it nor on what it applies instructions with
// (Telegraf's configuration loader among them).
type Control interface {
	// NewSession returns the session of one channel, before the channel's
	// reader starts. The sender calls Begin once the channel is up and
	// Stop once it ended.
	NewSession(ControlLink) ControlSession
}

// ControlLink is a channel as a control session speaks on it.
type ControlLink interface {
	// Send sends one message on the channel.
	Send(secure.Message) error
	// Expect registers where the ack or nack of batch goes, before the
	// message of that batch is sent.
	Expect(batch uint64, w chan<- secure.Message)
}

// ControlSession takes the instructions and chunks that arrive on one
// channel.
type ControlSession interface {
	// Begin opts the channel in to control instructions; an error means
	// the channel is unusable.
	Begin() error
	// Offer hands over an instruction's payload; it must not block for
	// long (the channel's reader calls it).
	Offer(payload []byte)
	// OfferChunk hands over an artifact chunk's body.
	OfferChunk(body []byte)
	// Stop ends the session and waits for an instruction being applied.
	Stop()
}
