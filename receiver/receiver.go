// Package receiver is the receiving engine of telegraf-ockam: it accepts
// secure channels from devices (secure.Accept), checks every data message
// against the sender's credential, the revocation list, the policy and
// InfluxDB's rules, stamps the verified identity and attributes as tags, and
// hands the metrics to a Sink; each message is answered with an ack once
// the Sink delivered it, or with a nack.
//
// It imports no Telegraf plugin machinery: inputs.ockam_listener is a Sink
// over Telegraf's tracking accumulator, ockamd a Sink over its InfluxDB
// writer. The wire protocol is docs/PROTOCOL.md; the ack and nack contract
// is plugins/inputs/ockam_listener/README.md, "Acknowledgements".
package receiver

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/influxdata/telegraf"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/trust"
)

// Sink takes the metrics of each data message the receiver accepted.
//
// Deliver must return promptly: it runs on the channel's reader, which
// reads nothing more meanwhile. It calls done exactly once, on any goroutine
// and at any time (before Deliver returns included), with the outcome; the
// receiver answers the message with it. Until done, the message holds one of
// Config.MaxUndeliveredMessages slots and its bytes under
// Config.MaxUndeliveredBytesPerChannel and PerIdentity: a Sink that never
// calls done stops its senders, not the receiver's memory. Calling done
// twice is a bug and panics. Deliver is called concurrently, for messages
// of different channels; metrics belong to the Sink from the call on.
type Sink interface {
	Deliver(peer Peer, metrics []telegraf.Metric, done func(Outcome))
}

// CopyKeeper may be implemented by a Sink that keeps a copy of each
// message's metrics until done, to deliver it again (inputs.ockam_listener
// does, under Telegraf's accumulator): with KeepsCopies true, a message
// counts twice under the byte budget.
type CopyKeeper interface {
	KeepsCopies() bool
}

// ReplaySink may be implemented by a Sink that delivers a message again
// (inputs.ockam_listener does, under Telegraf's accumulator). The receiver
// then calls DeliverReplayable in place of Deliver, with again: each call
// returns a new set of the message's metrics as they were handed over
// (the same points, timestamps and stamped tags), parsed again from the
// message's payload, which the receiver keeps until done. It spares the
// Sink a copy of every metric up front for a replay that is rare. again is
// nil unless the Sink is a CopyKeeper whose KeepsCopies is true.
type ReplaySink interface {
	Sink
	DeliverReplayable(peer Peer, metrics []telegraf.Metric, again func() []telegraf.Metric, done func(Outcome))
}

// Peer is the verified sender of a message.
type Peer struct {
	// Identifier is the sender's identity, proven in the handshake.
	Identifier secure.Identifier
	// Attributes are those of its credential (do not modify).
	Attributes map[string]string
	// Remote is the address the connection came from (for logs).
	Remote string
}

// Outcome is what became of a delivered message, and so its answer.
type Outcome struct {
	// Delivered: every metric was stored (an ack).
	Delivered bool
	// Permanent: not delivered, and delivering the same metrics again cannot
	// succeed (a permanent nack; the sender drops the message). Only right
	// when the store refused the metrics for good.
	Permanent bool
	// Refusal names why the receiver's side refused a message for good: it
	// is counted as messages_refused with this reason and logged once per
	// sender, and the nack is permanent. Empty: counted as
	// messages_undelivered.
	Refusal string
	// Reason is the nack's text, for the sender's log (cut to
	// secure.MaxReason bytes); empty gives ReasonNotDelivered.
	Reason string
}

// Delivered is the outcome of a message whose metrics were all stored.
func Delivered() Outcome { return Outcome{Delivered: true} }

// Transient is the outcome of a message not delivered that its sender
// should send again later.
func Transient(reason string) Outcome { return Outcome{Reason: reason} }

// Refused is the outcome of a message that can never be delivered: the
// sender drops it. refusal is the reason tag of messages_refused (for
// example RefusedOutput); reason is the nack's text.
func Refused(refusal, reason string) Outcome {
	return Outcome{Permanent: true, Refusal: refusal, Reason: reason}
}

// ReasonNotDelivered is the transient nack of a message that the Sink did
// not deliver and gave no reason for. It sends the device's operator to the
// gateway's log.
const ReasonNotDelivered = "not delivered: the gateway's outputs did not accept it (the gateway's log has the output's error)"

// Counter is one internal metric; selfstat.Stat is one.
type Counter interface {
	Incr(v int64)
	Set(v int64)
}

// Registry returns the Counter of an internal metric: the measurement is
// the adapter's (inputs.ockam_listener and ockamd report
// internal_ockam_listener), field and tags are the receiver's (README.md of
// the plugin, "Metrics"). Asking twice for the same field and tags must give
// the same Counter.
type Registry func(field string, tags map[string]string) Counter

// Config is what a Receiver needs; the adapter has checked the settings and
// names them in its messages (inputs.ockam_listener's option names).
type Config struct {
	// Network and Address of the service: "tcp", "tcp4" or "tcp6" and
	// host:port for net.Listen; "mqtt" and a broker URL with a topic
	// (transport/mqtt); "" for none.
	Network, Address string
	// MQTTUsername and MQTTPassword (called once, by Start) log in to the
	// broker of an mqtt service.
	MQTTUsername string
	MQTTPassword func() (string, error)
	// RelayAddress and RelayName register at a relay; both empty for none.
	RelayAddress, RelayName string

	// IdentityTag and AttributeTags are the tags stamped from the verified
	// credential (identity_tag, attribute_tags).
	IdentityTag   string
	AttributeTags []string
	// Allow is the policy; none lets any valid credential write anything.
	Allow []AllowRule

	MaxConnections         int
	MaxHandshakesPerIP     int
	MaxChannelsPerIdentity int
	HandshakeTimeout       time.Duration
	ReadTimeout            time.Duration // 0: none
	MaxReceivedMessageSize int
	MaxUndeliveredMessages int

	MaxUndeliveredBytesPerChannel  int64
	MaxUndeliveredBytesPerIdentity int64

	// Trust opens the vault, credential, authorities and revocation lists.
	// New sets its OnRevocation, Stale and ExpiresIn, and its Log and Now
	// when they are nil.
	Trust trust.Config
	// RevocationCheckInterval is how often the files are checked.
	RevocationCheckInterval time.Duration

	// ControlPending is the file of the pending store of control
	// instructions (docs/PROTOCOL.md, section 17.5); "" disables control: a
	// device's ready or outcome message is then a protocol error.
	ControlPending string
	// ControlSocket is the path of the control endpoint, a Unix socket of
	// mode 0600; "" for none. It requires ControlPending.
	ControlSocket string
	// ControlLimits bound the pending store; zero is
	// control.DefaultPendingLimits.
	ControlLimits control.PendingLimits

	// Log receives the receiver's log lines (never a secret or payload).
	Log logger.Logger
	// Counters registers the internal metrics; nil keeps them internal.
	Counters Registry
	// Now is the clock of credential checks; nil is time.Now.
	Now func() time.Time
}

// Receiver accepts channels and delivers their messages to a Sink. New
// loads its trust; Start serves until Stop.
type Receiver struct {
	cfg      Config
	log      logger.Logger
	now      func() time.Time
	trust    *trust.Trust
	verifier *secure.Verifier
	policy   *policy
	reserved map[string]bool // field keys no point may carry (check.go)
	stats    *stats

	// pending holds the control instructions for devices (nil: control
	// disabled); recent those that left it answered (control.go).
	pending    *control.Pending
	recent     recentInstructions
	pendingLog rateLimit // pending store write errors

	// The channels open, for closing those of the identities a new
	// revocation list revokes as soon as it is applied (closeRevoked).
	channelsMu sync.Mutex
	channels   map[*conn]struct{}

	// Set by Start.
	server
}

// New checks cfg, compiles the policy and opens the trust files (the
// credential must be valid now). It opens no socket.
func New(cfg Config) (*Receiver, error) {
	switch {
	case cfg.MaxConnections <= 0, cfg.MaxHandshakesPerIP <= 0, cfg.MaxChannelsPerIdentity <= 0,
		cfg.MaxUndeliveredMessages <= 0, cfg.MaxUndeliveredBytesPerChannel <= 0, cfg.MaxUndeliveredBytesPerIdentity <= 0,
		cfg.MaxReceivedMessageSize <= 0, cfg.HandshakeTimeout <= 0, cfg.ReadTimeout < 0, cfg.RevocationCheckInterval <= 0:
		return nil, errors.New("receiver: every limit, timeout and interval must be positive (read_timeout: not negative)")
	}
	r := &Receiver{cfg: cfg, log: cfg.Log, now: cfg.Now}
	if r.log == nil {
		r.log = logger.Nop{}
	}
	if r.now == nil {
		r.now = time.Now
	}
	p, err := newPolicy(cfg.Allow)
	if err != nil {
		return nil, err
	}
	r.policy = p
	r.reserved = reservedFields(cfg.IdentityTag, cfg.AttributeTags)
	if _, err := newParser(); err != nil {
		return nil, fmt.Errorf("line protocol parser: %w", err)
	}
	reg := cfg.Counters
	if reg == nil {
		reg = func(string, map[string]string) Counter { return new(counter) }
	}
	r.stats = newStats(reg)
	tc := cfg.Trust
	tc.OnRevocation = r.closeRevoked
	tc.Revocation.Stale = func() { r.stats.revocationListStale.Incr(1) }
	tc.ExpiresIn = func(d time.Duration) { r.stats.credentialExpiresIn.Set(int64(d / time.Second)) }
	if tc.Log == nil {
		tc.Log = r.log
	}
	if tc.Now == nil {
		tc.Now = r.now
	}
	t, err := trust.Open(tc)
	if err != nil {
		return nil, err
	}
	r.trust, r.verifier = t, t.Verifier()
	if cfg.ControlSocket != "" && cfg.ControlPending == "" {
		t.Close()
		return nil, errors.New("receiver: a control socket needs a pending store (control_pending)")
	}
	if cfg.ControlPending != "" {
		if r.pending, err = control.OpenPending(cfg.ControlPending, r.verifier, cfg.ControlLimits, r.now()); err != nil {
			t.Close()
			return nil, err
		}
	}
	return r, nil
}

// Trust returns the loaded identity, credential, authorities and
// revocation lists.
func (r *Receiver) Trust() *trust.Trust { return r.trust }

// counter is a Counter that nobody reads: the default of Config.Counters.
type counter struct {
	mu sync.Mutex
	v  int64
}

func (c *counter) Incr(v int64) { c.mu.Lock(); c.v += v; c.mu.Unlock() }
func (c *counter) Set(v int64)  { c.mu.Lock(); c.v = v; c.mu.Unlock() }
