// Package ockamtest makes small fleets on disk for tests of outputs.ockam,
// the listener and the commands that run them: an authority, and members
// with a vault, a credential and the authority's identity file, as the
// ockam command would leave them.
package ockamtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/freeport"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// Fleet is an authority whose identity file is AuthorityFile, in Dir.
type Fleet struct {
	Dir           string
	Authority     *secure.LocalIdentity // in a memory vault
	AuthorityFile string
}

// Member is an enrolled identity: its vault directory (unencrypted) and its
// credential file.
type Member struct {
	Identity       *secure.LocalIdentity
	Credential     *secure.Credential
	VaultPath      string
	CredentialPath string
}

// NewFleet creates an authority in a temporary directory of t.
func NewFleet(t testing.TB) *Fleet {
	t.Helper()
	f := &Fleet{Dir: t.TempDir()}
	var err error
	if f.Authority, err = secure.CreateIdentity(vault.NewMemory(), time.Now()); err != nil {
		t.Fatal(err)
	}
	f.AuthorityFile = filepath.Join(f.Dir, "authority.identity")
	WriteFile(t, f.AuthorityFile, f.Authority.Public().MarshalFile())
	return f
}

// Enroll creates the identity name (vault Dir/name) and a credential for it
// with attrs, valid for an hour (Dir/name.cred).
func (f *Fleet) Enroll(t testing.TB, name string, attrs map[string]string) Member {
	t.Helper()
	now := time.Now()
	m := Member{VaultPath: filepath.Join(f.Dir, name), CredentialPath: filepath.Join(f.Dir, name+".cred")}
	v, err := vault.OpenFile(m.VaultPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Identity, err = secure.CreateIdentity(v, now); err != nil {
		t.Fatal(err)
	}
	m.Credential = f.Issue(t, f.Authority, m.Identity.Identifier(), attrs, now, time.Hour)
	WriteFile(t, m.CredentialPath, m.Credential.MarshalFile())
	return m
}

// Issue signs a credential for subject with authority's key.
func (*Fleet) Issue(t testing.TB, authority *secure.LocalIdentity, subject secure.Identifier,
	attrs map[string]string, issuedAt time.Time, ttl time.Duration) *secure.Credential {
	t.Helper()
	c, err := secure.IssueCredential(authority.Signer(), subject, attrs, issuedAt, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// WriteFile writes data to path, readable by its owner only.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// FreeAddr returns a loopback host:port that nothing listens on now, for a
// listener that binds it later (package freeport).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeport.Addr(t)
}
