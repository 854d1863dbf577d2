package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Unchecked is a device that skips the checks outputs.ockam makes on its own
// credential before it dials (that the credential comes from its authority
// and has not expired): what an attacker with a modified client does. The
// tests and the demo use it to show that the listener makes those checks
// itself.
type Unchecked struct {
	Vault      string // vault directory of the device's identity
	Passphrase string // "" for an unencrypted vault
	Credential string // credential file, sent as is
	Authority  string // identity file of the authority the listener's credential must come from
}

// ErrNoAck is returned by Send when the listener ended the channel instead
// of acknowledging the batch.
var ErrNoAck = errors.New("e2e: the listener did not acknowledge the batch")

// Send dials the listener at addr (host:port), runs the handshake, sends
// lines (line protocol) as data message 1 and waits for the answer. It
// returns nil only if the listener acknowledged it; an error wrapping
// ErrNoAck if the listener refused the channel (wrapping the
// *secure.RefusedError too), closed it or sent a nack; any other error if it
// could not get that far.
func (u Unchecked) Send(ctx context.Context, addr string, lines []byte) error {
	cfg, err := u.config()
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	ch, err := secure.Dial(ctx, secure.NewStreamTransport(conn), cfg)
	if errors.Is(err, secure.ErrRefused) {
		// The listener refused the channel and said why (a *secure.RefusedError).
		return fmt.Errorf("%w: %w", ErrNoAck, err)
	}
	if err != nil {
		return err
	}
	defer ch.Close("done")
	if err := ch.Send(secure.Message{Type: secure.TypeData, Batch: 1, Payload: lines}); err != nil {
		return fmt.Errorf("%w: send: %v", ErrNoAck, err)
	}
	for {
		m, err := ch.Receive()
		switch {
		case err != nil:
			return fmt.Errorf("%w: %v", ErrNoAck, err)
		case m.Type == secure.TypeAck && m.Batch == 1:
			return nil
		case m.Type == secure.TypeNack || m.Type == secure.TypeClose:
			return fmt.Errorf("%w: %s %q", ErrNoAck, m.Type, m.Payload)
		}
	}
}

// config loads the identity, the credential and the authority.
func (u Unchecked) config() (secure.HandshakeConfig, error) {
	var cfg secure.HandshakeConfig
	v, err := vault.OpenFile(u.Vault, []byte(u.Passphrase))
	if err != nil {
		return cfg, err
	}
	if cfg.Identity, err = secure.LoadIdentity(v); err != nil {
		return cfg, err
	}
	b, err := os.ReadFile(u.Credential)
	if err != nil {
		return cfg, err
	}
	if cfg.Credential, err = secure.ParseCredentialFile(b); err != nil {
		return cfg, fmt.Errorf("%s: %w", u.Credential, err)
	}
	if b, err = os.ReadFile(u.Authority); err != nil {
		return cfg, err
	}
	authority, err := secure.ParseIdentityFile(b)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", u.Authority, err)
	}
	cfg.Verifier, err = secure.NewVerifier(authority)
	return cfg, err
}
