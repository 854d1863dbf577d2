package vectorfile

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	var v File
	v.Comment("made by %s", "a test")
	v.Set("key", [32]byte{1, 2})
	v.Set("raw", []byte{0xab, 0xcd})
	v.Set("when", time.Date(2026, time.January, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)))
	v.Set("n", 7)
	v.Attributes(map[string]string{"site": "plant-7", "role": "sensor"})
	text := v.String()
	require.Equal(t, "# made by a test\n"+
		"key: 0102000000000000000000000000000000000000000000000000000000000000\n"+
		"raw: abcd\n"+
		"when: 2026-01-02T02:04:05Z\n"+
		"n: 7\n"+
		"attribute: role=sensor\n"+
		"attribute: site=plant-7\n", text)

	p := Parse(t, text)
	require.Equal(t, [32]byte{1, 2}, p.Key32(t, "key"))
	require.Equal(t, []byte{0xab, 0xcd}, p.Bytes(t, "raw"))
	require.Equal(t, time.Date(2026, time.January, 2, 2, 4, 5, 0, time.UTC), p.Time(t, "when"))
	require.Equal(t, "7", p.Get(t, "n"))
	require.Equal(t, []string{"role=sensor", "site=plant-7"}, p.All("attribute"))
	require.Equal(t, map[string]string{"role": "sensor", "site": "plant-7"}, p.Attrs())
	require.Empty(t, p.All("absent"))
}

func TestKeyIsFirstHashBlock(t *testing.T) {
	label := "telegraf-ockam vectors: device identity key"
	want := sha256.Sum256(append([]byte(label), 0, 0, 0, 0, 0, 0, 0, 0))
	require.Equal(t, want, Key("device identity key"))

	// The stream goes on with counter 1 after the first block.
	s := NewHashStream(label)
	got := make([]byte, 40)
	n, err := s.Read(got)
	require.NoError(t, err)
	require.Equal(t, 40, n)
	next := sha256.Sum256(append([]byte(label), 0, 0, 0, 0, 0, 0, 0, 1))
	require.Equal(t, hex.EncodeToString(want[:])+hex.EncodeToString(next[:8]), hex.EncodeToString(got))
}
