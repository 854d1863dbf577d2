package sender

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestBackoffFor: a permanent refusal grows the wait from 5 s to 5 min; a
// refusal that may pass (too many channels) and any other failure stay
// within 100 ms .. 30 s.
func TestBackoffFor(t *testing.T) {
	revoked := &secure.RefusedError{Code: secure.RefusedRevoked}
	busy := &secure.RefusedError{Code: secure.RefusedTooManyChannels}
	var got []time.Duration
	for b, i := time.Duration(0), 0; i < 10; i++ {
		b = backoffFor(b, revoked)
		got = append(got, b)
	}
	s := time.Second
	require.Equal(t, []time.Duration{5 * s, 10 * s, 20 * s, 40 * s, 80 * s, 160 * s, 300 * s, 300 * s, 300 * s, 300 * s}, got)

	for _, err := range []error{busy, nil, errString("connection refused")} {
		got = got[:0]
		for b, i := minBackoff, 0; i < 10; i++ {
			b = backoffFor(b, err)
			got = append(got, b)
		}
		ms := time.Millisecond
		require.Equal(t, []time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 12800 * ms, 25600 * ms, 30 * s, 30 * s}, got, "%v", err)
	}
	// After a refusal for good, the next other failure falls back within 30 s.
	require.Equal(t, maxBackoff, backoffFor(maxRefusedBackoff, nil))
}

type errString string

func (e errString) Error() string { return string(e) }
