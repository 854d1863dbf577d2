package ockamtest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/authority/wire"
)

// RevocationServer stands in for the authority service's revocation list
// endpoint (wire.ServiceRevocationList): it answers every request with the
// body Serve last set, nil (no list) until then, and counts the requests.
type RevocationServer struct {
	// Addr is where it listens (host:port).
	Addr string

	mu      sync.Mutex
	body    []byte
	fetches int
}

// NewRevocationServer listens at addr (host:port, such as 127.0.0.1:0)
// until the test ends.
func NewRevocationServer(t testing.TB, addr string) *RevocationServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("revocation server: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &RevocationServer{Addr: ln.Addr().String()}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				typ, _, err := wire.ReadServiceFrame(nc, wire.ServiceBodyLimit)
				if err != nil || typ != wire.ServiceRevocationList {
					return
				}
				s.mu.Lock()
				body := s.body
				s.fetches++
				s.mu.Unlock()
				_ = wire.WriteServiceFrame(nc, typ|wire.ServiceReply, body)
			}()
		}
	}()
	return s
}

// Source is the server as a revocation source setting: tcp://host:port.
func (s *RevocationServer) Source() string { return "tcp://" + s.Addr }

// Serve sets the body served from now on and resets the fetch count.
func (s *RevocationServer) Serve(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.fetches = body, 0
}

// FetchedTwice waits (30 s at most) until what Serve set was fetched twice:
// the answer to the first fetch was then applied.
func (s *RevocationServer) FetchedTwice(t testing.TB) {
	t.Helper()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.fetches >= 2
	}, 30*time.Second, time.Millisecond)
}
