package ockam

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// fixture is a small fleet: an authority, a device whose vault, credential
// and authority file are on disk for the plugin, and a listener identity
// with its credential for the fake listener.
type fixture struct {
	fleet         *ockamtest.Fleet
	dir           string
	authority     *secure.LocalIdentity
	device        *secure.LocalIdentity
	listener      *secure.LocalIdentity
	listenerCred  *secure.Credential
	vaultPath     string
	credPath      string
	authorityPath string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fleet := ockamtest.NewFleet(t)
	device := fleet.Enroll(t, "device", map[string]string{"role": "sensor"})
	f := &fixture{
		fleet:         fleet,
		dir:           fleet.Dir,
		authority:     fleet.Authority,
		device:        device.Identity,
		vaultPath:     device.VaultPath,
		credPath:      device.CredentialPath,
		authorityPath: fleet.AuthorityFile,
	}
	var err error
	f.listener, err = secure.CreateIdentity(vault.NewMemory(), time.Now())
	require.NoError(t, err)
	f.listenerCred = f.issue(t, f.authority, f.listener.Identifier(), time.Now(), time.Hour)
	return f
}

// issue signs a credential for subject with authority's key.
func (f *fixture) issue(t *testing.T, authority *secure.LocalIdentity, subject secure.Identifier,
	issuedAt time.Time, ttl time.Duration) *secure.Credential {
	t.Helper()
	return f.fleet.Issue(t, authority, subject, map[string]string{"role": "sensor"}, issuedAt, ttl)
}

func (f *fixture) writeCredential(t *testing.T, c *secure.Credential) {
	t.Helper()
	ockamtest.WriteFile(t, f.credPath, c.MarshalFile())
}

// reply is what the fake listener does with one data message.
type reply int

const (
	replyAck reply = iota
	replyNackPermanent
	replyNackTransient
	replyNackExpired // transient, reason says the credential expired
	replySilent      // never answers
	replyDrop        // closes the connection
)

// handshake is the record of one handshake the fake listener ran.
type handshake struct {
	reads int                // handshake messages read (1: the device stopped after message 2)
	err   error              // Accept's error
	cred  *secure.Credential // the device's credential, when it succeeded
}

// fakeListener accepts channels over real TCP with secure.Accept and answers
// every data message as its reply function says. It records what arrived.
type fakeListener struct {
	t   *testing.T
	ln  net.Listener
	cfg secure.HandshakeConfig

	mu         sync.Mutex
	reply      func(secure.Message) reply
	received   []secure.Message
	handshakes []handshake
	ends       []error // why each established channel ended
	conns      []net.Conn
	wg         sync.WaitGroup
}

// startListener listens on addr ("127.0.0.1:0" for any port).
func (f *fixture) startListener(t *testing.T, addr string) *fakeListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	verifier, err := secure.NewVerifier(f.authority.Public())
	require.NoError(t, err)
	l := &fakeListener{
		t:     t,
		ln:    ln,
		cfg:   secure.HandshakeConfig{Identity: f.listener, Credential: f.listenerCred, Verifier: verifier},
		reply: func(secure.Message) reply { return replyAck },
	}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.stop)
	return l
}

func (l *fakeListener) addr() string { return l.ln.Addr().String() }

func (l *fakeListener) setReply(r func(secure.Message) reply) {
	l.mu.Lock()
	l.reply = r
	l.mu.Unlock()
}

func (l *fakeListener) accept() {
	defer l.wg.Done()
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns = append(l.conns, conn)
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.serve(conn)
		}()
	}
}

// countingTransport counts the handshake messages the listener read.
type countingTransport struct {
	secure.Transport
	reads int
}

func (c *countingTransport) ReadMessage() ([]byte, error) {
	b, err := c.Transport.ReadMessage()
	if err == nil {
		c.reads++
	}
	return b, err
}

func (l *fakeListener) serve(conn net.Conn) {
	defer conn.Close()
	ct := &countingTransport{Transport: secure.NewStreamTransport(conn)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ch, err := secure.Accept(ctx, ct, l.cfg)
	cancel()
	hs := handshake{reads: ct.reads, err: err}
	if err == nil {
		hs.cred = ch.Peer().Credential
	}
	l.mu.Lock()
	l.handshakes = append(l.handshakes, hs)
	l.mu.Unlock()
	if err != nil {
		return
	}
	for {
		m, err := ch.Receive()
		if err != nil {
			l.mu.Lock()
			l.ends = append(l.ends, err)
			l.mu.Unlock()
			return
		}
		l.mu.Lock()
		l.received = append(l.received, m)
		r := l.reply(m)
		l.mu.Unlock()
		var answer secure.Message
		switch r {
		case replyAck:
			answer = secure.Message{Type: secure.TypeAck, Batch: m.Batch}
		case replyNackPermanent:
			answer = secure.Message{Type: secure.TypeNack, Batch: m.Batch, Permanent: true, Reason: "refused by policy"}
		case replyNackTransient:
			answer = secure.Message{Type: secure.TypeNack, Batch: m.Batch, Reason: "output buffer full"}
		case replyNackExpired:
			answer = secure.Message{Type: secure.TypeNack, Batch: m.Batch, Reason: "credential expired at 2020-01-01T00:00:00Z: secure: expired"}
		case replySilent:
			continue
		case replyDrop:
			return
		}
		if err := ch.Send(answer); err != nil {
			return
		}
	}
}

// stop closes the listener and every connection and waits for them.
func (l *fakeListener) stop() {
	l.ln.Close()
	l.mu.Lock()
	for _, c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// messages returns a copy of the data messages received so far.
func (l *fakeListener) messages() []secure.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]secure.Message(nil), l.received...)
}

// handshakeLog returns a copy of the handshakes run so far.
func (l *fakeListener) handshakeLog() []handshake {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]handshake(nil), l.handshakes...)
}

// waitHandshakes waits until n handshakes ended.
func (l *fakeListener) waitHandshakes(t *testing.T, n int) []handshake {
	t.Helper()
	require.Eventually(t, func() bool { return len(l.handshakeLog()) >= n }, 30*time.Second, 10*time.Millisecond)
	return l.handshakeLog()
}

// channels returns how many handshakes succeeded so far: the channels the
// device opened. A dial that ran out of time under load leaves a failed
// handshake in handshakeLog, but opened no channel.
func (l *fakeListener) channels() int {
	n := 0
	for _, h := range l.handshakeLog() {
		if h.err == nil {
			n++
		}
	}
	return n
}

// waitMessages waits until n data messages arrived. A message that the
// device sent before it stopped waiting for its answer is read by the
// listener's goroutine in its own time.
func (l *fakeListener) waitMessages(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(l.messages()) >= n }, 30*time.Second, time.Millisecond,
		"waiting for %d messages", n)
}

// endLog returns why each channel ended so far (from the listener's side).
func (l *fakeListener) endLog() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.ends...)
}
