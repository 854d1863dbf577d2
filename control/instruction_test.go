package control

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

func TestSignParseRoundTrip(t *testing.T) {
	f := newFixtures(t)
	for _, target := range []Target{
		{Device: f.device.id.Identifier()},
		{Selector: map[string]string{"site": "plant-7"}},
		{Selector: map[string]string{"site": "plant-7", "role": "sensor", "line": ""}},
	} {
		in := sign(t, f.operator, configTemplate(target, 42))
		got, err := Parse(in.Marshal())
		require.NoError(t, err)
		require.Equal(t, in.Marshal(), got.Marshal())
		require.Equal(t, in.ID, got.ID)
		require.Equal(t, KindConfig, got.Kind)
		require.Equal(t, uint64(42), got.Sequence)
		require.Equal(t, vectorNow, got.IssuedAt)
		require.Equal(t, vectorNow.Add(time.Hour), got.ExpiresAt)
		require.Equal(t, target.String(), got.Target.String())
		require.Equal(t, f.operator.id.Identifier(), got.Operator())
		require.Equal(t, f.operator.cred.Marshal(), got.Credential.Marshal())
		require.Equal(t, in.Payload, got.Payload)
		// re-encoding the parsed fields gives the same bytes: one encoding per instruction
		require.Equal(t, in.Marshal()[:len(in.raw)-64], got.appendBody(nil))
	}
}

func TestSignRefuses(t *testing.T) {
	f := newFixtures(t)
	device := Target{Device: f.device.id.Identifier()}
	ok := configTemplate(device, 1)
	for name, tc := range map[string]struct {
		tpl  Template
		cred *secure.Credential
		want error
	}{
		"kind 0":             {Template{Target: device, Sequence: 1, IssuedAt: vectorNow, Lifetime: time.Hour}, f.operator.cred, ErrMalformed},
		"sequence 0":         {Template{Kind: KindConfig, Target: device, IssuedAt: vectorNow, Lifetime: time.Hour}, f.operator.cred, ErrMalformed},
		"no target":          {Template{Kind: KindConfig, Sequence: 1, IssuedAt: vectorNow, Lifetime: time.Hour}, f.operator.cred, ErrMalformed},
		"both targets":       {Template{Kind: KindConfig, Target: Target{Device: device.Device, Selector: map[string]string{"a": "b"}}, Sequence: 1, IssuedAt: vectorNow, Lifetime: time.Hour}, f.operator.cred, ErrMalformed},
		"lifetime too long":  {Template{Kind: KindConfig, Target: device, Sequence: 1, IssuedAt: vectorNow, Lifetime: MaxLifetime + time.Second}, f.operator.cred, ErrMalformed},
		"lifetime under 1 s": {Template{Kind: KindConfig, Target: device, Sequence: 1, IssuedAt: vectorNow, Lifetime: time.Millisecond}, f.operator.cred, ErrMalformed},
		"payload too large":  {Template{Kind: KindConfig, Target: device, Sequence: 1, IssuedAt: vectorNow, Lifetime: time.Hour, Payload: make([]byte, MaxPayloadSize+1)}, f.operator.cred, ErrTooLarge},
		"bad selector key":   {Template{Kind: KindConfig, Target: Target{Selector: map[string]string{"a b": "c"}}, Sequence: 1, IssuedAt: vectorNow, Lifetime: time.Hour}, f.operator.cred, ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Sign(f.operator.id.Signer(), tc.cred, tc.tpl, nil)
			require.ErrorIs(t, err, tc.want)
		})
	}
	_, err := Sign(f.operator.id.Signer(), f.gateway.cred, ok, nil)
	require.ErrorContains(t, err, "not of the signing identity")
	tpl := ok
	tpl.Payload = make([]byte, MaxPayloadSize)
	in, err := Sign(f.operator.id.Signer(), f.operator.cred, tpl, nil)
	require.NoError(t, err, "a payload of exactly MaxPayloadSize")
	_, err = Parse(in.Marshal())
	require.NoError(t, err)
}

// field offsets of the instruction of sign(f.operator, configTemplate(device, 5)).
func offsets(in *Instruction) (seq, issued, target, payloadLen int) {
	seq = 1 + 1 + IDSize + 32 + 2 + len(in.Credential.Marshal())
	return seq, seq + 8, seq + 24, seq + 24 + 1 + 32
}

// TestParseStrict: every malformed variant is refused (ErrMalformed, or
// ErrTooLarge for sizes), never parsed into something else.
func TestParseStrict(t *testing.T) {
	f := newFixtures(t)
	in := sign(t, f.operator, configTemplate(Target{Device: f.device.id.Identifier()}, 5))
	good := in.Marshal()
	seqOff, issuedOff, targetOff, plOff := offsets(in)
	edit := func(fn func(b []byte) []byte) []byte { return fn(bytes.Clone(good)) }
	put64 := func(off int, v uint64) []byte {
		return edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[off:], v); return b })
	}
	sel := sign(t, f.operator, configTemplate(Target{Selector: map[string]string{"a": "1", "b": "2"}}, 5)).Marshal()
	selKeys := bytes.Index(sel, []byte("\x01a\x011\x01b\x012"))
	require.Positive(t, selKeys)

	for name, tc := range map[string]struct {
		b    []byte
		want error
	}{
		"empty":             {nil, ErrMalformed},
		"version 2":         {edit(func(b []byte) []byte { b[0] = 2; return b }), ErrMalformed},
		"kind 0":            {edit(func(b []byte) []byte { b[1] = 0; return b }), ErrMalformed},
		"trailing byte":     {append(bytes.Clone(good), 0), ErrMalformed},
		"no signature":      {good[:len(good)-64], ErrMalformed},
		"short signature":   {good[:len(good)-1], ErrMalformed},
		"sequence 0":        {put64(seqOff, 0), ErrMalformed},
		"expires = issued":  {put64(issuedOff+8, binary.BigEndian.Uint64(good[issuedOff:])), ErrMalformed},
		"lifetime over max": {put64(issuedOff+8, binary.BigEndian.Uint64(good[issuedOff:])+uint64(MaxLifetime/time.Second)+1), ErrMalformed},
		"time past 9999":    {put64(issuedOff+8, secure.MaxUnixSeconds+1), ErrMalformed},
		"target type 0":     {edit(func(b []byte) []byte { b[targetOff] = 0; return b }), ErrMalformed},
		"target type 3":     {edit(func(b []byte) []byte { b[targetOff] = 3; return b }), ErrMalformed},
		"zero device":       {edit(func(b []byte) []byte { clear(b[targetOff+1 : targetOff+33]); return b }), ErrMalformed},
		"payload length +1": {edit(func(b []byte) []byte { b[plOff+3]++; return b }), ErrMalformed},
		"payload length -1": {edit(func(b []byte) []byte { b[plOff+3]--; return b }), ErrMalformed},
		"payload over max":  {edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[plOff:], MaxPayloadSize+1); return b }), ErrTooLarge},
		"over the size cap": {make([]byte, MaxInstructionSize+1), ErrTooLarge},
		"credential length 0": {edit(func(b []byte) []byte {
			return append(append(b[:1+1+IDSize+32], 0, 0), b[seqOff:]...)
		}), ErrMalformed},
		"credential length past the end": {edit(func(b []byte) []byte { b[1+1+IDSize+32] = 0xff; return b }), ErrMalformed},
		"small-order operator key": {edit(func(b []byte) []byte {
			k := b[1+1+IDSize : 1+1+IDSize+32]
			clear(k)
			k[0] = 1
			return b
		}), ErrMalformed},
		"selector keys swapped": {func() []byte {
			b := bytes.Clone(sel)
			copy(b[selKeys:], "\x01b\x012\x01a\x011")
			return b
		}(), ErrMalformed},
		"selector key twice": {func() []byte {
			b := bytes.Clone(sel)
			copy(b[selKeys:], "\x01a\x011\x01a\x012")
			return b
		}(), ErrMalformed},
		"selector of 0": {func() []byte {
			b := bytes.Clone(sel)
			b[selKeys-1] = 0
			return b
		}(), ErrMalformed},
		"selector key with a space": {func() []byte {
			b := bytes.Clone(sel)
			b[selKeys+1] = ' '
			return b
		}(), ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.b)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// TestEveryByteIsSigned: flipping any bit of any byte of an instruction
// makes the device refuse it; none is accepted (C11).
func TestEveryByteIsSigned(t *testing.T) {
	f := newFixtures(t)
	good := sign(t, f.operator, configTemplate(Target{Selector: map[string]string{"site": "plant-7"}}, 5)).Marshal()
	v, _, _ := f.deviceVerifier(t, RateLimit{Burst: 1, Every: time.Nanosecond})
	for i := range good {
		for _, bit := range []byte{0x01, 0x80} {
			b := bytes.Clone(good)
			b[i] ^= bit
			_, err := v.Verify(b, vectorNow.Add(time.Duration(i)*time.Second))
			require.NotZero(t, CodeOf(err), "byte %d bit %#x: %v", i, bit, err)
		}
	}
	require.Zero(t, v.sequences.Last(f.operator.id.Identifier()))
	_, err := v.Verify(good, vectorNow.Add(time.Hour-time.Second))
	require.NoError(t, err)
}

// TestContextSeparation: the same body signed under another object's
// context (a credential's, here) does not verify as an instruction (C12).
func TestContextSeparation(t *testing.T) {
	f := newFixtures(t)
	in := sign(t, f.operator, configTemplate(Target{Device: f.device.id.Identifier()}, 5))
	body := in.appendBody(nil)
	for _, ctx := range []string{"telegraf-ockam credential v1\x00", "telegraf-ockam revocation v2\x00",
		"telegraf-ockam attestation v1\x00", artifactContext, "telegraf-ockam instruction v2\x00", ""} {
		sig, err := secure.SignBody(f.operator.id.Signer(), ctx, body, "test")
		require.NoError(t, err)
		v, _, _ := f.deviceVerifier(t, RateLimit{})
		_, err = v.Verify(append(bytes.Clone(body), sig...), vectorNow)
		require.Equal(t, RefusedBadSignature, CodeOf(err), "context %q", ctx)
	}
	require.True(t, strings.HasSuffix(instructionContext, "\x00"))
}

func TestTargetText(t *testing.T) {
	id := secure.IdentifierOf(make([]byte, 32))
	for _, s := range []string{id.String(), "site=plant-7", "role=sensor,site=plant-7", "site="} {
		tg, err := ParseTarget(s)
		require.NoError(t, err, s)
		require.Equal(t, s, tg.String())
	}
	for _, s := range []string{"", "site", "I00", "site=a,site=b", "a b=c", "=x", "a=\x01"} {
		_, err := ParseTarget(s)
		require.Error(t, err, "%q", s)
	}
	tg, err := ParseTarget("site=plant-7,role=sensor")
	require.NoError(t, err)
	require.Equal(t, "role=sensor,site=plant-7", tg.String())
	require.True(t, tg.Matches(secure.Identifier{}, map[string]string{"site": "plant-7", "role": "sensor", "x": "y"}))
	require.False(t, tg.Matches(secure.Identifier{}, map[string]string{"site": "plant-7"}))
}

func TestKind(t *testing.T) {
	for _, k := range []Kind{KindConfig, KindArtifact, KindCommand} {
		got, err := ParseKind(k.String())
		require.NoError(t, err)
		require.Equal(t, k, got)
	}
	require.Equal(t, "kind(9)", Kind(9).String())
	_, err := ParseKind("firmware")
	require.Error(t, err)
	require.False(t, Kind(0).Known())
}

func TestPolicy(t *testing.T) {
	_, err := NewPolicy(Rule{Kinds: []Kind{KindConfig}})
	require.ErrorContains(t, err, "names no attribute")
	_, err = NewPolicy(Rule{Attributes: map[string]string{"role": "operator"}})
	require.ErrorContains(t, err, "names no kind")
	_, err = NewPolicy(Rule{Attributes: map[string]string{"role": "operator"}, Kinds: []Kind{9}})
	require.ErrorContains(t, err, "unknown kind")
	p := testPolicy(t)
	require.True(t, p.Allows(map[string]string{"role": "operator", "site": "x"}, KindConfig))
	require.False(t, p.Allows(map[string]string{"role": "operator"}, KindArtifact))
	require.True(t, p.Allows(map[string]string{"role": "release-manager"}, KindArtifact))
	require.False(t, p.Allows(map[string]string{"Role": "operator"}, KindConfig))
	empty, err := NewPolicy()
	require.NoError(t, err)
	require.False(t, empty.Allows(map[string]string{"role": "operator"}, KindConfig))
}

// edVerify is crypto/ed25519.Verify, for the vectors.
func edVerify(pub, msg, sig []byte) bool { return ed25519.Verify(pub, msg, sig) }
