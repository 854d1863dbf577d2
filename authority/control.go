package authority

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/secure/enroll"
)

// Admin is what the operator's commands do with an authority: the
// Authority itself when they open its vault and store, or a ControlClient
// when a running service has the store open.
type Admin interface {
	Identifier() secure.Identifier
	AddTokens(hashes []enroll.TokenHash, spec TokenSpec) error
	Revoke(subjects []secure.Identifier, credentials []secure.CredentialID) (*secure.RevocationList, error)
	Enroll(request []byte) ([]byte, error)
	Bundle(oneTime int, ttl time.Duration) (*enroll.Bundle, error)
	Stats() (Stats, error)
	Close() error
}

var (
	_ Admin = (*Authority)(nil)
	_ Admin = (*ControlClient)(nil)
)

// The control protocol runs on a Unix socket next to the store, ControlPath
// (docs/PROTOCOL.md, "Control socket"). It uses the frames of the service
// protocol with these types (replies or 0x80, refusals 0xff):
//
//	0x10 identifier                                  → [32] identifier
//	0x11 add tokens   u64 expires | u64 credential lifetime (s) | attributes | u32 n | n × [32] hash  → empty
//	0x12 revoke       u32 n | n × [32] subject | u32 m | m × [16] credential id                        → revocation list
//	0x13 enroll       enrollment request                                                               → answer
//	0x14 bundle       u16 one-time prekeys | u64 lifetime (s, 0: the signed prekey's)                  → bundle
//	0x15 stats                                                                                         → 7 × u64
//
// Whoever can connect can mint tokens: the socket is made mode 0600, and on
// Linux a peer of another user is refused.
const (
	ctlIdentifier byte = 0x10
	ctlAddTokens  byte = 0x11
	ctlRevoke     byte = 0x12
	ctlEnroll     byte = 0x13
	ctlBundle     byte = 0x14
	ctlStats      byte = 0x15

	// MaxTokensPerCall bounds the hashes of one AddTokens over the socket.
	MaxTokensPerCall = 10_000
	maxRevokePerCall = 10_000
	maxAttributes    = 1 + secure.MaxAttributes*(1+secure.MaxAttributeKey+1+secure.MaxAttributeValue)
	statsSize        = 7 * 8
)

// ControlPath returns the path of the control socket of the store at db.
func ControlPath(db string) string { return db + ".sock" }

// controlLimit is the largest body of each control frame type.
func controlLimit(typ byte) int {
	switch typ {
	case ctlIdentifier, ctlStats:
		return 0
	case ctlAddTokens:
		return 8 + 8 + maxAttributes + 4 + MaxTokensPerCall*32
	case ctlRevoke:
		return 4 + 4 + maxRevokePerCall*(32+16)
	case ctlEnroll:
		return enroll.RequestSizeOneTime
	case ctlBundle:
		return 2 + 8
	case ctlIdentifier | wire.ServiceReply:
		return secure.IdentifierSize
	case ctlAddTokens | wire.ServiceReply:
		return 0
	case ctlRevoke | wire.ServiceReply:
		return wire.ServiceBodyLimit(wire.ServiceRevocationList | wire.ServiceReply)
	case ctlEnroll | wire.ServiceReply:
		return enroll.MaxAnswerSize
	case ctlBundle | wire.ServiceReply:
		return enroll.MaxBundleSize
	case ctlStats | wire.ServiceReply:
		return statsSize
	case wire.ServiceRefusal:
		return wire.ServiceBodyLimit(wire.ServiceRefusal)
	}
	return -1
}

// ListenControl makes the control socket of the store at db, mode 0600,
// replacing a stale one: the caller holds the store, so no other service
// of that store is running.
func ListenControl(db string) (net.Listener, error) {
	path := ControlPath(db)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("authority: control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("authority: control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("authority: control socket: %w", err)
	}
	return ln, nil
}

// ServeControl answers control requests on ln until ctx ends.
func ServeControl(ctx context.Context, ln net.Listener, a *Authority, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("authority: control socket: %w", err)
		}
		if err := checkPeer(nc); err != nil {
			log.Warn("control connection refused", "err", err)
			nc.Close()
			continue
		}
		wg.Go(func() {
			serveConn(ctx, nc, connTimeouts{first: time.Minute, idle: time.Minute}, controlLimit, controlHandler(a, log))
		})
	}
}

// controlHandler decodes and runs one control request.
func controlHandler(a *Authority, log *slog.Logger) handler {
	return func(typ byte, body []byte) (byte, []byte, error) {
		reply := typ | wire.ServiceReply
		switch typ {
		case ctlIdentifier:
			id := a.Identifier()
			return reply, id[:], nil
		case ctlAddTokens:
			hashes, spec, err := parseAddTokens(body)
			if err == nil {
				err = a.AddTokens(hashes, spec)
			}
			if err == nil {
				log.Info("tokens added", "count", len(hashes))
			}
			return reply, nil, err
		case ctlRevoke:
			subjects, creds, err := parseRevoke(body)
			if err != nil {
				return 0, nil, err
			}
			l, err := a.Revoke(subjects, creds)
			if err != nil {
				return 0, nil, err
			}
			log.Info("revocation list signed", "sequence", l.Sequence, "subjects", len(subjects), "credentials", len(creds))
			return reply, l.Marshal(), nil
		case ctlEnroll:
			answer, err := a.Enroll(body)
			return reply, answer, err
		case ctlBundle:
			if len(body) != 2+8 {
				return 0, nil, secure.ErrMalformed
			}
			n, ttl := binary.BigEndian.Uint16(body), binary.BigEndian.Uint64(body[2:])
			if ttl > maxLifetime {
				return 0, nil, secure.ErrMalformed
			}
			b, err := a.Bundle(int(n), time.Duration(ttl)*time.Second)
			if err != nil {
				return 0, nil, err
			}
			return reply, b.Marshal(), nil
		case ctlStats:
			st, err := a.Stats()
			if err != nil {
				return 0, nil, err
			}
			return reply, appendStats(nil, st), nil
		}
		return 0, nil, secure.ErrMalformed
	}
}

// appendAddTokens encodes an add-tokens request.
func appendAddTokens(b []byte, hashes []enroll.TokenHash, spec TokenSpec) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(spec.Expires.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(spec.CredentialTTL/time.Second))
	b = appendAttributes(b, spec.Attributes)
	b = binary.BigEndian.AppendUint32(b, uint32(len(hashes)))
	for _, h := range hashes {
		b = append(b, h[:]...)
	}
	return b
}

// parseAddTokens decodes an add-tokens request strictly.
func parseAddTokens(body []byte) ([]enroll.TokenHash, TokenSpec, error) {
	var spec TokenSpec
	s := cryptobyte.String(body)
	var expires, ttl uint64
	var n uint32
	if !s.ReadUint64(&expires) || !s.ReadUint64(&ttl) || expires > maxUnix || ttl > maxLifetime {
		return nil, spec, fmt.Errorf("%w: add tokens: header", secure.ErrMalformed)
	}
	attrs, err := readAttributes(&s)
	if err != nil {
		return nil, spec, err
	}
	if !s.ReadUint32(&n) || n > MaxTokensPerCall || len(s) != int(n)*32 {
		return nil, spec, fmt.Errorf("%w: add tokens: count", secure.ErrMalformed)
	}
	hashes := make([]enroll.TokenHash, n)
	for i := range hashes {
		s.CopyBytes(hashes[i][:])
	}
	spec = TokenSpec{Attributes: attrs, Expires: time.Unix(int64(expires), 0).UTC(), CredentialTTL: time.Duration(ttl) * time.Second}
	return hashes, spec, nil
}

// appendRevoke encodes a revoke request.
func appendRevoke(b []byte, subjects []secure.Identifier, creds []secure.CredentialID) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(subjects)))
	for _, s := range subjects {
		b = append(b, s[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(creds)))
	for _, c := range creds {
		b = append(b, c[:]...)
	}
	return b
}

// parseRevoke decodes a revoke request strictly.
func parseRevoke(body []byte) ([]secure.Identifier, []secure.CredentialID, error) {
	s := cryptobyte.String(body)
	var n, m uint32
	if !s.ReadUint32(&n) || n > maxRevokePerCall || len(s) < int(n)*32 {
		return nil, nil, fmt.Errorf("%w: revoke: subjects", secure.ErrMalformed)
	}
	subjects := make([]secure.Identifier, n)
	for i := range subjects {
		s.CopyBytes(subjects[i][:])
	}
	if !s.ReadUint32(&m) || m > maxRevokePerCall || len(s) != int(m)*16 {
		return nil, nil, fmt.Errorf("%w: revoke: credentials", secure.ErrMalformed)
	}
	creds := make([]secure.CredentialID, m)
	for i := range creds {
		s.CopyBytes(creds[i][:])
	}
	return subjects, creds, nil
}

// appendStats encodes Stats as 7 u64.
func appendStats(b []byte, st Stats) []byte {
	for _, v := range []uint64{uint64(st.Tokens), uint64(st.TokensUsed), uint64(st.Credentials),
		uint64(st.OneTimePrekeys), uint64(st.OneTimePrekeysUsed), st.RevocationSequence, uint64(st.RevokedEntries)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

// parseStats decodes Stats.
func parseStats(b []byte) (Stats, error) {
	if len(b) != statsSize {
		return Stats{}, fmt.Errorf("%w: stats of %d bytes", secure.ErrMalformed, len(b))
	}
	v := func(i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }
	return Stats{Tokens: int(v(0)), TokensUsed: int(v(1)), Credentials: int(v(2)), OneTimePrekeys: int(v(3)),
		OneTimePrekeysUsed: int(v(4)), RevocationSequence: v(5), RevokedEntries: int(v(6))}, nil
}

// ControlClient talks to a running service through its control socket. It
// is safe for concurrent use: calls in parallel use up to maxControlConns
// connections, so that a batch of enrollments shares store transactions.
type ControlClient struct {
	path string
	id   secure.Identifier
	sem  chan struct{} // one slot per connection in use
	idle chan net.Conn
}

// maxControlConns bounds the connections of one ControlClient.
const maxControlConns = 32

// DialControl connects to the control socket of the store at db. It fails
// (with an error wrapping a syscall error such as ECONNREFUSED or ENOENT)
// if no service is running there.
func DialControl(db string) (*ControlClient, error) {
	c := &ControlClient{path: ControlPath(db), sem: make(chan struct{}, maxControlConns), idle: make(chan net.Conn, maxControlConns)}
	body, err := c.call(ctlIdentifier, nil)
	if err != nil {
		return nil, err
	}
	copy(c.id[:], body)
	return c, nil
}

// call sends one request on an idle or new connection and returns its
// reply body or the refusal.
func (c *ControlClient) call(typ byte, body []byte) ([]byte, error) {
	c.sem <- struct{}{}
	defer func() { <-c.sem }()
	var nc net.Conn
	select {
	case nc = <-c.idle:
	default:
		var err error
		if nc, err = net.DialTimeout("unix", c.path, 5*time.Second); err != nil {
			return nil, err
		}
	}
	nc.SetDeadline(time.Now().Add(5 * time.Minute))
	reply, err := controlCall(nc, typ, body)
	var refused *refusedError
	if err != nil && !errors.As(err, &refused) {
		nc.Close()
		return nil, fmt.Errorf("authority: control socket: %w", err)
	}
	c.idle <- nc
	if refused != nil {
		return nil, refused.err
	}
	return reply, nil
}

// refusedError carries a refusal: the connection is still usable.
type refusedError struct{ err error }

func (r *refusedError) Error() string { return r.err.Error() }

// controlCall writes one request and reads its reply.
func controlCall(nc net.Conn, typ byte, body []byte) ([]byte, error) {
	if err := wire.WriteServiceFrame(nc, typ, body); err != nil {
		return nil, err
	}
	rtyp, reply, err := wire.ReadServiceFrame(nc, func(t byte) int {
		if t != typ|wire.ServiceReply && t != wire.ServiceRefusal {
			return -1
		}
		return controlLimit(t)
	})
	if err != nil {
		return nil, err
	}
	if rtyp == wire.ServiceRefusal {
		return nil, &refusedError{wire.ParseRefusal(reply)}
	}
	return reply, nil
}

// Identifier returns the identifier of the service's authority.
func (c *ControlClient) Identifier() secure.Identifier { return c.id }

// AddTokens stores token hashes through the service, MaxTokensPerCall at a
// time (each batch is one transaction).
func (c *ControlClient) AddTokens(hashes []enroll.TokenHash, spec TokenSpec) error {
	if err := spec.check(); err != nil {
		return err
	}
	for len(hashes) > 0 {
		n := min(len(hashes), MaxTokensPerCall)
		if _, err := c.call(ctlAddTokens, appendAddTokens(nil, hashes[:n], spec)); err != nil {
			return err
		}
		hashes = hashes[n:]
	}
	return nil
}

// Revoke has the service sign the next revocation list.
func (c *ControlClient) Revoke(subjects []secure.Identifier, creds []secure.CredentialID) (*secure.RevocationList, error) {
	if len(subjects) > maxRevokePerCall || len(creds) > maxRevokePerCall {
		return nil, fmt.Errorf("authority: at most %d entries per revocation", maxRevokePerCall)
	}
	body, err := c.call(ctlRevoke, appendRevoke(nil, subjects, creds))
	if err != nil {
		return nil, err
	}
	return secure.ParseRevocationList(body)
}

// Enroll has the service answer an enrollment request.
func (c *ControlClient) Enroll(request []byte) ([]byte, error) {
	return c.call(ctlEnroll, request)
}

// Bundle has the service make a bundle (see Authority.Bundle).
func (c *ControlClient) Bundle(oneTime int, ttl time.Duration) (*enroll.Bundle, error) {
	if oneTime < 0 || oneTime > enroll.MaxOneTimePrekeys || ttl < 0 {
		return nil, fmt.Errorf("authority: %d one-time prekeys, want 0 to %d", oneTime, enroll.MaxOneTimePrekeys)
	}
	b := binary.BigEndian.AppendUint16(nil, uint16(oneTime))
	body, err := c.call(ctlBundle, binary.BigEndian.AppendUint64(b, uint64(ttl/time.Second)))
	if err != nil {
		return nil, err
	}
	return enroll.ParseBundle(body)
}

// Stats has the service check its store and return the counts.
func (c *ControlClient) Stats() (Stats, error) {
	body, err := c.call(ctlStats, nil)
	if err != nil {
		return Stats{}, err
	}
	return parseStats(body)
}

// Close closes the idle connections; calls in progress keep theirs.
func (c *ControlClient) Close() error {
	for {
		select {
		case nc := <-c.idle:
			nc.Close()
		default:
			return nil
		}
	}
}
