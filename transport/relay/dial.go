package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
)

// Dial opens a session through relays: route[0] is "tcp://host:port" of
// the first relay, route[1:] the remaining hops, the last usually a
// registered name (see ParseRoute). One TCP connection carries the one
// session. ctx bounds the TCP dial only.
//
// The Conn's reads fail with "relay: REASON" when a relay answers with an
// ERROR (no listener registered under the name, a next hop not allowed …),
// and with the connection's error when it drops.
func Dial(ctx context.Context, route []string) (net.Conn, error) {
	if err := ParseRoute(route); err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(route[0], "tcp://"))
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	l := newLink(nc)
	onward := append([]string(nil), route[1:]...)
	send := func(p []byte, abort <-chan struct{}) error {
		return l.send(appendFrame(nil, &frame{Type: typeRoute, Onward: onward, Payload: p}), abort)
	}
	local := msgconn.Addr{Net: "relay", Text: nc.LocalAddr().String()}
	remote := msgconn.Addr{Net: "relay", Text: strings.Join(route, " ")}
	c := msgconn.New(local, remote, send, msgconn.Options{MaxPayload: MaxPayload, OnClose: l.closeAfterFlush})
	go readSession(l, c, route[0])
	return c, nil
}

// readSession reads the frames of a device's connection into its session
// until either ends.
func readSession(l *link, c *msgconn.Conn, relay string) {
	r := bufio.NewReaderSize(l.nc, 64<<10)
	for {
		f, err := readFrame(r)
		if err == nil {
			err = deviceFrame(l, c, f)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("relay %s closed the connection", strings.TrimPrefix(relay, "tcp://"))
			}
			c.Fail(err)
			l.close(err)
			return
		}
	}
}

// deviceFrame acts on one frame for a device's session. An error ends the
// session.
func deviceFrame(l *link, c *msgconn.Conn, f *frame) error {
	switch {
	case f.Type == typePing:
		l.offer(appendFrame(nil, &frame{Type: typePong}))
		return nil
	case f.Type == typePong:
		return nil
	case f.Type != typeRoute && f.Type != typeError:
		return protoErrorf("unexpected %v on a session", f.Type)
	case len(f.Onward) > 0:
		return nil // not for us: a device is an endpoint only
	case f.Type == typeError:
		return errors.New("relay: " + string(f.Payload))
	case !c.Deliver(f.Payload):
		return msgconn.ErrBufferFull
	}
	return nil
}
