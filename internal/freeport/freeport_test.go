package freeport

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPort(t *testing.T) {
	lo, hi := belowEphemeral()
	seen := map[int]bool{}
	for range 50 {
		p := Port(t)
		require.GreaterOrEqual(t, p, lo)
		require.Less(t, p, hi)
		require.False(t, seen[p], "port %d returned twice", p)
		seen[p] = true
	}
	ln, err := net.Listen("tcp", Addr(t))
	require.NoError(t, err, "the port is free")
	ln.Close()
}
