package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// outcome is what became of one attempt.
type outcome int

const (
	refused  outcome = iota // the listener closed the connection or refused the data
	accepted                // the listener acknowledged the data, or kept the connection open
	failed                  // the attempt could not be made (listener unreachable, bad files)
)

// attempt is one thing an intruder tries, on a connection of its own.
type attempt struct {
	name string
	run  func(ctx context.Context, addr string) (outcome, error)
}

// newAttempts prepares the attempts. With authorityFile (the public
// identity file of the listener's authority), it adds the two credential
// attempts, whose identities and credentials are made in memory.
func newAttempts(authorityFile string, now time.Time) ([]attempt, error) {
	attempts := []attempt{
		{"plaintext", plaintext},
		{"forged-hello", forgedHello},
	}
	if authorityFile == "" {
		return attempts, nil
	}
	b, err := os.ReadFile(authorityFile)
	if err != nil {
		return nil, err
	}
	authority, err := secure.ParseIdentityFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", authorityFile, err)
	}
	verifier, err := secure.NewVerifier(authority)
	if err != nil {
		return nil, err
	}
	rogue, err := secure.CreateIdentity(vault.NewMemory(), now)
	if err != nil {
		return nil, err
	}
	me, err := secure.CreateIdentity(vault.NewMemory(), now)
	if err != nil {
		return nil, err
	}
	// The attributes a sensor of the real fleet has: only the issuer differs.
	attrs := map[string]string{"role": "sensor", "site": "intruder"}
	rogueCred, err := secure.IssueCredential(rogue.Signer(), me.Identifier(), attrs, now, 24*time.Hour, nil)
	if err != nil {
		return nil, err
	}
	forged, err := withIssuer(rogueCred, authority.Identifier())
	if err != nil {
		return nil, err
	}
	cfg := func(c *secure.Credential) secure.HandshakeConfig {
		return secure.HandshakeConfig{Identity: me, Credential: c, Verifier: verifier}
	}
	return append(attempts,
		attempt{"rogue-authority", handshake(cfg(rogueCred))},
		attempt{"forged-signature", handshake(cfg(forged))},
	), nil
}

// withIssuer returns c with its issuer field replaced by issuer: the
// signature no longer matches (PROTOCOL.md section 4: version, id, then
// the issuer identifier).
func withIssuer(c *secure.Credential, issuer secure.Identifier) (*secure.Credential, error) {
	const issuerOffset = 1 + 16 // version, credential id
	raw := c.Marshal()
	copy(raw[issuerOffset:issuerOffset+secure.IdentifierSize], issuer[:])
	return secure.ParseCredential(raw)
}

// plaintext sends a line of line protocol in the clear.
func plaintext(ctx context.Context, addr string) (outcome, error) {
	line := fmt.Sprintf("cpu,host=intruder usage_idle=0 %d\n", time.Now().UnixNano())
	return sendRaw(ctx, addr, []byte(line))
}

// forgedHello sends a well-framed handshake message 1 (an ephemeral key
// and the cleartext version payload) that names another protocol version.
func forgedHello(ctx context.Context, addr string) (outcome, error) {
	msg := make([]byte, 32, 32+len(secure.ProtocolName))
	rand.Read(msg) // the ephemeral public key: any 32 bytes
	msg = append(msg, "telegraf-ockam/0"...)
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(msg)))
	return sendRaw(ctx, addr, append(frame, msg...))
}

// sendRaw writes b on a new connection and waits until the listener closes
// it.
func sendRaw(ctx context.Context, addr string, b []byte) (outcome, error) {
	conn, err := dial(ctx, addr)
	if err != nil {
		return failed, err
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		if closedByPeer(err) {
			return refused, fmt.Errorf("the listener closed the connection (%v)", err)
		}
		return failed, err
	}
	n, err := io.Copy(io.Discard, conn)
	switch {
	case err == nil || closedByPeer(err):
		return refused, fmt.Errorf("the listener closed the connection after %d bytes of answer", n)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return accepted, errors.New("the listener kept the connection open")
	}
	return failed, err
}

// handshake returns an attempt that runs the device's side of the
// handshake with cfg and then sends one batch.
func handshake(cfg secure.HandshakeConfig) func(ctx context.Context, addr string) (outcome, error) {
	return func(ctx context.Context, addr string) (outcome, error) {
		conn, err := dial(ctx, addr)
		if err != nil {
			return failed, err
		}
		ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), cfg)
		if errors.Is(err, secure.ErrRefused) {
			// The listener read message 3 and said why it refuses it.
			return refused, err
		}
		if err != nil {
			// A failure before message 3, which carries our credential, is
			// ours (or the network's), not a refusal.
			return failed, fmt.Errorf("handshake: %w", err)
		}
		defer ch.Close("done")
		line := fmt.Sprintf("cpu,host=intruder usage_idle=0 %d\n", time.Now().UnixNano())
		if err := ch.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: []byte(line)}); err != nil {
			if closedByPeer(err) {
				return refused, fmt.Errorf("the listener closed the connection (%v)", err)
			}
			return failed, err
		}
		for {
			m, err := ch.Receive()
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				return accepted, errors.New("the listener kept the channel open")
			case closedByPeer(err):
				return refused, fmt.Errorf("the listener closed the connection after the handshake (%v)", err)
			case err != nil:
				return failed, err
			case m.Type == secure.TypeAck && m.Batch == 1:
				return accepted, errors.New("the listener acknowledged the batch")
			case m.Type == secure.TypeNack:
				return refused, fmt.Errorf("nack: %s", m.Reason)
			}
		}
	}
}

// dial connects to addr; the connection's deadline is ctx's.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	return conn, nil
}

// closedByPeer reports whether err means the other end closed the
// connection or the channel.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, secure.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
