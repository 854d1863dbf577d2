package authority

import (
	"context"
	"crypto/rand"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// t0 is the tests' "now".
var t0 = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// clock is an adjustable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fixture is an authority with its store in a temporary directory.
type fixture struct {
	t        *testing.T
	clock    *clock
	vault    *vault.Memory
	identity *secure.LocalIdentity
	db       string
	a        *Authority
	verifier *secure.Verifier // trusts the authority
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: &clock{now: t0}, vault: vault.NewMemory(), db: filepath.Join(t.TempDir(), "authority.db")}
	var err error
	f.identity, err = secure.CreateIdentity(f.vault, t0)
	require.NoError(t, err)
	f.open()
	f.verifier, err = secure.NewVerifier(f.identity.Public())
	require.NoError(t, err)
	return f
}

// open opens the store and the Authority, closed at the end of the test.
func (f *fixture) open() {
	f.t.Helper()
	store, err := OpenStore(f.db, f.identity.Identifier())
	require.NoError(f.t, err)
	f.a, err = New(Config{Vault: f.vault, Identity: f.identity, Store: store, Now: f.clock.Now})
	require.NoError(f.t, err)
	a := f.a
	f.t.Cleanup(func() { a.Close() })
}

// tokens mints n tokens granting attrs, valid for ttl.
func (f *fixture) tokens(n int, attrs map[string]string, ttl time.Duration) []enroll.Token {
	f.t.Helper()
	toks := make([]enroll.Token, n)
	hashes := make([]enroll.TokenHash, n)
	for i := range toks {
		var err error
		toks[i], err = enroll.GenerateToken(f.a.Identifier(), nil)
		require.NoError(f.t, err)
		hashes[i] = toks[i].Hash()
	}
	require.NoError(f.t, f.a.AddTokens(hashes, TokenSpec{Attributes: attrs, Expires: f.clock.Now().Add(ttl), CredentialTTL: 24 * time.Hour}))
	return toks
}

// serve runs a Service for the fixture's Authority on a loopback port and
// returns its address.
func (f *fixture) serve() string {
	f.t.Helper()
	return f.serveWith(&Service{})
}

// serveWith runs s, for the fixture's Authority, on a loopback port and
// returns its address.
func (f *fixture) serveWith(s *Service) string {
	f.t.Helper()
	s.Authority = f.a
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(f.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	f.t.Cleanup(func() {
		cancel()
		require.NoError(f.t, <-done)
	})
	return ln.Addr().String()
}

// device is an identity in memory that enrolls.
type device struct {
	t  *testing.T
	id *secure.LocalIdentity
}

func newDevice(t *testing.T) *device {
	t.Helper()
	id, err := secure.CreateIdentity(vault.NewMemory(), t0)
	require.NoError(t, err)
	return &device{t: t, id: id}
}

// ephemeral returns a fresh X25519 key.
func ephemeral() vault.DH {
	var k [32]byte
	rand.Read(k[:])
	return vault.NewDHFromScalar(k)
}

// request prepares an enrollment with the first one-time prekey of b, if
// it has one.
func (d *device) request(b *enroll.Bundle, tok enroll.Token) *enroll.Enrollment {
	d.t.Helper()
	oneTime := -1
	if len(b.OneTimePrekeys) > 0 {
		oneTime = 0
	}
	e, err := enroll.NewEnrollment(d.id, b, tok, oneTime, ephemeral())
	require.NoError(d.t, err)
	return e
}

// enroll runs the online flow against the service at addr: fetch and
// verify the bundle, send the request, open the answer.
func (d *device) enroll(addr string, authority *secure.Identity, tok enroll.Token) (*secure.Credential, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	b, err := wire.FetchBundle(nc)
	if err != nil {
		return nil, err
	}
	if err := b.Verify(authority, t0); err != nil {
		return nil, err
	}
	oneTime := -1
	if len(b.OneTimePrekeys) > 0 {
		oneTime = 0
	}
	e, err := enroll.NewEnrollment(d.id, b, tok, oneTime, ephemeral())
	if err != nil {
		return nil, err
	}
	answer, err := wire.SubmitEnrollment(nc, e.Request())
	if err != nil {
		return nil, err
	}
	v, err := secure.NewVerifier(authority)
	if err != nil {
		return nil, err
	}
	return e.OpenAnswer(answer, v, t0)
}

// requireConsistent checks the store and returns its counts.
func (f *fixture) requireConsistent() Stats {
	f.t.Helper()
	st, err := f.a.Stats()
	require.NoError(f.t, err)
	require.Equal(f.t, st.TokensUsed, st.Credentials)
	return st
}
