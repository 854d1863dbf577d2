package relay

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// registerContext starts the message a listener signs to register a name:
// registerContext || challenge (32) || u8 len(name) || name. Like every
// signature context of docs/PROTOCOL.md §2 it ends in one 0x00 byte (the
// context of version 1, "telegraf-ockam/relay-register/1", did not).
const registerContext = "telegraf-ockam relay-register v2\x00"

// attributeRelay is the credential attribute that must equal the name.
const attributeRelay = "relay"

// errExpired closes a registered connection whose credential expired.
var errExpired = errors.New("relay: the credential of the registration expired")

// registerMessage returns what the identity key signs in a REGISTER.
func registerMessage(challenge []byte, name string) []byte {
	m := make([]byte, 0, len(registerContext)+len(challenge)+1+len(name))
	m = append(m, registerContext...)
	m = append(m, challenge...)
	m = append(m, byte(len(name)))
	return append(m, name...)
}

// register answers a REGISTER on c: REGISTERED, or REFUSED with the reason.
func (s *Server) register(c *relayConn, f *frame) {
	challenge := c.challenge
	c.challenge = nil // one REGISTER per CHALLENGE
	id, cred, err := s.checkRegistration(challenge, f)
	if err == nil {
		err = s.claim(c, f.Name, id, cred)
	}
	if err != nil {
		s.log.Infof("Refused registration of %q from %s: %v", f.Name, c.remote, err)
		s.reply(c, &frame{Type: typeRefused, Payload: reason(err.Error())})
		return
	}
	s.log.Infof("Registered %q for %s from %s (connection %s), until %s", f.Name, id.Short(), c.remote, c.id.hop(),
		cred.ExpiresAt.UTC().Format(time.RFC3339))
	s.reply(c, &frame{Type: typeRegistered, Name: f.Name})
}

// checkRegistration checks a REGISTER: the identity key (canonical, not of
// small order), the challenge signed by it, then the credential (trusted issuer, this subject, current, not
// revoked), then its relay attribute. It returns the registrant and its
// credential. Each refusal has its own message.
func (s *Server) checkRegistration(challenge []byte, f *frame) (secure.Identifier, *secure.Credential, error) {
	var none secure.Identifier
	if challenge == nil {
		return none, nil, errors.New("no challenge: send REGISTER_BEGIN first, then REGISTER")
	}
	// Under a small-order key one fixed signature verifies every challenge.
	if err := secure.CheckIdentityKey(f.Key); err != nil {
		return none, nil, fmt.Errorf("identity key refused: %v", err)
	}
	if !ed25519.Verify(f.Key, registerMessage(challenge, f.Name), f.Signature) {
		return none, nil, errors.New("bad signature: the registration is not signed by its identity key over this challenge")
	}
	if len(f.Credential) == 0 {
		return none, nil, errors.New("no credential")
	}
	cred, err := secure.ParseCredential(f.Credential)
	if err != nil {
		return none, nil, fmt.Errorf("credential does not parse: %v", err)
	}
	id := secure.IdentifierOf(f.Key)
	if err := s.verifier.VerifyCredential(cred, id, s.now()); err != nil {
		return none, nil, credentialRefusal(err)
	}
	got, ok := cred.Attributes[attributeRelay]
	switch {
	case !ok:
		return none, nil, fmt.Errorf("credential lacks the attribute relay (issue it with --attr relay=%s)", f.Name)
	case got != f.Name:
		return none, nil, fmt.Errorf("credential allows relay=%q, not %q", got, f.Name)
	}
	return id, cred, nil
}

// credentialRefusal says why VerifyCredential refused, plainly.
func credentialRefusal(err error) error {
	for _, r := range []struct {
		err error
		msg string
	}{
		{secure.ErrUnknownIssuer, "credential from an unknown issuer (not a --authority of this relay)"},
		{secure.ErrBadSignature, "credential signature does not verify"},
		{secure.ErrWrongSubject, "credential issued to another identity"},
		{secure.ErrNotYetValid, "credential not yet valid"},
		{secure.ErrExpired, "credential expired"},
		{secure.ErrRevoked, "credential revoked"},
	} {
		if errors.Is(err, r.err) {
			return fmt.Errorf("%s: %v", r.msg, err)
		}
	}
	return fmt.Errorf("credential refused: %v", err)
}

// claim gives name to c for id, unless another identity holds it on a live
// connection. A connection of the same identity is replaced (closed): it
// is the half-open one a reconnecting listener left behind.
func (s *Server) claim(c *relayConn, name string, id secure.Identifier, cred *secure.Credential) error {
	expires := cred.ExpiresAt
	s.mu.Lock()
	old := s.names[name]
	if old != nil && old != c && !old.holder.Equal(id) {
		s.mu.Unlock()
		return fmt.Errorf("name %q held by %s", name, old.holder.Short())
	}
	if old != nil && old != c {
		s.unregister(old)
		defer old.link.close(errors.New("relay: replaced by a new registration of the same identity"))
		s.log.Infof("Registration of %q from %s replaces the one from %s", name, c.remote, old.remote)
	}
	s.unregister(c) // a connection holds one name
	c.name, c.holder, c.credential = name, id, cred
	s.names[name] = c
	c.expiry = time.AfterFunc(expires.Sub(s.now()), func() {
		s.log.Infof("Credential of %q (%s, from %s) expired: closing its connection", name, id.Short(), c.remote)
		c.link.close(errExpired)
	})
	s.mu.Unlock()
	return nil
}

// errRevoked closes a registered connection whose credential a new
// revocation list revoked.
var errRevoked = errors.New("relay: the credential of the registration was revoked")

// UpdateRevocations applies a newer revocation list of a trusted authority
// (an older or foreign one is refused, as by secure.Verifier) and closes the
// connection of every registration whose credential it revokes: the name is
// free at once, and the listener's next registration is refused.
func (s *Server) UpdateRevocations(list *secure.RevocationList) error {
	if err := s.verifier.UpdateRevocations(list); err != nil {
		return fmt.Errorf("relay: revocation list: %w", err)
	}
	s.mu.Lock()
	registered := make([]*relayConn, 0, len(s.names))
	for _, c := range s.names {
		registered = append(registered, c)
	}
	s.mu.Unlock()
	now := s.now()
	for _, c := range registered {
		s.mu.Lock()
		name, holder, cred := c.name, c.holder, c.credential
		s.mu.Unlock()
		if name == "" {
			continue
		}
		if err := s.verifier.VerifyCredential(cred, holder, now); errors.Is(err, secure.ErrRevoked) {
			s.log.Infof("Credential of %q (%s, from %s) revoked: closing its connection", name, holder.Short(), c.remote)
			s.mu.Lock()
			s.unregister(c)
			s.mu.Unlock()
			c.link.close(errRevoked)
		}
	}
	return nil
}
