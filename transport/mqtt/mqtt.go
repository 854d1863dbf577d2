// Package mqtt carries the end-to-end channel over MQTT publish/subscribe
// through a broker, as docs/PROTOCOL.md, section "MQTT transport",
// specifies: Dial gives a device one net.Conn per session, Listen gives
// the listener a net.Listener whose Accept returns one net.Conn per device
// session. The channel (secure.Dial and secure.Accept over
// secure.NewStreamTransport) runs unchanged over them; the broker sees only
// its ciphertext, and the topic names.
//
// The package does not retry: a lost broker connection fails the device's
// session (reads return an error) so that the channel above fails and its
// owner redials. Only the Listener reconnects by itself, since it serves
// every device.
package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

// Options tune Dial and Listen; the zero value of a field takes its default.
type Options struct {
	// Username and Password authenticate to the broker (MQTT CONNECT).
	// They are never logged, and never part of an address.
	Username string
	Password string
	// MaxSessions bounds the live sessions of a Listener (default
	// DefaultMaxSessions): messages that would open one more are dropped.
	MaxSessions int
	// ReceiveBudget bounds the bytes a Listener's sessions buffer together
	// unread (default msgconn.DefaultBudget): a session whose bytes find no
	// room fails, so that whoever may publish cannot exhaust memory.
	ReceiveBudget int
	// ConnectTimeout bounds the connection to the broker and the
	// subscription (default DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// Logger gets the log lines (nil: none).
	Logger logger.Logger
}

// Format prints o with its password redacted, whatever the verb, so that
// logging the options cannot leak it.
func (o Options) Format(f fmt.State, _ rune) {
	password := ""
	if o.Password != "" {
		password = "redacted"
	}
	fmt.Fprintf(f, "mqtt.Options{Username: %q, Password: %q, MaxSessions: %d, ConnectTimeout: %v}",
		o.Username, password, o.MaxSessions, o.ConnectTimeout)
}

// LogValue prints o as Format does, for log/slog.
func (o Options) LogValue() slog.Value { return slog.StringValue(fmt.Sprint(o)) }

// Defaults of Options.
const (
	DefaultMaxSessions    = 10000
	DefaultConnectTimeout = 10 * time.Second
)

const (
	qos = 1 // at least once, and in order per topic and client
	// closeTimeout bounds what Close waits for: the "session closed"
	// message and the MQTT DISCONNECT.
	closeTimeout = 2 * time.Second
	// keepAlive is the MQTT keep-alive: a silent broker is noticed within
	// about keepAlive + pingTimeout.
	keepAlive   = 30 * time.Second
	pingTimeout = 10 * time.Second
	// sidLen is the length of a session id: 16 random bytes in lowercase hex.
	sidLen = 32
)

func (o Options) withDefaults() Options {
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.ReceiveBudget <= 0 {
		o.ReceiveBudget = msgconn.DefaultBudget
	}
	if o.Logger == nil {
		o.Logger = logger.Nop{}
	}
	return o
}

// clientOptions are the paho options both roles share: MQTT 3.1.1, a clean
// session, no automatic reconnection or retry (the caller decides), and
// in-order delivery to the handlers, which therefore must not block.
func clientOptions(u *URL, o Options, clientID string) *paho.ClientOptions {
	co := paho.NewClientOptions().
		AddBroker(u.Broker).
		SetClientID(clientID).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetKeepAlive(keepAlive).
		SetPingTimeout(pingTimeout).
		SetConnectTimeout(o.ConnectTimeout)
	if o.Username != "" {
		co.SetUsername(o.Username)
	}
	if o.Password != "" {
		co.SetPassword(o.Password)
	}
	return co
}

// newSID returns a new session id: 16 random bytes as 32 lowercase hex.
func newSID() string {
	var b [sidLen / 2]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}

// validSID reports whether s is a session id: exactly 32 lowercase hex.
func validSID(s string) bool {
	if len(s) != sidLen {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// publisher publishes one session's messages on one topic, in order.
type publisher struct {
	client paho.Client
	topic  string
	// turn is held from a Publish call until paho has queued the message,
	// so that messages reach paho's single writer in the order of Send
	// even when an aborted Send leaves its Publish call behind.
	turn chan struct{}
}

func newPublisher(client paho.Client, topic string) *publisher {
	return &publisher{client: client, topic: topic, turn: make(chan struct{}, 1)}
}

// send publishes a copy of p (paho keeps the payload until the PUBACK) and
// waits for the broker's PUBACK or for abort. It is a msgconn.Send.
func (p *publisher) send(b []byte, abort <-chan struct{}) error {
	select {
	case p.turn <- struct{}{}:
	case <-abort:
		return os.ErrDeadlineExceeded
	}
	queued := make(chan paho.Token, 1)
	payload := bytes.Clone(b)
	go func() {
		t := p.client.Publish(p.topic, qos, false, payload) // may block while paho's queue is full
		<-p.turn
		queued <- t
	}()
	var t paho.Token
	select {
	case t = <-queued:
	case <-abort:
		return os.ErrDeadlineExceeded
	}
	select {
	case <-t.Done():
		if err := t.Error(); err != nil {
			return fmt.Errorf("mqtt: publish: %w", err)
		}
		return nil
	case <-abort:
		return os.ErrDeadlineExceeded
	}
}

// sendClosed publishes the empty "session closed" message, after the
// messages already handed to paho, waiting at most closeTimeout.
func (p *publisher) sendClosed() error {
	abort := make(chan struct{})
	timer := time.AfterFunc(closeTimeout, func() { close(abort) })
	defer timer.Stop()
	return p.send(nil, abort)
}

// wait waits for t to complete, for at most timeout or until ctx is done.
func wait(ctx context.Context, t paho.Token, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
		return t.Error()
	case <-timer.C:
		return fmt.Errorf("timed out after %v", timeout)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// connect connects client to the broker and subscribes it to topic with
// handler, waiting at most timeout for each, or until ctx is done. On
// failure it disconnects the client.
func connect(ctx context.Context, client paho.Client, u *URL, topic string, handler paho.MessageHandler, timeout time.Duration) error {
	err := wait(ctx, client.Connect(), timeout)
	if err != nil {
		err = fmt.Errorf("mqtt: connect to %s: %w", strings.TrimPrefix(u.Broker, "tcp://"), err)
	} else {
		err = subscribe(ctx, client, topic, handler, timeout)
	}
	if err != nil {
		go client.Disconnect(0) // also ends a connection still under way
	}
	return err
}

// subscribe subscribes client to topic and checks that the broker granted
// QoS 1 (0x80 is its refusal).
func subscribe(ctx context.Context, client paho.Client, topic string, handler paho.MessageHandler, timeout time.Duration) error {
	t := client.Subscribe(topic, qos, handler)
	if err := wait(ctx, t, timeout); err != nil {
		return fmt.Errorf("mqtt: subscribe to %q: %w", topic, err)
	}
	if granted, ok := t.(*paho.SubscribeToken).Result()[topic]; !ok || granted != qos {
		return fmt.Errorf("mqtt: subscribe to %q: the broker refused it (granted 0x%02x)", topic, granted)
	}
	return nil
}

// sessionAddr is the address of session sid: "mqtt://host:port/base session sid".
func sessionAddr(u *URL, sid string) msgconn.Addr {
	return msgconn.Addr{Net: "mqtt", Text: u.String() + " session " + sid}
}
