package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/mqtt/mqtttest"
)

// TestSecureChannel runs the real handshake and data messages both ways
// over a session, while a spy subscribed to "#" checks that the broker
// sees only the session's two topics and never the plaintext.
func TestSecureChannel(t *testing.T) {
	b, addr := newBroker(t)
	spy := mqtttest.Spy(t, b.URL())
	e := newChannelEnv(t)
	l := listen(t, addr, Options{})
	results := make(chan error, 1)
	e.serveEcho(t, l, results)

	ch := e.secureDial(t, addr)
	require.NoError(t, <-results)
	const secret = "plant-7 boiler temperature=451.0 CONFIDENTIAL-b7e1"
	for i := range uint64(5) {
		roundTrip(t, ch, i+1, []byte(fmt.Sprintf("%s %d", secret, i)))
	}
	big := bytes.Repeat([]byte(secret+"\n"), 5000) // 250 kB: several Noise messages and MQTT messages
	roundTrip(t, ch, 99, big)
	require.NoError(t, ch.Close("done"))

	var topics = regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/(in|out)/([0-9a-f]{32})$`)
	var sid string
	require.Eventually(t, func() bool { return len(spy.Messages()) >= 12 }, waitFor, 10*time.Millisecond)
	for _, m := range spy.Messages() {
		match := topics.FindStringSubmatch(m.Topic)
		require.NotNil(t, match, "topic %q", m.Topic)
		if sid == "" {
			sid = match[2]
		}
		require.Equal(t, sid, match[2], "one session")
		require.NotContains(t, string(m.Payload), "CONFIDENTIAL", "the broker sees ciphertext only")
		require.NotContains(t, string(m.Payload), "boiler")
	}
}

// TestRemoteAddr checks the addresses of both ends of a session.
func TestRemoteAddr(t *testing.T) {
	b, addr := newBroker(t)
	l := listen(t, addr, Options{})
	require.Equal(t, "mqtt", l.Addr().Network())
	require.Equal(t, b.URL()+"/"+base, l.Addr().String())
	dev := dial(t, addr)
	write(t, dev, []byte("x"))
	lis := accept(t, l)
	require.Equal(t, "mqtt", dev.RemoteAddr().Network())
	require.Regexp(t, `^`+regexp.QuoteMeta(b.URL()+"/"+base)+` session [0-9a-f]{32}$`, dev.RemoteAddr().String())
	require.Equal(t, dev.RemoteAddr(), lis.RemoteAddr())
}

// TestTwoDevices: two sessions on the same base topic at once; each end
// reads only its own peer's bytes.
func TestTwoDevices(t *testing.T) {
	_, addr := newBroker(t)
	l := listen(t, addr, Options{})
	devs := []net.Conn{dial(t, addr), dial(t, addr)}
	require.NotEqual(t, devs[0].RemoteAddr(), devs[1].RemoteAddr())
	for i, d := range devs {
		write(t, d, []byte(fmt.Sprintf("device %d hello", i)))
	}
	sessions := map[string]net.Conn{}
	for range devs {
		c := accept(t, l)
		sessions[string(readN(t, c, len("device 0 hello")))] = c
	}
	require.Len(t, sessions, 2)
	for round := range 20 {
		for i, d := range devs {
			write(t, d, []byte(fmt.Sprintf("device %d round %02d", i, round)))
			write(t, sessions[fmt.Sprintf("device %d hello", i)], []byte(fmt.Sprintf("to %d round %02d", i, round)))
		}
	}
	for i, d := range devs {
		s := sessions[fmt.Sprintf("device %d hello", i)]
		for round := range 20 {
			require.Equal(t, fmt.Sprintf("device %d round %02d", i, round), string(readN(t, s, len("device 0 round 00"))))
			require.Equal(t, fmt.Sprintf("to %d round %02d", i, round), string(readN(t, d, len("to 0 round 00"))))
		}
	}
	require.Equal(t, 2, l.Stats().Sessions)
}

// TestLargeAndManyWrites: a write of one maximal message, one split into
// several, and 1000 small writes arrive intact and in order, both ways.
func TestLargeAndManyWrites(t *testing.T) {
	_, addr := newBroker(t)
	l := listen(t, addr, Options{})
	dev := dial(t, addr)
	write(t, dev, []byte("hi"))
	lis := accept(t, l)
	require.Equal(t, "hi", string(readN(t, lis, 2)))

	for _, pair := range []struct {
		name     string
		from, to net.Conn
	}{{"device to listener", dev, lis}, {"listener to device", lis, dev}} {
		t.Run(pair.name, func(t *testing.T) {
			for _, n := range []int{64 << 10, 65537, 65538, 300_000} {
				frame := make([]byte, n)
				_, _ = rand.Read(frame)
				write(t, pair.from, frame)
				require.True(t, bytes.Equal(frame, readN(t, pair.to, n)), "%d bytes", n)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := range uint32(1000) {
					if _, err := pair.from.Write(binary.BigEndian.AppendUint32(nil, i)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			got := readN(t, pair.to, 4000)
			for i := range uint32(1000) {
				require.Equal(t, i, binary.BigEndian.Uint32(got[4*i:]), "write %d in order", i)
			}
			<-done
		})
	}
}

// TestClose: the device's Close ends the listener's session with io.EOF,
// and the listener's Close of a session ends the device's with io.EOF.
func TestClose(t *testing.T) {
	_, addr := newBroker(t)
	l := listen(t, addr, Options{})

	dev := dial(t, addr)
	write(t, dev, []byte("last words"))
	lis := accept(t, l)
	require.NoError(t, dev.Close())
	require.ErrorIs(t, dev.Close(), net.ErrClosed)
	require.Equal(t, "last words", string(readN(t, lis, len("last words"))))
	require.Equal(t, io.EOF, readErr(lis, waitFor))
	require.NoError(t, lis.Close())
	require.Eventually(t, func() bool { return l.Stats().Sessions == 0 }, waitFor, 10*time.Millisecond)

	dev = dial(t, addr)
	write(t, dev, []byte("x"))
	lis = accept(t, l)
	write(t, lis, []byte("goodbye"))
	require.NoError(t, lis.Close())
	require.Equal(t, "goodbye", string(readN(t, dev, len("goodbye"))))
	require.Equal(t, io.EOF, readErr(dev, waitFor))
}

// TestBrokerOutage: stopping the broker fails the device's session and the
// listener's within seconds; once it is back, the listener has resubscribed
// by itself and a new session works end to end, through the same Listener.
func TestBrokerOutage(t *testing.T) {
	b, addr := newBroker(t)
	e := newChannelEnv(t)
	l := listen(t, addr, Options{})

	devConn := dial(t, addr)
	devc := make(chan *secure.Channel, 1)
	go func() {
		ch, err := secure.Dial(t.Context(), secure.NewStreamTransport(devConn), e.device)
		if err != nil {
			t.Error(err)
		}
		devc <- ch
	}()
	lisConn := accept(t, l)
	lis, err := secure.Accept(t.Context(), secure.NewStreamTransport(lisConn), e.listener)
	require.NoError(t, err)
	dev := <-devc
	require.NotNil(t, dev)
	require.NoError(t, dev.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: []byte("before")}))
	m, err := lis.Receive()
	require.NoError(t, err)
	require.Equal(t, "before", string(m.Payload))

	start := time.Now()
	b.Stop()
	_, err = dev.Receive()
	require.ErrorIs(t, err, ErrBrokerLost)
	// mosquitto publishes the device's will, its "session closed", as it
	// shuts down: the listener's session may end with that, io.EOF.
	_, err = lis.Receive()
	require.True(t, errors.Is(err, ErrBrokerLost) || err == io.EOF, "%v", err)
	require.Less(t, time.Since(start), waitFor)
	require.ErrorIs(t, readErr(devConn, time.Second), ErrBrokerLost)
	err = readErr(lisConn, time.Second)
	require.True(t, errors.Is(err, ErrBrokerLost) || err == io.EOF, "%v", err)
	_, err = devConn.Write([]byte("x"))
	require.ErrorIs(t, err, ErrBrokerLost)
	require.Eventually(t, func() bool { return l.Stats() == Stats{Outages: 1} }, waitFor, 10*time.Millisecond,
		"the listener noticed, and forgot the session: %+v", l.Stats())

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	_, err = Dial(ctx, addr, Options{})
	cancel()
	require.Error(t, err, "no broker")

	b.Start()
	start = time.Now()
	// The listener reconnects within its backoff (at most 5 s); until then a
	// device's messages find no subscriber, so the device retries as the
	// output would.
	results := make(chan error, 16)
	e.serveEcho(t, l, results)
	deadline := time.Now().Add(3 * waitFor)
	for attempt := 1; ; attempt++ {
		err := func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			conn, err := Dial(ctx, addr, Options{})
			if err != nil {
				return err
			}
			ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), e.device)
			if err != nil {
				return err
			}
			defer ch.Close("done")
			roundTrip(t, ch, 2, []byte("after"))
			return nil
		}()
		if err == nil {
			t.Logf("a session works %v after the restart, at attempt %d", time.Since(start).Round(time.Millisecond), attempt)
			break
		}
		require.True(t, time.Now().Before(deadline), "no session after the broker restarted: %v", err)
	}
	require.Equal(t, uint64(1), l.Stats().Outages)
}

// TestGarbage: messages on <base>/in/not-a-sid open no session; a valid
// session id whose bytes are no handshake opens one that the handshake
// rejects; meanwhile a legitimate device is served.
func TestGarbage(t *testing.T) {
	b, addr := newBroker(t)
	e := newChannelEnv(t)
	l := listen(t, addr, Options{})
	results := make(chan error, 8)
	e.serveEcho(t, l, results)

	ch := e.secureDial(t, addr)
	require.NoError(t, <-results)

	attacker := rawClient(t, b.URL())
	garbageSID := strings.Repeat("ab", 16)
	for _, m := range []struct {
		topic   string
		payload []byte
	}{
		{base + "/in/not-a-sid", []byte("hello")},
		{base + "/in/" + strings.ToUpper(garbageSID), []byte("hello")},
		{base + "/in/" + garbageSID[:31], []byte("hello")},
		{base + "/in/" + garbageSID + "0", []byte("hello")},
		{base + "/in/" + garbageSID, []byte("\x00\x05not a handshake at all")},
		{base + "/in/" + garbageSID, bytes.Repeat([]byte{0xff}, 1000)},
	} {
		publish(t, attacker, m.topic, m.payload)
		roundTrip(t, ch, 1, []byte("still served"))
	}
	select {
	case err := <-results:
		require.Error(t, err, "the garbage session fails its handshake")
	case <-time.After(waitFor):
		t.Fatal("the valid session id did not open a session")
	}
	select {
	case err := <-results:
		t.Fatalf("another session was opened: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	require.Equal(t, uint64(4), l.Stats().Dropped, "the four topics that are no session id")
	roundTrip(t, ch, 2, []byte("still served"))
}

// TestMaxSessions: beyond MaxSessions, new session ids are dropped; closing
// one makes room again.
func TestMaxSessions(t *testing.T) {
	_, addr := newBroker(t)
	l := listen(t, addr, Options{MaxSessions: 2})
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			conns <- c
		}
	}()
	next := func() net.Conn {
		select {
		case c := <-conns:
			return c
		case <-time.After(waitFor):
			t.Fatal("no session")
			return nil
		}
	}
	var accepted []net.Conn
	for range 2 {
		d := dial(t, addr)
		write(t, d, []byte("x"))
		accepted = append(accepted, next())
	}
	third := dial(t, addr)
	write(t, third, []byte("x"))
	// write returns at the broker's PUBACK; the listener gets the message
	// later, on its own connection: wait until it has refused it, then
	// check that nothing else changed and that no session came of it.
	require.Eventually(t, func() bool { return l.Stats().Refused > 0 }, waitFor, 10*time.Millisecond,
		"the third session's message was not refused: %+v", l.Stats())
	require.Equal(t, Stats{Sessions: 2, Refused: 1}, l.Stats())
	select {
	case <-conns:
		t.Fatal("a third session")
	case <-time.After(300 * time.Millisecond):
	}
	require.Equal(t, Stats{Sessions: 2, Refused: 1}, l.Stats())

	require.NoError(t, accepted[0].Close())
	fourth := dial(t, addr)
	write(t, fourth, []byte("y"))
	require.Equal(t, "y", string(readN(t, next(), 1)))
	require.Equal(t, Stats{Sessions: 2, Refused: 1}, l.Stats())
}

// TestListenerClose: Accept returns net.ErrClosed, sessions fail.
func TestListenerClose(t *testing.T) {
	_, addr := newBroker(t)
	l := listen(t, addr, Options{})
	d := dial(t, addr)
	write(t, d, []byte("x"))
	s := accept(t, l)
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	require.NoError(t, l.Close())
	require.ErrorIs(t, <-errc, net.ErrClosed)
	_, err := l.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	require.ErrorIs(t, l.Close(), net.ErrClosed)
	require.Equal(t, "x", string(readN(t, s, 1)))
	require.ErrorIs(t, readErr(s, waitFor), net.ErrClosed)
}

// TestUnreachable: Dial and Listen fail with an unreachable broker, Dial
// also when ctx ends first.
func TestUnreachable(t *testing.T) {
	b, addr := newBroker(t)
	b.Stop()
	_, err := Listen(addr, Options{ConnectTimeout: time.Second})
	require.ErrorContains(t, err, "mqtt: connect to 127.0.0.1:")
	_, err = Dial(t.Context(), addr, Options{ConnectTimeout: time.Second})
	require.ErrorContains(t, err, "mqtt: connect to 127.0.0.1:")

	// ctx ends first: against the stopped broker the refused connection
	// is an answer as early as ctx's end, and Dial may report either; so
	// a server that accepts the TCP connection and never answers the MQTT
	// CONNECT, where only ctx can end the wait.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan []net.Conn, 1)
	go func() {
		var held []net.Conn
		for {
			c, err := silent.Accept()
			if err != nil {
				accepted <- held
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		silent.Close()
		for _, c := range <-accepted {
			c.Close()
		}
	})
	ctx, cancel := context.WithCancelCause(t.Context())
	cause := errors.New("shutting down")
	cancel(cause)
	_, err = Dial(ctx, "mqtt://"+silent.Addr().String()+"/"+base, Options{})
	require.ErrorIs(t, err, cause)

	_, err = Dial(t.Context(), "mqtt://127.0.0.1/x/+", Options{})
	require.ErrorContains(t, err, "wildcard")
}

// rawClient is a plain MQTT client, for an attacker's messages.
func rawClient(t *testing.T, brokerURL string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + strings.TrimPrefix(brokerURL, "mqtt://")).
		SetClientID("attacker-" + newSID()).SetAutoReconnect(false))
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t *testing.T, c paho.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	require.True(t, tok.WaitTimeout(waitFor))
	require.NoError(t, tok.Error())
}
