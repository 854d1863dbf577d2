package mqtt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

// ErrBrokerLost is the error (wrapped) that reads and writes of a session
// return once the connection to the broker is lost: the session is over,
// and a device dials a new one.
var ErrBrokerLost = errors.New("mqtt: lost the connection to the broker")

// Dial opens a new session to the listener at raw (an mqtt:// address, see
// ParseURL) and returns it as a net.Conn: a connection of its own to the
// broker (client id "ockam-d-<session id>"), subscribed to
// <base>/out/<session id> before its first message on <base>/in/<session
// id>. ctx bounds the connection and the subscription, as does
// opts.ConnectTimeout; once Dial has returned, ctx no longer matters.
//
// The session does not survive its broker connection: once it is lost,
// reads (after the bytes already received) and writes return an error
// wrapping ErrBrokerLost. An empty message from the listener ends it:
// reads return io.EOF. Close publishes the empty "session closed" message
// and disconnects, waiting at most a couple of seconds.
func Dial(ctx context.Context, raw string, opts Options) (net.Conn, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	sid := newSID()
	co := clientOptions(u, opts, "ockam-d-"+sid)
	// If this client vanishes, the broker publishes "session closed" for it.
	co.SetBinaryWill(u.inTopic(sid), []byte{}, qos, false)
	var conn *msgconn.Conn
	co.SetConnectionLostHandler(func(_ paho.Client, err error) {
		conn.Fail(fmt.Errorf("%w: %v", ErrBrokerLost, err))
	})
	client := paho.NewClient(co)
	pub := newPublisher(client, u.inTopic(sid))
	conn = msgconn.New(msgconn.Addr{Net: "mqtt", Text: "client ockam-d-" + sid}, sessionAddr(u, sid), pub.send,
		msgconn.Options{OnClose: func() {
			if err := pub.sendClosed(); err != nil {
				opts.Logger.Debugf("mqtt: session %s: publish the close: %v", sid, err)
			}
			client.Disconnect(uint(closeTimeout.Milliseconds() / 4))
		}})
	// The handler runs on paho's router goroutine: it must not block, and
	// Deliver does not.
	deliver := func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			return // a broker's stored message, not part of this session
		}
		if len(m.Payload()) == 0 {
			conn.Fail(io.EOF) // the listener closed the session
			return
		}
		conn.Deliver(m.Payload())
	}
	if err := connect(ctx, client, u, u.outTopic(sid), deliver, opts.ConnectTimeout); err != nil {
		return nil, err
	}
	return conn, nil
}
