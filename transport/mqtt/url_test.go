package mqtt

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw, broker, base, canonical string
	}{
		{"mqtt://broker:1883/ockam/plant-7", "tcp://broker:1883", "ockam/plant-7", "mqtt://broker:1883/ockam/plant-7"},
		{"mqtt://broker/ockam", "tcp://broker:1883", "ockam", "mqtt://broker:1883/ockam"},
		{"mqtt://10.0.0.5:8883/a.b/c_d/e~f/G-9", "tcp://10.0.0.5:8883", "a.b/c_d/e~f/G-9", "mqtt://10.0.0.5:8883/a.b/c_d/e~f/G-9"},
		{"mqtt://[::1]:1884/x", "tcp://[::1]:1884", "x", "mqtt://[::1]:1884/x"},
		{"mqtt://h:65535/x", "tcp://h:65535", "x", "mqtt://h:65535/x"},
		{"mqtt://h/" + strings.Repeat("a", MaxBaseTopic), "tcp://h:1883", strings.Repeat("a", MaxBaseTopic), ""},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			u, err := ParseURL(tc.raw)
			require.NoError(t, err)
			require.Equal(t, tc.broker, u.Broker)
			require.Equal(t, tc.base, u.BaseTopic)
			if tc.canonical != "" {
				require.Equal(t, tc.canonical, u.String())
			}
			again, err := ParseURL(u.String())
			require.NoError(t, err, "the canonical form parses")
			require.Equal(t, u, again)
		})
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ raw, err string }{
		{"", `mqtt: address scheme "": want "mqtt"`},
		{"broker:1883/x", `mqtt: address scheme "broker": want "mqtt"`},
		{"/x", `mqtt: address scheme "": want "mqtt"`},
		{"tcp://broker:1883/x", `mqtt: address scheme "tcp": want "mqtt"`},
		{"MQTT://broker/x", `mqtt: address scheme "MQTT": want "mqtt"`},
		{"mqtts://broker/x", `mqtt: address scheme "mqtts": want "mqtt"`},
		{"mqtt:broker/x", `mqtt: address: want mqtt://host:port/topic`},
		{"mqtt://user:s3cret@broker/x", `mqtt: address has user information: set the username and password options instead`},
		{"mqtt://user@broker/x", `mqtt: address has user information: set the username and password options instead`},
		{"mqtt://broker/x?qos=2", `mqtt: address has a query`},
		{"mqtt://broker/x?", `mqtt: address has a query`},
		{"mqtt://broker/x#y", `mqtt: address has '#': wildcards are not allowed in a base topic`},
		{"mqtt://broker/x/#", `mqtt: address has '#': wildcards are not allowed in a base topic`},
		{"mqtt:///x", `mqtt: address has no host`},
		{"mqtt://:1883/x", `mqtt: address has no host`},
		{"mqtt://broker:/x", `mqtt: address has an empty port`},
		{"mqtt://broker:0/x", `mqtt: address port "0": want 1 to 65535`},
		{"mqtt://broker:01883/x", `mqtt: address port "01883": want 1 to 65535`},
		{"mqtt://broker:65536/x", `mqtt: address port "65536": want 1 to 65535`},
		{"mqtt://broker:http/x", `mqtt: address: invalid port ":http" after host`},
		{"mqtt://broker", `mqtt: address has no base topic: want mqtt://host:port/topic`},
		{"mqtt://broker/", `mqtt: address has no base topic: want mqtt://host:port/topic`},
		{"mqtt://broker/x/", `mqtt: base topic "x/" has an empty level`},
		{"mqtt://broker//x", `mqtt: base topic "/x" has an empty level`},
		{"mqtt://broker/x//y", `mqtt: base topic "x//y" has an empty level`},
		{"mqtt://broker/x/+/y", `mqtt: base topic "x/+/y" has a wildcard '+'`},
		{"mqtt://broker/x+", `mqtt: base topic "x+" has a wildcard '+'`},
		{"mqtt://broker/$SYS/x", `mqtt: base topic "$SYS/x": level 1 has '$': want A-Z a-z 0-9 . _ ~ -`},
		{"mqtt://broker/a/b c", `mqtt: base topic "a/b c": level 2 has ' ': want A-Z a-z 0-9 . _ ~ -`},
		{"mqtt://broker/caf\u00e9", `mqtt: base topic "café": level 1 has 'é': want A-Z a-z 0-9 . _ ~ -`},
		{"mqtt://broker/a%2Fb", `mqtt: address: percent-encoding is not allowed`},
		{"mqtt://broker/a%20b", `mqtt: address: percent-encoding is not allowed`},
		{"mqtt://broker/x\x00", `mqtt: address: net/url: invalid control character in URL`},
		{"mqtt://broker/" + strings.Repeat("a", MaxBaseTopic+1), `mqtt: base topic is 257 bytes, more than 256`},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			u, err := ParseURL(tc.raw)
			require.Nil(t, u)
			require.EqualError(t, err, tc.err)
			require.NotContains(t, err.Error(), "s3cret", "an error never repeats a password")
		})
	}
}
