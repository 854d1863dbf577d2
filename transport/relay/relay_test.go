package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/transport/msgconn"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// The tests run real relays, listeners and devices on 127.0.0.1 with real
// identities and credentials, and the real channel end to end.

const gateway = "plant-7-gateway"

// env is an authority, a device and a listener with credentials of it.
type env struct {
	authority, device, listener *secure.LocalIdentity
	deviceCred, listenerCred    *secure.Credential
	verifier                    *secure.Verifier
}

func newEnv(t *testing.T) *env {
	e := &env{authority: newIdentity(t), device: newIdentity(t), listener: newIdentity(t)}
	e.deviceCred = issue(t, e.authority, e.device.Identifier(), map[string]string{"role": "sensor"}, time.Now(), time.Hour)
	e.listenerCred = issue(t, e.authority, e.listener.Identifier(), map[string]string{"role": "listener", "relay": gateway},
		time.Now(), time.Hour)
	var err error
	e.verifier, err = secure.NewVerifier(e.authority.Public())
	require.NoError(t, err)
	return e
}

func newIdentity(t *testing.T) *secure.LocalIdentity {
	id, err := secure.CreateIdentity(vault.NewMemory(), time.Now().Add(-time.Minute))
	require.NoError(t, err)
	return id
}

func issue(t *testing.T, authority *secure.LocalIdentity, subject secure.Identifier, attrs map[string]string,
	at time.Time, ttl time.Duration) *secure.Credential {
	c, err := secure.IssueCredential(authority.Signer(), subject, attrs, at.Add(-time.Minute), ttl, nil)
	require.NoError(t, err)
	return c
}

// testLog records what the code under test logs; the lines are printed if
// the test fails.
type testLog struct {
	mu    sync.Mutex
	lines []string
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Log("log:\n" + strings.Join(l.lines, "\n"))
		}
	})
	return l
}

func (l *testLog) add(level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(format, args...))
}
func (l *testLog) Debugf(f string, a ...any) { l.add("D!", f, a...) }
func (l *testLog) Infof(f string, a ...any)  { l.add("I!", f, a...) }
func (l *testLog) Warnf(f string, a ...any)  { l.add("W!", f, a...) }
func (l *testLog) Errorf(f string, a ...any) { l.add("E!", f, a...) }

// contains reports whether a line matches re.
func (l *testLog) contains(re string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if regexp.MustCompile(re).MatchString(line) {
			return true
		}
	}
	return false
}

// startRelay serves a relay on addr ("127.0.0.1:0" for any port) and returns
// it and its tcp:// address.
func startRelay(t *testing.T, addr string, cfg ServerConfig) (*Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = newTestLog(t)
	}
	s, err := NewServer(cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return s, "tcp://" + ln.Addr().String()
}

// listen registers the env's listener as gateway at relay and waits until
// it is registered.
func (e *env) listen(t *testing.T, relay string) *Listener {
	t.Helper()
	l, err := Listen(ListenConfig{Relay: relay, Name: gateway, Logger: newTestLog(t),
		Credentials: func() (*secure.LocalIdentity, *secure.Credential, error) { return e.listener, e.listenerCred, nil }})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	require.Eventually(t, l.Registered, 30*time.Second, 5*time.Millisecond)
	return l
}

// channels are the two ends of a channel made through relays.
type channels struct {
	dev, lis         *secure.Channel
	devConn, lisConn net.Conn
}

// connect dials route as the device, accepts on l as the listener, and runs
// the handshake over the two sessions.
func (e *env) connect(t *testing.T, l *Listener, route ...string) channels {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ch channels
	var err error
	ch.devConn, err = Dial(ctx, route)
	require.NoError(t, err)
	t.Cleanup(func() { ch.devConn.Close() })
	type result struct {
		c    *secure.Channel
		conn net.Conn
		err  error
	}
	accepted := make(chan result, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			accepted <- result{err: err}
			return
		}
		c, err := secure.Accept(ctx, secure.NewStreamTransport(conn), secure.HandshakeConfig{
			Identity: e.listener, Credential: e.listenerCred, Verifier: e.verifier})
		accepted <- result{c, conn, err}
	}()
	ch.dev, err = secure.Dial(ctx, secure.NewStreamTransport(ch.devConn), secure.HandshakeConfig{
		Identity: e.device, Credential: e.deviceCred, Verifier: e.verifier,
		PeerAttributes: map[string]string{"role": "listener"}})
	require.NoError(t, err)
	r := <-accepted
	require.NoError(t, r.err)
	ch.lis, ch.lisConn = r.c, r.conn
	t.Cleanup(func() { ch.lisConn.Close() })
	require.Equal(t, ch.dev.ChannelBinding(), ch.lis.ChannelBinding())
	require.Equal(t, e.listener.Identifier(), ch.dev.Peer().Identifier)
	require.Equal(t, e.device.Identifier(), ch.lis.Peer().Identifier)
	return ch
}

// exchange sends a message each way, one of size bytes.
func (ch channels) exchange(t *testing.T, size int) {
	t.Helper()
	up := secure.Message{Type: secure.TypeData, Batch: 1, Payload: bytes.Repeat([]byte("u"), size)}
	errc := make(chan error, 1)
	go func() { errc <- ch.dev.Send(up) }()
	m, err := ch.lis.Receive()
	require.NoError(t, err)
	require.Equal(t, up, m)
	require.NoError(t, <-errc)
	down := secure.Message{Type: secure.TypeData, Batch: 2, Payload: []byte("down")}
	go func() { errc <- ch.lis.Send(down) }()
	m, err = ch.dev.Receive()
	require.NoError(t, err)
	require.Equal(t, down, m)
	require.NoError(t, <-errc)
}

func TestDeviceRelayListener(t *testing.T) {
	e := newEnv(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}})
	l := e.listen(t, relay)
	require.Equal(t, relay+" "+gateway, l.Addr().String())
	ch := e.connect(t, l, relay, gateway)
	ch.exchange(t, 10)
	ch.exchange(t, 1<<20) // many frames of the largest payload

	// The session's address: the relay, then the return route.
	require.Equal(t, "relay", ch.lisConn.RemoteAddr().Network())
	require.Regexp(t, "^"+regexp.QuoteMeta(relay)+` #[0-9a-f]{16}$`, ch.lisConn.RemoteAddr().String())

	// A second device session: another connection, another unguessable id.
	ch2 := e.connect(t, l, relay, gateway)
	ch2.exchange(t, 10)
	require.NotEqual(t, ch.lisConn.RemoteAddr().String(), ch2.lisConn.RemoteAddr().String())
	ch.exchange(t, 10)

	// The device closes: the listener's channel ends.
	require.NoError(t, ch.dev.Close("bye"))
	_, err := ch.lis.Receive()
	require.Error(t, err)
	ch2.exchange(t, 10)
}

func TestTwoRelays(t *testing.T) {
	e := newEnv(t)
	auth := []*secure.Identity{e.authority.Public()}
	_, relayB := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: auth})
	_, relayA := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: auth, NextHops: []string{relayB}})
	l := e.listen(t, relayB)
	ch := e.connect(t, l, relayA, relayB, gateway)
	ch.exchange(t, 200_000)
	require.Regexp(t, "^"+regexp.QuoteMeta(relayB)+` #[0-9a-f]{16} #[0-9a-f]{16}$`, ch.lisConn.RemoteAddr().String())
	ch2 := e.connect(t, l, relayA, relayB, gateway) // over the same connection A → B
	ch2.exchange(t, 10)
	ch.exchange(t, 10)

	// A hop that A's allowlist lacks: refused, with the reason.
	free := freeAddr(t)
	err := dialFails(t, relayA, free, gateway)
	require.ErrorContains(t, err, fmt.Sprintf("relay: relay %s: next hop %q is not allowed here", strings.TrimPrefix(relayA, "tcp://"), free))
	// B allows no next hop at all.
	err = dialFails(t, relayB, relayA, gateway)
	require.ErrorContains(t, err, "is not allowed here")
	// Allowed, but nothing listens there.
	_, relayC := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: auth, NextHops: []string{free}})
	err = dialFails(t, relayC, free, gateway)
	require.ErrorContains(t, err, fmt.Sprintf("cannot reach next hop %q", free))
	// Through A to B, a name B does not know.
	err = dialFails(t, relayA, relayB, "nobody")
	require.ErrorContains(t, err, fmt.Sprintf("relay: relay %s: no listener registered as \"nobody\"", strings.TrimPrefix(relayB, "tcp://")))
	ch.exchange(t, 10)
}

// dialFails dials route, writes, and returns the error its read gets.
func dialFails(t *testing.T, route ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, route)
	require.NoError(t, err)
	defer c.Close()
	// Write returns once its frame is queued, but it checks the session
	// again before it returns: the relay's ERROR, if it arrived first (on a
	// loaded machine it can), fails the Write with it instead of the Read.
	if _, err = c.Write([]byte("hello")); err != nil {
		return err
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = c.Read(make([]byte, 10))
	require.Error(t, err)
	return err
}

// freeAddr returns a relay hop that nothing listens on now (package
// freeport).
func freeAddr(t *testing.T) string {
	return "tcp://" + freeport.Addr(t)
}

func TestUnknownName(t *testing.T) {
	e := newEnv(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}})
	conn, err := Dial(context.Background(), []string{relay, "nobody"})
	require.NoError(t, err)
	defer conn.Close()
	// The device's handshake fails with the relay's reason.
	_, err = secure.Dial(context.Background(), secure.NewStreamTransport(conn), secure.HandshakeConfig{
		Identity: e.device, Credential: e.deviceCred, Verifier: e.verifier})
	require.ErrorContains(t, err, fmt.Sprintf(`relay: relay %s: no listener registered as "nobody"`, strings.TrimPrefix(relay, "tcp://")))
}

// rawConn is a client of a relay that speaks frames directly.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t *testing.T, relay string) *rawConn {
	nc, err := net.Dial("tcp", strings.TrimPrefix(relay, "tcp://"))
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// dialFlooder dials relay raw and discards what the relay sends back (the
// ERRORs for frames it could not forward), so that the flooder is not
// itself the slow connection.
func dialFlooder(t *testing.T, relay string) *rawConn {
	c := dialRaw(t, relay)
	go func() {
		for {
			if _, err := c.read(); err != nil {
				return
			}
		}
	}()
	return c
}

func (c *rawConn) send(f *frame) {
	_, err := c.nc.Write(appendFrame(nil, f))
	require.NoError(c.t, err)
}

func (c *rawConn) read() (*frame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	return readFrame(c.r)
}

// register runs a registration with a signer, a credential's bytes and a
// name; tamper changes the signature. It returns the answer.
func (c *rawConn) register(name string, id *secure.LocalIdentity, cred []byte, tamper bool) *frame {
	c.send(&frame{Type: typeRegisterBegin})
	ch, err := c.read()
	require.NoError(c.t, err)
	require.Equal(c.t, typeChallenge, ch.Type)
	sig, err := id.Signer().Sign(registerMessage(ch.Payload, name))
	require.NoError(c.t, err)
	if tamper {
		sig[0] ^= 1
	}
	c.send(&frame{Type: typeRegister, Name: name, Key: id.Signer().Public(), Credential: cred, Signature: sig})
	ans, err := c.read()
	require.NoError(c.t, err)
	return ans
}

func TestRegistrationRefused(t *testing.T) {
	e := newEnv(t)
	revokedID := newIdentity(t)
	rl, err := secure.NewRevocationList(e.authority.Signer(), 1, time.Now(), time.Now().Add(secure.DefaultRevocationListValidity), []secure.Identifier{revokedID.Identifier()}, nil)
	require.NoError(t, err)
	log := newTestLog(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()},
		Revocations: rl, Logger: log})
	l := e.listen(t, relay)
	ch := e.connect(t, l, relay, gateway)

	other := newIdentity(t)
	rogue := newIdentity(t) // another authority
	attrs := map[string]string{"relay": gateway}
	cases := []struct {
		name   string
		id     *secure.LocalIdentity
		cred   []byte
		tamper bool
		want   string
	}{
		{"no credential", other, nil, false, "no credential"},
		{"garbage", other, []byte("garbage"), false, "credential does not parse"},
		{"other authority", other, issue(t, rogue, other.Identifier(), attrs, time.Now(), time.Hour).Marshal(), false,
			"credential from an unknown issuer"},
		{"expired", other, issue(t, e.authority, other.Identifier(), attrs, time.Now().Add(-2*time.Hour), time.Hour).Marshal(), false,
			"credential expired"},
		{"revoked", revokedID, issue(t, e.authority, revokedID.Identifier(), attrs, time.Now(), time.Hour).Marshal(), false,
			"credential revoked"},
		{"no relay attribute", other, issue(t, e.authority, other.Identifier(), map[string]string{"role": "listener"}, time.Now(), time.Hour).Marshal(), false,
			"credential lacks the attribute relay"},
		{"another name", other, issue(t, e.authority, other.Identifier(), map[string]string{"relay": "plant-8"}, time.Now(), time.Hour).Marshal(), false,
			`credential allows relay="plant-8", not "plant-7-gateway"`},
		{"someone else's credential", other, e.listenerCred.Marshal(), false, "credential issued to another identity"},
		{"bad signature", e.listener, e.listenerCred.Marshal(), true, "bad signature"},
		{"held by another identity", other, issue(t, e.authority, other.Identifier(), attrs, time.Now(), time.Hour).Marshal(), false,
			fmt.Sprintf("name %q held by %s", gateway, e.listener.Identifier().Short())},
	}
	for _, tc := range cases {
		ans := dialRaw(t, relay).register(gateway, tc.id, tc.cred, tc.tamper)
		require.Equal(t, typeRefused, ans.Type, tc.name)
		require.Contains(t, string(ans.Payload), tc.want, tc.name)
		require.True(t, log.contains(`^I! Refused registration of "plant-7-gateway" from 127\.0\.0\.1:\d+: `+regexp.QuoteMeta(string(ans.Payload))), tc.name)
		ch.exchange(t, 10) // the holder keeps receiving
	}
	require.True(t, l.Registered())
	ch2 := e.connect(t, l, relay, gateway)
	ch2.exchange(t, 10)

	// A REGISTER without a challenge.
	raw := dialRaw(t, relay)
	raw.send(&frame{Type: typeRegister, Name: gateway, Key: e.listener.Signer().Public(), Credential: e.listenerCred.Marshal(),
		Signature: make([]byte, 64)})
	ans, err := raw.read()
	require.NoError(t, err)
	require.Equal(t, typeRefused, ans.Type)
	require.Contains(t, string(ans.Payload), "no challenge")
	// Secrets are never logged: no line holds a credential or a signature.
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, line := range log.lines {
		require.NotContains(t, line, fmt.Sprintf("%x", e.listenerCred.Marshal()[:16]))
	}
}

// TestRegistrationSmallOrderKey is issue 23's item 4: the neutral point as
// identity key, with the one signature that verifies under it for every
// challenge, and a credential naming its identifier (the CLI of version 1
// issued credentials to bare identifiers). The relay refuses the key before
// it checks the signature; the name stays with its holder.
func TestRegistrationSmallOrderKey(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	const name = "plant-9-gateway" // free: nobody holds it
	neutral := make(ed25519.PublicKey, 32)
	neutral[0] = 1
	forged := append(slices.Clone([]byte(neutral)), make([]byte, 32)...) // R = the neutral point, S = 0
	cred := issue(t, e.authority, secure.IdentifierOf(neutral), map[string]string{"relay": name}, time.Now(), time.Hour)
	for range 2 { // two challenges: the same signature each time
		raw := dialRaw(t, relay)
		raw.send(&frame{Type: typeRegisterBegin})
		challenge, err := raw.read()
		require.NoError(t, err)
		require.Equal(t, typeChallenge, challenge.Type)
		require.True(t, ed25519.Verify(neutral, registerMessage(challenge.Payload, name), forged), "the forged signature verifies")
		raw.send(&frame{Type: typeRegister, Name: name, Key: neutral, Credential: cred.Marshal(), Signature: forged})
		ans, err := raw.read()
		require.NoError(t, err)
		require.Equal(t, typeRefused, ans.Type, "%s", ans.Payload)
		require.Contains(t, string(ans.Payload), "identity key refused")
	}
}

func TestSameIdentityReplaces(t *testing.T) {
	e := newEnv(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}})
	first := dialRaw(t, relay)
	require.Equal(t, &frame{Type: typeRegistered, Name: gateway}, first.register(gateway, e.listener, e.listenerCred.Marshal(), false))
	second := dialRaw(t, relay)
	require.Equal(t, &frame{Type: typeRegistered, Name: gateway}, second.register(gateway, e.listener, e.listenerCred.Marshal(), false))
	// The first connection is closed; frames for the name reach the second.
	_, err := first.read()
	require.ErrorIs(t, err, io.EOF)
	dev := dialRaw(t, relay)
	dev.send(&frame{Type: typeRoute, Onward: []string{gateway}, Payload: []byte("hi")})
	f, err := second.read()
	require.NoError(t, err)
	require.Equal(t, typeRoute, f.Type)
	require.Empty(t, f.Onward)
	require.Len(t, f.Return, 1)
	require.Equal(t, []byte("hi"), f.Payload)
	// The answer along the return route reaches the device.
	second.send(&frame{Type: typeRoute, Onward: f.Return, Payload: []byte("ho")})
	f, err = dev.read()
	require.NoError(t, err)
	require.Equal(t, []byte("ho"), f.Payload)
	require.Empty(t, f.Onward)
}

func TestRelayRestart(t *testing.T) {
	e := newEnv(t)
	auth := []*secure.Identity{e.authority.Public()}
	s, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: auth})
	l := e.listen(t, relay)
	ch := e.connect(t, l, relay, gateway)
	ch.exchange(t, 10)

	require.NoError(t, s.Close())
	_, err := ch.lisConn.Read(make([]byte, 1))
	require.ErrorContains(t, err, "connection lost")
	_, err = ch.devConn.Read(make([]byte, 1))
	require.Error(t, err)
	require.Eventually(t, func() bool { return !l.Registered() }, 30*time.Second, 5*time.Millisecond)

	startRelay(t, strings.TrimPrefix(relay, "tcp://"), ServerConfig{Authorities: auth})
	require.Eventually(t, l.Registered, 10*time.Second, 10*time.Millisecond)
	e.connect(t, l, relay, gateway).exchange(t, 10)
}

func TestSlowDestination(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	l := e.listen(t, relay)

	// A device that opens a session and never reads.
	slow := dialRaw(t, relay)
	slow.send(&frame{Type: typeRoute, Onward: []string{gateway}, Payload: []byte("hi")})
	conn, err := l.Accept()
	require.NoError(t, err)
	defer conn.Close()
	written := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			if _, err := conn.Write(chunk); err != nil {
				written <- err
				return
			}
		}
	}()

	// Meanwhile another session works, and keeps working.
	ch := e.connect(t, l, relay, gateway)
	ch.exchange(t, 10)
	select {
	case err := <-written:
		require.ErrorContains(t, err, "relay: relay ")
	case <-time.After(30 * time.Second):
		t.Fatal("the writer to a destination that never reads was not stopped")
	}
	require.True(t, log.contains(`outbound queue full`))
	ch.exchange(t, 10)
}

func TestProtocolErrorClosesOneConnection(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	l := e.listen(t, relay)
	ch := e.connect(t, l, relay, gateway)
	for _, bad := range [][]byte{
		{0, 0, 0, 0},          // length 0
		{0, 2, 0, 1},          // longer than MaxFrame
		{0, 0, 0, 2, 1, 99},   // unknown type
		{0, 0, 0, 2, 2, 8},    // version 2
		{0, 0, 0, 3, 1, 8, 0}, // trailing byte
		{0, 0, 0, 2, 1, 4},    // CHALLENGE from a client
	} {
		raw := dialRaw(t, relay)
		_, err := raw.nc.Write(bad)
		require.NoError(t, err)
		_, err = raw.read()
		require.ErrorIs(t, err, io.EOF, "%x", bad)
		ch.exchange(t, 10)
	}
	require.True(t, log.contains(`^D! Connection #[0-9a-f]{16} from 127\.0\.0\.1:\d+ closed: relay: protocol error: unknown frame type 99`))
}

func TestPing(t *testing.T) {
	e := newEnv(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}})
	raw := dialRaw(t, relay)
	raw.send(&frame{Type: typePing})
	f, err := raw.read()
	require.NoError(t, err)
	require.Equal(t, typePong, f.Type)
}

func TestMaxConnections(t *testing.T) {
	e := newEnv(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, MaxConnections: 1})
	first := dialRaw(t, relay)
	first.send(&frame{Type: typePing})
	_, err := first.read()
	require.NoError(t, err)
	second := dialRaw(t, relay)
	_, err = second.read()
	require.ErrorIs(t, err, io.EOF)
}

func TestConfigErrors(t *testing.T) {
	_, err := NewServer(ServerConfig{})
	require.ErrorContains(t, err, "at least one trusted authority")
	e := newEnv(t)
	_, err = NewServer(ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, NextHops: []string{"relay-b:4000"}})
	require.ErrorContains(t, err, `next hop "relay-b:4000": want tcp://HOST:PORT`)
	creds := func() (*secure.LocalIdentity, *secure.Credential, error) { return nil, nil, nil }
	_, err = Listen(ListenConfig{Relay: "relay:4000", Name: gateway, Credentials: creds})
	require.ErrorContains(t, err, "want tcp://HOST:PORT")
	_, err = Listen(ListenConfig{Relay: "tcp://relay:4000", Name: "no spaces", Credentials: creds})
	require.ErrorContains(t, err, `name "no spaces"`)
	_, err = Listen(ListenConfig{Relay: "tcp://relay:4000", Name: gateway})
	require.ErrorContains(t, err, "Credentials is nil")
	_, err = Dial(context.Background(), []string{"tcp://127.0.0.1:1"})
	require.ErrorContains(t, err, "ends at a relay")
}

// TestRevocationEndsRegistration: a revocation list that revokes the
// registered listener's identity closes its registration at once; its next
// registrations are refused as revoked, and a device gets "no listener
// registered". A stale or foreign list is refused and changes nothing.
func TestRevocationEndsRegistration(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	s, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	l := e.listen(t, relay)
	e.connect(t, l, relay, gateway).exchange(t, 10)

	rogue := newIdentity(t)
	foreign, err := secure.NewRevocationList(rogue.Signer(), 1, time.Now(), time.Now().Add(secure.DefaultRevocationListValidity), []secure.Identifier{e.listener.Identifier()}, nil)
	require.NoError(t, err)
	require.ErrorIs(t, s.UpdateRevocations(foreign), secure.ErrUnknownIssuer)
	require.True(t, l.Registered(), "a foreign list changes nothing")

	list, err := secure.NewRevocationList(e.authority.Signer(), 1, time.Now(), time.Now().Add(secure.DefaultRevocationListValidity), []secure.Identifier{e.listener.Identifier()}, nil)
	require.NoError(t, err)
	require.NoError(t, s.UpdateRevocations(list))
	require.Eventually(t, func() bool { return !l.Registered() }, 30*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return log.contains(`Refused registration of "` + gateway + `" .*credential revoked`) },
		30*time.Second, 10*time.Millisecond, "the revoked listener's next registration is refused")
	require.ErrorContains(t, dialFails(t, relay, gateway), `no listener registered as "`+gateway+`"`)
	require.False(t, l.Registered())

	putBack, err := secure.NewRevocationList(e.authority.Signer(), 1, time.Now(), time.Now().Add(secure.DefaultRevocationListValidity), nil, nil)
	require.NoError(t, err)
	require.Error(t, s.UpdateRevocations(putBack), "another list with the same sequence (the revocation undone) is refused")
}

// TestFloodDoesNotCutTheListener: a party with no credential floods the
// registered name with small frames, far more than the listener's outbound
// queue holds (1024 frames), on many return routes and on one. The relay
// drops what does not fit and answers the flooder with ERRORs; it never
// closes the listener's connection, so the registration and a real
// channel through it survive.
//
// Whether the queue overflows depends on the listener reading more slowly
// than the relay forwards, which on a loaded machine it need not: so the
// test stops the listener's reader for the flood (gatedLog), then floods
// until the relay reports the overflow.
func TestFloodDoesNotCutTheListener(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	s, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	lisLog := &gatedLog{testLog: newTestLog(t)}
	l, err := Listen(ListenConfig{Relay: relay, Name: gateway, Logger: lisLog,
		Credentials: func() (*secure.LocalIdentity, *secure.Credential, error) { return e.listener, e.listenerCred, nil }})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	require.Eventually(t, l.Registered, 30*time.Second, 5*time.Millisecond)
	ch := e.connect(t, l, relay, gateway)
	ch.exchange(t, 10)
	go func() { // the attacker's sessions are accepted and left alone
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()

	// From here the listener's reader stops at the first session it
	// refuses (it logs it), at the latest when the flood's distinct return
	// routes exceed its 1024 sessions; its socket buffers then fill, and
	// the relay's queue for it. It must read again within the relay's
	// write timeout (10 s), which the flood below takes far less than.
	lisLog.gate.Lock()
	resume := sync.OnceFunc(lisLog.gate.Unlock)
	defer resume() // whatever happens: l.Close waits for the reader

	flood := dialFlooder(t, relay)
	// The relay may close the flooder (it reads its ERRORs too slowly),
	// which it does only once it drops frames: that ends the flood.
	send := func(f *frame) bool {
		_, err := flood.nc.Write(appendFrame(nil, f))
		return err == nil
	}
	sent := 0
	for i := 0; i < 5000 && send(&frame{Type: typeRoute, Onward: []string{gateway},
		Return: []string{fmt.Sprintf("s%d", i)}, Payload: []byte{1}}); i++ {
		sent++
	}
	// Then on one return route until the relay drops frames for the
	// listener. These frames carry 1 KiB, so that the socket buffers
	// (megabytes on loopback) fill in thousands of frames rather than tens
	// of thousands; the 1024 that then fill the queue are 1 MiB, far below
	// its byte bound: it is the frame bound that overflows.
	big := bytes.Repeat([]byte{1}, 1<<10)
	deadline := time.Now().Add(30 * time.Second)
	for !log.contains(`Dropping frames for ` + gateway) {
		require.True(t, time.Now().Before(deadline), "the flood (%d frames sent) did not overflow the listener's queue", sent)
		for i := 0; i < 500 && send(&frame{Type: typeRoute, Onward: []string{gateway}, Payload: big}); i++ {
			sent++
		}
	}
	resume()
	t.Logf("the relay dropped frames for the listener after %d frames of the flood", sent)
	// The flood ends. A frame of the channel that met the listener's queue
	// still full would be dropped as the flood's are (that is the design):
	// wait until the relay has handled the flooder's last frame (it logs
	// the connection's end after it) and the queue is empty.
	flooder := regexp.QuoteMeta(flood.nc.LocalAddr().String())
	require.NoError(t, flood.nc.Close())
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		queued := queuedFor(s, gateway)
		if log.contains(`^D! Connection #[0-9a-f]{16} from `+flooder+` closed`) && queued == 0 {
			break
		}
		require.True(t, time.Now().Before(deadline),
			"the relay is still forwarding the flood: %d frames queued for the listener (-1: not registered)", queued)
	}
	ch.exchange(t, 10)
	require.True(t, l.Registered(), "the registration survives the flood")
	require.False(t, lisLog.contains(`Lost the connection to relay`), "the relay closed the listener's connection")
	ch.exchange(t, 1<<20)
}

// TestPingWithAFullQueue: a flood keeps a registered listener's outbound
// queue full; the listener's keepalive PING then costs its PONG, never the
// connection (a relay that closed it would hand the flooder an easy way to
// cut any gateway off at its next keepalive).
func TestPingWithAFullQueue(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	lis := dialRaw(t, relay) // a listener that does not read for now
	require.Equal(t, &frame{Type: typeRegistered, Name: gateway}, lis.register(gateway, e.listener, e.listenerCred.Marshal(), false))

	flood := dialFlooder(t, relay)
	big := bytes.Repeat([]byte{1}, 1<<10)
	deadline := time.Now().Add(5 * time.Second) // well within the relay's write timeout (10 s)
	for !log.contains(`Dropping frames for ` + gateway) {
		require.True(t, time.Now().Before(deadline), "the flood did not overflow the listener's queue")
		for range 500 {
			flood.send(&frame{Type: typeRoute, Onward: []string{gateway}, Payload: big})
		}
	}
	// The queue is full, and stays full: the listener reads nothing, so
	// the relay's writer is stuck on a full socket.
	lis.send(&frame{Type: typePing})
	require.NoError(t, flood.nc.Close())

	// The listener reads again: the flood's frames, then the answer to one
	// of its next PINGs (those that meet a full queue are dropped too); a
	// closed connection fails read.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for t := time.NewTicker(50 * time.Millisecond); ; {
			select {
			case <-stop:
				t.Stop()
				return
			case <-t.C:
				_, _ = lis.nc.Write(appendFrame(nil, &frame{Type: typePing}))
			}
		}
	}()
	routes := 0
	for {
		f, err := lis.read()
		require.NoError(t, err, "the relay closed the listener's connection after %d frames", routes)
		if f.Type == typePong {
			break
		}
		require.Equal(t, typeRoute, f.Type)
		routes++
	}
	require.False(t, log.contains(`Unregistered`), "the registration survives")
	t.Logf("%d flood frames reached the listener", routes)
}

// queuedFor returns the frames queued at s for the connection registered
// as name, or -1 if none is.
func queuedFor(s *Server, name string) int {
	s.mu.Lock()
	c := s.names[name]
	s.mu.Unlock()
	if c == nil {
		return -1
	}
	c.link.mu.Lock()
	defer c.link.mu.Unlock()
	return len(c.link.queue)
}

// gatedLog is a testLog whose writers wait while gate is locked. The
// relay Listener logs every session it refuses from the goroutine that
// reads its relay connection, so locking gate stops that reader at its
// next refusal.
type gatedLog struct {
	*testLog
	gate sync.RWMutex
}

func (g *gatedLog) add(level, format string, args ...any) {
	g.gate.RLock()
	defer g.gate.RUnlock()
	g.testLog.add(level, format, args...)
}
func (g *gatedLog) Debugf(f string, a ...any) { g.add("D!", f, a...) }
func (g *gatedLog) Infof(f string, a ...any)  { g.add("I!", f, a...) }
func (g *gatedLog) Warnf(f string, a ...any)  { g.add("W!", f, a...) }
func (g *gatedLog) Errorf(f string, a ...any) { g.add("E!", f, a...) }

// failingListener fails its first fails Accepts with err, as a process out
// of file descriptors does, then accepts.
type failingListener struct {
	net.Listener
	fails int
	err   error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, l.err
	}
	return l.Listener.Accept()
}

// TestAcceptErrorsDoNotStopTheRelay: errors of Accept other than a closed
// listener (EMFILE when someone holds every descriptor) are retried; the
// relay goes on serving once they pass.
func TestAcceptErrorsDoNotStopTheRelay(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	s, err := NewServer(ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: log})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() {
		served <- s.Serve(&failingListener{Listener: ln, fails: 5, err: errors.New("accept4: too many open files")})
	}()
	relay := "tcp://" + ln.Addr().String()
	l := e.listen(t, relay)
	e.connect(t, l, relay, gateway).exchange(t, 10)
	require.True(t, log.contains(`Accepting a connection failed \(retrying; logged at most once a minute\): accept4: too many open files`))
	require.NoError(t, s.Close())
	require.NoError(t, <-served, "Serve returns nil after Close")
}

// TestConnectionsPerIP: one host holds at most MaxConnectionsPerIP
// incoming connections; beyond it the relay closes new ones at once, and a
// slot freed is usable again.
func TestConnectionsPerIP(t *testing.T) {
	e := newEnv(t)
	log := newTestLog(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()},
		MaxConnectionsPerIP: 3, Logger: log})
	var held []*rawConn
	for range 3 {
		c := dialRaw(t, relay)
		c.send(&frame{Type: typePing})
		f, err := c.read()
		require.NoError(t, err)
		require.Equal(t, typePong, f.Type)
		held = append(held, c)
	}
	extra := dialRaw(t, relay)
	extra.send(&frame{Type: typePing})
	_, err := extra.read()
	require.Error(t, err, "a fourth connection from the same address is closed")
	require.True(t, log.contains(`Refusing connection from 127\.0\.0\.1:\d+: 3 connections open from 127\.0\.0\.1 \(--max-connections-per-ip\)`))

	held[0].nc.Close()
	require.Eventually(t, func() bool {
		c := dialRaw(t, relay)
		defer c.nc.Close()
		c.send(&frame{Type: typePing})
		f, err := c.read()
		return err == nil && f.Type == typePong
	}, 30*time.Second, 20*time.Millisecond, "the freed slot is usable again")
}

// TestIdleDeviceConnectionClosed: an unregistered connection that carried
// a frame and then nothing for the device idle timeout is closed, so idle
// connections cannot hold the relay's slots for ever.
func TestIdleDeviceConnectionClosed(t *testing.T) {
	e := newEnv(t)
	s, err := NewServer(ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}, Logger: newTestLog(t)})
	require.NoError(t, err)
	s.deviceIdle = 200 * time.Millisecond // before Serve
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c := dialRaw(t, "tcp://"+ln.Addr().String())
	c.send(&frame{Type: typePing})
	f, err := c.read()
	require.NoError(t, err)
	require.Equal(t, typePong, f.Type)
	start := time.Now()
	_, err = c.read()
	require.ErrorIs(t, err, io.EOF, "the idle connection is closed by the relay")
	require.Less(t, time.Since(start), 5*time.Second)
}

// TestReceiveBudgetBoundsMemory: sessions that nobody reads (a flood of
// sessions through the relay, or a listener whose reader fell behind)
// buffer at most the listener's ReceiveBudget together; a session whose
// bytes find no room fails, and once the others are closed a real channel
// works again.
func TestReceiveBudgetBoundsMemory(t *testing.T) {
	e := newEnv(t)
	_, relay := startRelay(t, "127.0.0.1:0", ServerConfig{Authorities: []*secure.Identity{e.authority.Public()}})
	const budget = 64 << 10
	l, err := Listen(ListenConfig{Relay: relay, Name: gateway, Logger: newTestLog(t), ReceiveBudget: budget,
		Credentials: func() (*secure.LocalIdentity, *secure.Credential, error) { return e.listener, e.listenerCred, nil }})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	require.Eventually(t, l.Registered, 30*time.Second, 5*time.Millisecond)

	chunk := make([]byte, 30<<10)
	var sessions []net.Conn
	for range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := Dial(ctx, []string{relay, gateway})
		cancel()
		require.NoError(t, err)
		_, err = c.Write(chunk)
		require.NoError(t, err)
		sessions = append(sessions, c)
		accepted, err := l.Accept()
		require.NoError(t, err)
		sessions = append(sessions, accepted)
	}
	require.Eventually(t, func() bool { return l.budget.Used() == 2*len(chunk) }, 30*time.Second, 5*time.Millisecond,
		"two sessions' bytes fit in the budget")
	// Each read returns the chunk that found room or, once the other chunks
	// arrived and were refused, ErrBudgetFull: no time window decides which.
	failed := 0
	for i := 1; i < len(sessions); i += 2 {
		require.LessOrEqual(t, l.budget.Used(), budget)
		_ = sessions[i].SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, len(chunk))
		if _, err := io.ReadFull(sessions[i], buf); errors.Is(err, msgconn.ErrBudgetFull) {
			failed++
		} else {
			require.NoError(t, err)
		}
	}
	require.LessOrEqual(t, l.budget.Used(), budget)
	require.Equal(t, 2, failed, "the sessions whose bytes found no room failed")
	for _, c := range sessions {
		c.Close()
	}
	require.Eventually(t, func() bool { return l.budget.Used() == 0 }, 30*time.Second, 5*time.Millisecond)
	e.connect(t, l, relay, gateway).exchange(t, 10)
}
