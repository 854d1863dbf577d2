package sender

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseAddress(t *testing.T) {
	for addr, want := range map[string]string{
		"tcp://127.0.0.1:4000":  "127.0.0.1:4000",
		"tcp://gateway:4000/":   "gateway:4000",
		"tcp://[::1]:4000":      "[::1]:4000",
		"udp://127.0.0.1:4000":  "",
		"127.0.0.1:4000":        "",
		"tcp://127.0.0.1":       "",
		"tcp://127.0.0.1:0":     "",
		"tcp://127.0.0.1:99999": "",
		"tcp://:4000":           "",
		"tcp://h:4000/path":     "",
		"tcp://u@h:4000":        "",
	} {
		got, err := parseAddress(addr)
		if want == "" {
			require.Error(t, err, addr)
			require.Contains(t, err.Error(), "address", addr)
			continue
		}
		require.NoError(t, err, addr)
		require.Equal(t, want, got, addr)
	}
	_, err := parseAddress("udp://127.0.0.1:4000")
	require.ErrorContains(t, err, "only tcp:// and mqtt:// addresses are supported")
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		address string
		route   []string
		kind    targetKind
		text    string // the target's text, or a part of the error
		fails   bool
	}{
		{address: "tcp://127.0.0.1:4000", kind: targetTCP, text: "tcp://127.0.0.1:4000"},
		{address: "mqtt://broker:1883/ockam/plant-7", kind: targetMQTT, text: "mqtt://broker:1883/ockam/plant-7"},
		{route: []string{"tcp://relay-a:4000", "tcp://relay-b:4000", "plant-7-gateway"}, kind: targetRoute,
			text: "route tcp://relay-a:4000 → tcp://relay-b:4000 → plant-7-gateway"},
		{address: "tcp://127.0.0.1:4000", route: []string{"tcp://relay:4000", "gw"}, fails: true, text: "not both"},
		{fails: true, text: `"address" is required (or "route"`},
		{address: "mqtt://broker:1883", fails: true, text: `address "mqtt://broker:1883"`},
		{address: "mqtt://broker:1883/ockam/#", fails: true, text: "mqtt://broker:1883/ockam/#"},
		{route: []string{"plant-7-gateway"}, fails: true, text: "route:"},
		{route: []string{"tcp://relay:4000", "bad name!"}, fails: true, text: "route:"},
	} {
		got, err := ParseTarget(tc.address, tc.route)
		if tc.fails {
			require.ErrorContains(t, err, tc.text, "%q %q", tc.address, tc.route)
			continue
		}
		require.NoError(t, err, "%q %q", tc.address, tc.route)
		require.Equal(t, tc.kind, got.kind)
		require.Equal(t, tc.text, got.String())
	}
}
