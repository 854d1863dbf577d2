package mqtt

import (
	"bytes"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/logger"
)

// TestOptionsRedacted: no verb of fmt, nor slog, prints the password.
func TestOptionsRedacted(t *testing.T) {
	o := Options{Username: "telegraf", Password: "hunter2-s3cret", MaxSessions: 5, ConnectTimeout: time.Second, Logger: logger.Nop{}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%T %v"} {
		out := fmt.Sprintf(verb, o)
		require.NotContains(t, out, "hunter2", verb)
		require.NotContains(t, out, fmt.Sprintf("%x", "hunter2"), verb)
		out = fmt.Sprintf(verb, &o)
		require.NotContains(t, out, "hunter2", verb)
	}
	require.Equal(t, `mqtt.Options{Username: "telegraf", Password: "redacted", MaxSessions: 5, ConnectTimeout: 1s}`, fmt.Sprint(o))
	require.Equal(t, `mqtt.Options{Username: "", Password: "", MaxSessions: 0, ConnectTimeout: 0s}`, fmt.Sprint(Options{}))
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("options", "opts", o)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("options", "opts", o)
	require.NotContains(t, buf.String(), "hunter2")
	require.Contains(t, buf.String(), "redacted")
}

// TestSID: session ids are 32 lowercase hex, and only those are valid.
func TestSID(t *testing.T) {
	a, b := newSID(), newSID()
	require.NotEqual(t, a, b)
	require.True(t, validSID(a))
	for _, s := range []string{"", "0", a[:31], a + "0", "ABABABABABABABABABABABABABABABAB", "gggggggggggggggggggggggggggggggg", "+", "#"} {
		require.False(t, validSID(s), s)
	}
}
