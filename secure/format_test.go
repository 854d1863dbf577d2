package secure

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// secretForms returns the ways fmt can print a key: hex in both cases,
// decimal and Go-syntax byte lists.
func secretForms(key []byte) []string {
	trim := func(s string, prefix string) string { return strings.TrimSuffix(strings.TrimPrefix(s, prefix), "}") }
	return []string{
		hex.EncodeToString(key),
		strings.ToUpper(hex.EncodeToString(key)),
		strings.Trim(fmt.Sprint(key), "[]"),
		trim(fmt.Sprintf("%#v", key), "[]byte{"),
		trim(fmt.Sprintf("%#v", [32]byte(key)), "[32]uint8{"),
	}
}

// TestFormatNoSecrets prints the types that hold keys with every verb and
// checks that no private or session key comes out.
func TestFormatNoSecrets(t *testing.T) {
	var seed, scalar [32]byte
	for i := range seed {
		seed[i], scalar[i] = byte(i+1), byte(200+i)
	}
	l := seededIdentity(t, seed, scalar, t0)
	e := newTestEnv(t)
	e.device = l
	e.deviceCred = issue(t, e.authority, l.Identifier(), sensorAttrs)
	dev, lis, _, _ := newChannelPair(t, e)
	sendKey, recvKey := dev.session.send.UnsafeKey(), dev.session.recv.UnsafeKey()
	cfg := e.deviceConfig()
	i, r := mustPair(t, cfg, e.listenerConfig())
	msg1, err := i.Start()
	require.NoError(t, err)
	_, err = r.Respond(msg1)
	require.NoError(t, err)
	initiatorEphemeral, responderEphemeral := i.h.hs.LocalEphemeral().Private, r.h.hs.LocalEphemeral().Private

	var secrets []string
	for _, k := range [][]byte{seed[:], scalar[:], sendKey[:], recvKey[:], initiatorEphemeral, responderEphemeral} {
		secrets = append(secrets, secretForms(k)...)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%d", "%x", "%X", "%q"} {
		for name, v := range map[string]any{
			"*LocalIdentity": l, "LocalIdentity": *l, "*Session": dev.session, "*Channel": dev,
			"*Peer": lis.Peer(), "HandshakeConfig": cfg, "*HandshakeConfig": &cfg,
			"*Initiator": i, "*Responder": r, "Initiator": *i,
		} {
			out := fmt.Sprintf(verb, v)
			for _, s := range secrets {
				require.NotContains(t, out, s, "%s of %s", verb, name)
			}
		}
	}
	require.Equal(t, "secure.Session(peer "+e.listener.Identifier().Short()+", keys redacted)", fmt.Sprintf("%x", dev.session))
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("up", "session", dev.session)
	require.Contains(t, logged.String(), `session="secure.Session(peer `+e.listener.Identifier().Short()+`, keys redacted)"`)
}
