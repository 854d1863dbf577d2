package control

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// gatewayPending is a gateway's pending store trusting the fixtures'
// authority, in a new directory.
func (f *fixtures) gatewayPending(t *testing.T, limits PendingLimits) (*Pending, *secure.Verifier, string) {
	t.Helper()
	creds, err := secure.NewVerifier(f.authority.Public())
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "pending")
	p, err := OpenPending(path, creds, limits, vectorNow)
	require.NoError(t, err)
	return p, creds, path
}

// signSeq signs a config instruction with a distinct id per sequence.
func signSeq(t *testing.T, p party, target Target, seq uint64) *Instruction {
	t.Helper()
	tpl := configTemplate(target, seq)
	in, err := Sign(p.id.Signer(), p.cred, tpl, nil)
	require.NoError(t, err)
	return in
}

func ids(ins []*Instruction) []uint64 {
	var s []uint64
	for _, in := range ins {
		s = append(s, in.Sequence)
	}
	return s
}

func TestPendingDue(t *testing.T) {
	f := newFixtures(t)
	p, creds, path := f.gatewayPending(t, PendingLimits{})
	dev, other := f.device.id.Identifier(), f.gateway.id.Identifier()
	site := Target{Selector: map[string]string{"site": "plant-7"}}
	// handed over out of order: the device gets them in sequence order
	for _, in := range []*Instruction{
		signSeq(t, f.operator, site, 3),
		signSeq(t, f.operator, Target{Device: dev}, 2),
		signSeq(t, f.operator, Target{Device: other}, 4),
		signSeq(t, f.operator, Target{Selector: map[string]string{"site": "plant-8"}}, 5),
	} {
		_, err := p.Add(in.Marshal(), vectorNow)
		require.NoError(t, err)
	}
	attrs := f.device.cred.Attributes
	due := p.Due(dev, attrs, vectorNow)
	require.Equal(t, []uint64{2, 3}, ids(due))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	// answered: the device's own instruction leaves; the site's stays for others
	require.NoError(t, p.Answered(due[0].ID, dev))
	require.NoError(t, p.Answered(due[1].ID, dev))
	require.Empty(t, p.Due(dev, attrs, vectorNow))
	newcomer := secure.Identifier{7}
	require.Equal(t, []uint64{3}, ids(p.Due(newcomer, map[string]string{"site": "plant-7"}, vectorNow)))
	require.Equal(t, 3, p.Len())
	// another device's answer to a device-targeted instruction changes nothing
	require.NoError(t, p.Answered(p.Due(other, nil, vectorNow)[0].ID, dev))
	require.Equal(t, 3, p.Len())

	// a restart keeps it all; past the expiry nothing is due, and the store empties
	again, err := OpenPending(path, creds, PendingLimits{}, vectorNow)
	require.NoError(t, err)
	require.Empty(t, again.Due(dev, attrs, vectorNow))
	require.Equal(t, []uint64{3}, ids(again.Due(newcomer, map[string]string{"site": "plant-7"}, vectorNow)))
	require.Empty(t, again.Due(newcomer, map[string]string{"site": "plant-7"}, vectorNow.Add(time.Hour)))
	require.NoError(t, again.Prune(vectorNow.Add(time.Hour)))
	require.Zero(t, again.Len())
	again, err = OpenPending(path, creds, PendingLimits{}, vectorNow)
	require.NoError(t, err)
	require.Zero(t, again.Len())
}

// TestPendingRefuses: the gateway keeps junk, forgeries, revoked or
// expired operators and floods out of its store (C13, at the gateway).
func TestPendingRefuses(t *testing.T) {
	f := newFixtures(t)
	dev := Target{Device: f.device.id.Identifier()}
	good := signSeq(t, f.operator, dev, 1)
	tampered := good.Marshal()
	tampered[len(tampered)-70] ^= 1
	unknown := configTemplate(dev, 1)
	unknown.Kind = 9
	for name, tc := range map[string]struct {
		b    []byte
		now  time.Time
		want error
	}{
		"malformed":        {[]byte{1, 2, 3}, vectorNow, ErrMalformed},
		"too large":        {make([]byte, MaxInstructionSize+1), vectorNow, ErrTooLarge},
		"tampered":         {tampered, vectorNow, secure.ErrBadSignature},
		"untrusted":        {signSeq(t, f.outsider, dev, 1).Marshal(), vectorNow, secure.ErrUnknownIssuer},
		"expired":          {good.Marshal(), vectorNow.Add(time.Hour), secure.ErrExpired},
		"unknown kind":     {sign(t, f.operator, unknown).Marshal(), vectorNow, ErrMalformed},
		"credential ended": {good.Marshal(), vectorCreated.Add(vectorCredentialTTL), secure.ErrExpired},
	} {
		t.Run(name, func(t *testing.T) {
			p, _, _ := f.gatewayPending(t, PendingLimits{})
			_, err := p.Add(tc.b, tc.now)
			require.ErrorIs(t, err, tc.want)
			require.Zero(t, p.Len())
		})
	}

	t.Run("revoked", func(t *testing.T) {
		p, creds, _ := f.gatewayPending(t, PendingLimits{})
		l, err := secure.NewRevocationList(f.authority.Signer(), 1, vectorCreated, vectorCreated.Add(7*24*time.Hour),
			nil, []secure.CredentialID{f.operator.cred.ID})
		require.NoError(t, err)
		require.NoError(t, creds.UpdateRevocations(l))
		_, err = p.Add(good.Marshal(), vectorNow)
		require.ErrorIs(t, err, secure.ErrRevoked)
	})
	t.Run("duplicate", func(t *testing.T) {
		p, _, _ := f.gatewayPending(t, PendingLimits{})
		_, err := p.Add(good.Marshal(), vectorNow)
		require.NoError(t, err)
		_, err = p.Add(good.Marshal(), vectorNow)
		require.ErrorIs(t, err, ErrDuplicate)
		require.Equal(t, 1, p.Len())
	})
	t.Run("flood", func(t *testing.T) {
		p, _, _ := f.gatewayPending(t, PendingLimits{PerTarget: 3, Total: 5, Bytes: 64 << 20})
		for seq := uint64(1); seq <= 3; seq++ {
			_, err := p.Add(signSeq(t, f.operator, dev, seq).Marshal(), vectorNow)
			require.NoError(t, err)
		}
		_, err := p.Add(signSeq(t, f.operator, dev, 4).Marshal(), vectorNow)
		require.ErrorIs(t, err, ErrPendingFull, "per target")
		site := Target{Selector: map[string]string{"site": "plant-7"}}
		for seq := uint64(5); seq <= 6; seq++ {
			_, err := p.Add(signSeq(t, f.operator, site, seq).Marshal(), vectorNow)
			require.NoError(t, err)
		}
		_, err = p.Add(signSeq(t, f.operator, Target{Selector: map[string]string{"site": "plant-9"}}, 7).Marshal(), vectorNow)
		require.ErrorIs(t, err, ErrPendingFull, "in all")
		require.Equal(t, 5, p.Len())
		// an expired instruction is refused, not stored
		_, err = p.Add(signSeq(t, f.operator, dev, 8).Marshal(), vectorNow.Add(time.Hour))
		require.ErrorIs(t, err, secure.ErrExpired)
	})
	t.Run("bytes", func(t *testing.T) {
		p, _, _ := f.gatewayPending(t, PendingLimits{PerTarget: 10, Total: 10, Bytes: MaxInstructionSize})
		tpl := configTemplate(dev, 1)
		tpl.Payload = make([]byte, MaxPayloadSize)
		big, err := Sign(f.operator.id.Signer(), f.operator.cred, tpl, nil)
		require.NoError(t, err)
		_, err = p.Add(big.Marshal(), vectorNow)
		require.NoError(t, err)
		tpl.Sequence = 2
		big2, err := Sign(f.operator.id.Signer(), f.operator.cred, tpl, nil)
		require.NoError(t, err)
		_, err = p.Add(big2.Marshal(), vectorNow)
		require.ErrorIs(t, err, ErrPendingFull)
		require.Equal(t, 1, p.Len())
	})
}

func TestPendingFile(t *testing.T) {
	f := newFixtures(t)
	p, creds, path := f.gatewayPending(t, PendingLimits{})
	in := signSeq(t, f.operator, Target{Selector: map[string]string{"site": "plant-7"}}, 1)
	_, err := p.Add(in.Marshal(), vectorNow)
	require.NoError(t, err)
	require.NoError(t, p.Answered(in.ID, secure.Identifier{2}))
	require.NoError(t, p.Answered(in.ID, secure.Identifier{1}))
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, p.marshal(), good)

	for name, b := range map[string][]byte{
		"version":        append([]byte{2}, good[1:]...),
		"trailing":       append(append([]byte(nil), good...), 0),
		"truncated":      good[:len(good)-1],
		"answered order": append(append([]byte(nil), good[:len(good)-64]...), append(good[len(good)-32:], good[len(good)-64:len(good)-32]...)...),
	} {
		require.NoError(t, os.WriteFile(path, b, 0o600), name)
		_, err := OpenPending(path, creds, PendingLimits{}, vectorNow)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
	require.NoError(t, os.WriteFile(path, good, 0o600))
	require.NoError(t, os.Chmod(path, 0o666))
	_, err = OpenPending(path, creds, PendingLimits{}, vectorNow)
	require.ErrorContains(t, err, "group or others may write it")
}
