package ockam_listener

// Helpers of the attack suite (attack_*_test.go, docs/SECURITY.md). Each
// attack runs against a started listener over real TCP while a legitimate
// device, connected before the attack, keeps sending. An attack test checks
// that the attack fails, that the listener logged why, that exactly the
// expected internal counters moved, that nothing of the attacker reached
// the accumulator, that the legitimate device delivered every metric, and
// that no private key, passphrase or credential is in any log line.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// recordLog keeps every log line, at every level, without printing it.
type recordLog struct {
	mu      sync.Mutex
	entries []testutil.Entry
}

func (r *recordLog) add(level byte, s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = append(r.entries, testutil.Entry{Level: level, Name: "ockam_listener", Text: s})
}

func (r *recordLog) all() []testutil.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

func (*recordLog) Level() telegraf.LogLevel    { return telegraf.Trace }
func (*recordLog) AddAttribute(string, any)    {}
func (r *recordLog) Errorf(f string, a ...any) { r.add(testutil.LevelError, fmt.Sprintf(f, a...)) }
func (r *recordLog) Error(a ...any)            { r.add(testutil.LevelError, fmt.Sprint(a...)) }
func (r *recordLog) Warnf(f string, a ...any)  { r.add(testutil.LevelWarn, fmt.Sprintf(f, a...)) }
func (r *recordLog) Warn(a ...any)             { r.add(testutil.LevelWarn, fmt.Sprint(a...)) }
func (r *recordLog) Infof(f string, a ...any)  { r.add(testutil.LevelInfo, fmt.Sprintf(f, a...)) }
func (r *recordLog) Info(a ...any)             { r.add(testutil.LevelInfo, fmt.Sprint(a...)) }
func (r *recordLog) Debugf(f string, a ...any) { r.add(testutil.LevelDebug, fmt.Sprintf(f, a...)) }
func (r *recordLog) Debug(a ...any)            { r.add(testutil.LevelDebug, fmt.Sprint(a...)) }
func (r *recordLog) Tracef(f string, a ...any) { r.add(testutil.LevelTrace, fmt.Sprintf(f, a...)) }
func (r *recordLog) Trace(a ...any)            { r.add(testutil.LevelTrace, fmt.Sprint(a...)) }
func (r *recordLog) count(parts ...string) int { return len(r.matching(parts...)) }
func (r *recordLog) matching(parts ...string) []string {
	var out []string
next:
	for _, e := range r.all() {
		s := e.String()
		for _, p := range parts {
			if !strings.Contains(s, p) {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// counters returns the listener's security counters by name
// ("handshakes_failed/decrypt"). The counters of legitimate traffic
// (messages_accepted, messages_delivered, metrics_emitted, bytes_received,
// channels_open) are left out: the accumulator shows what was emitted.
func counters(s *stats) map[string]int64 {
	c := map[string]int64{
		"handshakes_ok":                s.handshakesOK.Get(),
		"messages_undelivered":         s.messagesUndelivered.Get(),
		"connections_rejected":         s.connectionsRejected.Get(),
		"connections_throttled":        s.connectionsThrottled.Get(),
		"channels_over_identity_limit": s.channelsOverIdentityLimit.Get(),
		"forged_tags":                  s.forgedTags.Get(),
	}
	for r, st := range s.handshakesFailed {
		c["handshakes_failed/"+r] = st.Get()
	}
	for r, st := range s.messagesRefused {
		c["messages_refused/"+r] = st.Get()
	}
	for r, st := range s.channelsFailed {
		c["channels_failed/"+r] = st.Get()
	}
	return c
}

// arena is a started listener under attack and a legitimate device with a
// channel open since before the attack.
type arena struct {
	t       *testing.T
	p       *pki
	l       *Listener
	out     *outputs
	addr    string
	log     *recordLog
	legit   *client
	legitID string
	attrs   map[string]string // of the legitimate device's credential
	batch   uint64
	base    map[string]int64 // counters at the last expect
}

// newArena starts a listener (configured by each configure) and connects
// the legitimate device, which delivers one message.
func newArena(t *testing.T, configure ...func(*pki, *Listener)) *arena {
	t.Helper()
	p := newPKI(t)
	l := p.listener()
	log := &recordLog{}
	l.Log = log
	for _, c := range configure {
		c(p, l)
	}
	out, addr := start(t, l)
	a := &arena{t: t, p: p, l: l, out: out, addr: addr, log: log}
	a.attrs = map[string]string{"role": "sensor", "site": "plant-7"}
	d := p.fileDevice("legit", a.attrs)
	a.legit = d.dial(t, addr)
	a.legitID = d.id.Identifier().String()
	a.deliver()
	a.base = counters(l.stats)
	return a
}

// deliver has the legitimate device send one message and checks that its
// metric, exactly, is the next one emitted and that it is acknowledged.
func (a *arena) deliver() {
	a.t.Helper()
	a.batch++
	a.legit.send(a.batch, fmt.Sprintf("legit,seq=%d value=%d 1700000000000000000\n", a.batch, a.batch))
	tags := map[string]string{"seq": fmt.Sprint(a.batch), "ockam_identity": a.legitID}
	for _, k := range a.l.AttributeTags {
		if v := a.attrs[k]; v != "" {
			tags[k] = v
		}
	}
	testutil.RequireMetricsEqual(a.t, []telegraf.Metric{
		metric.New("legit", tags, map[string]any{"value": float64(a.batch)}, ts),
	}, a.out.accept(1))
	a.legit.requireAck(a.batch)
}

// expect waits until the security counters moved by exactly delta since
// the last expect (a missing name: by 0), and fails the test otherwise.
func (a *arena) expect(delta map[string]int64) {
	a.t.Helper()
	a.expectWithin(wait, delta)
}

// expectWithin is expect, waiting at most d.
func (a *arena) expectWithin(d time.Duration, delta map[string]int64) {
	a.t.Helper()
	want := maps.Clone(a.base)
	for k, d := range delta {
		_, ok := want[k]
		require.True(a.t, ok, "no counter %q", k)
		want[k] += d
	}
	var got map[string]int64
	deadline := time.Now().Add(d)
	for {
		got = counters(a.l.stats)
		if maps.Equal(got, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	moved := map[string]int64{}
	for k, v := range got {
		if v != a.base[k] {
			moved[k] = v - a.base[k]
		}
	}
	require.Equal(a.t, want, got, "counters moved by %v, want %v", moved, delta)
	a.base = got
}

// requireLog waits for a log line at level containing every part.
func (a *arena) requireLog(level byte, parts ...string) string {
	a.t.Helper()
	var found string
	require.Eventually(a.t, func() bool {
		for _, e := range a.log.all() {
			if e.Level != level {
				continue
			}
			s := e.String()
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(s, p)
			}
			if ok {
				found = s
				return true
			}
		}
		return false
	}, wait, time.Millisecond, "no %c! log line with %q", level, parts)
	return found
}

// requireLogCount expects exactly n log lines containing every part. The
// listener counts a failure before it logs it, on its own goroutine: once
// expect saw the counters, the last line may still be on its way, so this
// waits for n lines before it checks that there are no more.
func (a *arena) requireLogCount(n int, parts ...string) {
	a.t.Helper()
	deadline := time.Now().Add(wait)
	for a.log.count(parts...) < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.Equal(a.t, n, a.log.count(parts...), "log lines with %q", parts)
}

// finish checks the end state of an attack: the legitimate device still
// delivers, nothing else was emitted, no security counter moved since the
// last expect, and no secret is in the log.
func (a *arena) finish() {
	a.t.Helper()
	a.deliver()
	a.out.requireNone()
	a.expect(nil)
	requireNoSecrets(a.t, a.log, a.p.secrets())
}

// fileDevice is a device whose vault is a directory of p (so that its
// private keys can be looked for in logs).
func (p *pki) fileDevice(name string, attrs map[string]string) *device {
	p.t.Helper()
	v, err := vault.OpenFile(filepath.Join(p.dir, name), nil)
	require.NoError(p.t, err)
	id, err := secure.CreateIdentity(v, p.now)
	require.NoError(p.t, err)
	cred, err := secure.IssueCredential(p.authority.Signer(), id.Identifier(), attrs, p.now, time.Hour, nil)
	require.NoError(p.t, err)
	p.write(name+".cred", cred.MarshalFile())
	return &device{id: id, cred: cred, pki: p}
}

// secrets returns what must never be logged: every private key in the
// vault directories under p.dir, and every credential file's bytes.
func (p *pki) secrets() map[string][]byte {
	p.t.Helper()
	out := map[string][]byte{}
	keys, err := filepath.Glob(filepath.Join(p.dir, "*", "*.key"))
	require.NoError(p.t, err)
	for _, k := range keys {
		b, err := os.ReadFile(k)
		require.NoError(p.t, err)
		require.Len(p.t, b, 39, "%s: an unencrypted key file", k)
		out[k] = b[7:]
	}
	creds, err := filepath.Glob(filepath.Join(p.dir, "*.cred"))
	require.NoError(p.t, err)
	for _, f := range creds {
		b, err := os.ReadFile(f)
		require.NoError(p.t, err)
		c, err := secure.ParseCredentialFile(b)
		require.NoError(p.t, err)
		raw := c.Marshal()
		out[f] = raw
		out[f+" signature"] = raw[len(raw)-64:]
		for i, line := range strings.Split(string(b), "\n") {
			if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
				out[fmt.Sprintf("%s PEM line %d", f, i)] = []byte(line)
			}
		}
	}
	require.NotEmpty(p.t, keys)
	return out
}

// requireNoSecrets fails if any log line holds a secret, raw or encoded
// (hex, base64, Go's %v of a byte slice).
func requireNoSecrets(t *testing.T, log *recordLog, secrets map[string][]byte) {
	t.Helper()
	entries := log.all()
	require.NotEmpty(t, entries)
	for name, s := range secrets {
		forms := []string{
			string(s), hex.EncodeToString(s), strings.ToUpper(hex.EncodeToString(s)),
			base64.StdEncoding.EncodeToString(s), base64.RawStdEncoding.EncodeToString(s),
			base64.URLEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s),
			strings.TrimSuffix(fmt.Sprint(s[:8]), "]"),
		}
		for _, e := range entries {
			for _, f := range forms {
				require.NotContains(t, e.Text, f, "log line holds %s", name)
			}
		}
	}
}

// ---- raw access to the wire ----

// frame adds the stream framing's length prefix to a Noise message.
func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)
}

// readFrameFrom reads one frame's body from r.
func readFrameFrom(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// dialFrom connects to addr from the loopback address local
// ("127.0.0.2"); it skips the test where that address cannot be bound.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: wait}
	nc, err := d.Dial("tcp", addr)
	if err != nil && strings.Contains(err.Error(), "bind") {
		t.Skipf("cannot connect from %s: %v", local, err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc
}

// handshakeOver runs the device's side of the handshake over nc and, on
// success, starts reading replies like device.tryDial.
func (d *device) handshakeOver(nc net.Conn, pin secure.Identifier) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(nc), secure.HandshakeConfig{
		Identity: d.id, Credential: d.cred, Verifier: d.pki.verifier, PeerIdentifier: pin,
	})
	if err != nil {
		return nil, err
	}
	c := &client{ch: ch, replies: make(chan secure.Message, 100), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			m, err := ch.Receive()
			if err != nil {
				c.err = err
				return
			}
			c.replies <- m
		}
	}()
	return c, nil
}

// attacker is an identity whose private keys the test holds, to run Noise
// handshakes with flynn/noise directly: any protocol name, prologue,
// static key and payload.
type attacker struct {
	id     *secure.LocalIdentity
	static noise.DHKey // the purpose key, as Noise's static key
}

// newAttacker creates an identity in a vault under a temporary directory of
// its own (its keys are not ours: they are not among p.secrets).
func newAttacker(t *testing.T) *attacker {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "attacker")
	v, err := vault.OpenFile(dir, nil)
	require.NoError(t, err)
	id, err := secure.CreateIdentity(v, time.Now())
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(dir, "purpose-a.key"))
	require.NoError(t, err)
	pub := id.Public().Attestation().PurposeKey
	return &attacker{id: id, static: noise.DHKey{Private: bytes.Clone(b[7:]), Public: pub[:]}}
}

// payload is a handshake payload (docs/PROTOCOL.md, section 7) of any
// attestation and credential.
func payload(att *secure.Attestation, cred *secure.Credential) []byte {
	b := append([]byte{1}, att.Marshal()...)
	raw := cred.Marshal()
	b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
	return append(b, raw...)
}

// suite is the cipher suite of telegraf-ockam/1.
var suite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// rawHandshake starts a Noise handshake state of the attacker's.
func (a *attacker) rawHandshake(t *testing.T, cs noise.CipherSuite, pattern noise.HandshakePattern,
	initiator bool, prologue []byte, peerStatic []byte) *noise.HandshakeState {
	t.Helper()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cs, Random: rand.Reader, Pattern: pattern, Initiator: initiator,
		Prologue: prologue, StaticKeypair: a.static, PeerStatic: peerStatic,
	})
	require.NoError(t, err)
	return hs
}

// message1 returns a valid first handshake message, as any device sends it.
func message1(t *testing.T) []byte {
	t.Helper()
	hs := newAttacker(t).rawHandshake(t, suite, noise.HandshakeXX, true, []byte(secure.ProtocolName), nil)
	msg, _, _, err := hs.WriteMessage(nil, []byte(secure.ProtocolName))
	require.NoError(t, err)
	return msg
}
