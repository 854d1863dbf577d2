package control

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestVerifyAccepts: an operator's config to the device, by identifier and
// by selector, is accepted and its sequence recorded in the file.
func TestVerifyAccepts(t *testing.T) {
	f := newFixtures(t)
	v, _, path := f.deviceVerifier(t, RateLimit{})
	byID := sign(t, f.operator, configTemplate(Target{Device: f.device.id.Identifier()}, 1))
	in, err := v.Verify(byID.Marshal(), vectorNow)
	require.NoError(t, err)
	require.Equal(t, f.operator.id.Identifier(), in.Operator())
	require.Equal(t, byID.Payload, in.Payload)
	bySite := sign(t, f.operator, configTemplate(Target{Selector: map[string]string{"site": "plant-7"}}, 2))
	_, err = v.Verify(bySite.Marshal(), vectorNow)
	require.NoError(t, err)

	again, err := OpenSequenceStore(path)
	require.NoError(t, err)
	require.Equal(t, uint64(2), again.Last(f.operator.id.Identifier()))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
}

// TestVerifyRefusals performs each attack of docs/SECURITY.md ("Control instructions", C1 to C13) at
// the package level: each is refused with its code, and nothing is
// recorded (the operator's last sequence stays where it was).
func TestVerifyRefusals(t *testing.T) {
	f := newFixtures(t)
	device := Target{Device: f.device.id.Identifier()}
	valid := func(seq uint64) Template { return configTemplate(device, seq) }
	tamper := func(b []byte, i int) []byte { b = bytes.Clone(b); b[i] ^= 1; return b }

	tests := []struct {
		name  string
		setup func(t *testing.T, v *Verifier, creds *secure.Verifier) []byte
		now   time.Time
		code  RefusalCode
	}{
		{"signed by the gateway (C1)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.gateway, valid(5)).Marshal()
		}, vectorNow, RefusedUnauthorized},
		{"signed by a device (C1)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.device, valid(5)).Marshal()
		}, vectorNow, RefusedUnauthorized},
		{"operator without the attribute for the kind (C2)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			tpl := valid(5)
			tpl.Kind = KindArtifact
			return sign(t, f.operator, tpl).Marshal()
		}, vectorNow, RefusedUnauthorized},
		{"technician, another role (C2)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.technician, valid(5)).Marshal()
		}, vectorNow, RefusedUnauthorized},
		{"revoked operator (C3)", func(t *testing.T, _ *Verifier, creds *secure.Verifier) []byte {
			l, err := secure.NewRevocationList(f.authority.Signer(), 1, vectorCreated, vectorCreated.Add(7*24*time.Hour),
				[]secure.Identifier{f.operator.id.Identifier()}, nil)
			require.NoError(t, err)
			require.NoError(t, creds.UpdateRevocations(l))
			return sign(t, f.operator, valid(5)).Marshal()
		}, vectorNow, RefusedRevoked},
		{"operator of an untrusted authority (C4)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.outsider, valid(5)).Marshal()
		}, vectorNow, RefusedUnknownIssuer},
		{"operator credential expired (C4)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			tpl := valid(5)
			tpl.IssuedAt = vectorCreated.Add(vectorCredentialTTL)
			return sign(t, f.operator, tpl).Marshal()
		}, vectorCreated.Add(vectorCredentialTTL + time.Minute), RefusedInvalidCredential},
		{"operator's credential under another key (C4)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			// the gateway signs, presenting the operator's credential
			in := sign(t, f.gateway, valid(5))
			in.Credential = f.operator.cred
			body := in.appendBody(nil)
			sig, err := secure.SignBody(f.gateway.id.Signer(), instructionContext, body, "instruction")
			require.NoError(t, err)
			return append(body, sig...)
		}, vectorNow, RefusedInvalidCredential},
		{"replayed sequence (C5)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.operator, valid(4)).Marshal() // the same bytes as the one applied
		}, vectorNow, RefusedReplayed},
		{"older sequence after a newer one (C6)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.operator, valid(3)).Marshal()
		}, vectorNow, RefusedRollback},
		{"expired (C7)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.operator, valid(5)).Marshal()
		}, vectorNow.Add(time.Hour), RefusedExpired},
		{"issued in the future (C7)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return sign(t, f.operator, valid(5)).Marshal()
		}, vectorNow.Add(-secure.ClockSkew - time.Second), RefusedNotYetValid},
		{"wrong target: another device (C8)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			tpl := valid(5)
			tpl.Target = Target{Device: f.gateway.id.Identifier()}
			return sign(t, f.operator, tpl).Marshal()
		}, vectorNow, RefusedWrongTarget},
		{"wrong target: another site (C8)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			tpl := valid(5)
			tpl.Target = Target{Selector: map[string]string{"site": "plant-8"}}
			return sign(t, f.operator, tpl).Marshal()
		}, vectorNow, RefusedWrongTarget},
		{"wrong target: a selector the device only partly matches (C8)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			tpl := valid(5)
			tpl.Target = Target{Selector: map[string]string{"site": "plant-7", "role": "actuator"}}
			return sign(t, f.operator, tpl).Marshal()
		}, vectorNow, RefusedWrongTarget},
		{"unknown kind (C9)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			tpl := valid(5)
			tpl.Kind = 9
			return sign(t, f.operator, tpl).Marshal()
		}, vectorNow, RefusedUnknownKind},
		{"oversized payload (C10)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			in := sign(t, f.operator, valid(5))
			in.Payload = make([]byte, MaxPayloadSize+1)
			body := in.appendBody(nil)
			sig, err := secure.SignBody(f.operator.id.Signer(), instructionContext, body, "instruction")
			require.NoError(t, err)
			return append(body, sig...)
		}, vectorNow, RefusedTooLarge},
		{"over the size bound (C10)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return make([]byte, MaxInstructionSize+1)
		}, vectorNow, RefusedTooLarge},
		{"tampered payload byte (C11)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			b := sign(t, f.operator, valid(5)).Marshal()
			return tamper(b, len(b)-64-3)
		}, vectorNow, RefusedBadSignature},
		{"tampered sequence (C11)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			in := sign(t, f.operator, valid(5))
			b := in.Marshal()
			off := 1 + 1 + IDSize + 32 + 2 + len(in.Credential.Marshal()) + 7
			return tamper(b, off) // sequence 5 → 4
		}, vectorNow, RefusedBadSignature},
		{"tampered signature (C11)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			b := sign(t, f.operator, valid(5)).Marshal()
			return tamper(b, len(b)-1)
		}, vectorNow, RefusedBadSignature},
		{"trailing byte (C11)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return append(sign(t, f.operator, valid(5)).Marshal(), 0)
		}, vectorNow, RefusedMalformed},
		{"a credential signed as an instruction (C12)", func(t *testing.T, _ *Verifier, _ *secure.Verifier) []byte {
			return f.operator.cred.Marshal()
		}, vectorNow, RefusedMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, creds, _ := f.deviceVerifier(t, RateLimit{})
			// a first instruction applied: the replay and rollback cases are against sequence 4
			_, err := v.Verify(sign(t, f.operator, valid(4)).Marshal(), vectorNow)
			require.NoError(t, err)
			b := tt.setup(t, v, creds)
			before := v.sequences.Last(f.operator.id.Identifier())
			_, err = v.Verify(b, tt.now)
			require.Equal(t, tt.code, CodeOf(err), "%v", err)
			var r *RefusalError
			require.ErrorAs(t, err, &r)
			require.Equal(t, before, v.sequences.Last(f.operator.id.Identifier()), "a refusal recorded a sequence")
		})
	}
}

// TestVerifyFlood: past the burst, instructions are refused before any
// check (RefusedTooMany, C13), and one token comes back per interval.
func TestVerifyFlood(t *testing.T) {
	f := newFixtures(t)
	v, _, _ := f.deviceVerifier(t, RateLimit{Burst: 3, Every: 10 * time.Second})
	device := Target{Device: f.device.id.Identifier()}
	var seq uint64
	next := func() []byte { seq++; return sign(t, f.operator, configTemplate(device, seq)).Marshal() }
	for range 3 {
		_, err := v.Verify(next(), vectorNow)
		require.NoError(t, err)
	}
	for range 5 {
		_, err := v.Verify(next(), vectorNow.Add(9*time.Second))
		require.Equal(t, RefusedTooMany, CodeOf(err), "%v", err)
		require.False(t, CodeOf(err).Permanent())
	}
	require.Equal(t, uint64(3), v.sequences.Last(f.operator.id.Identifier()))
	// garbage counts too: a flood of junk costs no signature checks
	_, err := v.Verify([]byte{1}, vectorNow.Add(9*time.Second))
	require.Equal(t, RefusedTooMany, CodeOf(err))
	_, err = v.Verify(next(), vectorNow.Add(10*time.Second))
	require.NoError(t, err)
	_, err = v.Verify(next(), vectorNow.Add(10*time.Second))
	require.Equal(t, RefusedTooMany, CodeOf(err))
}

// TestSequencesSurviveRestart: a replay after a restart is still refused.
func TestSequencesSurviveRestart(t *testing.T) {
	f := newFixtures(t)
	v, creds, path := f.deviceVerifier(t, RateLimit{})
	b := sign(t, f.operator, configTemplate(Target{Device: f.device.id.Identifier()}, 7)).Marshal()
	_, err := v.Verify(b, vectorNow)
	require.NoError(t, err)
	store, err := OpenSequenceStore(path)
	require.NoError(t, err)
	v2, err := NewVerifier(VerifierConfig{Credentials: creds, Policy: testPolicy(t), Sequences: store,
		Device: Device{Identifier: f.device.id.Identifier(), Attributes: f.device.cred.Attributes}})
	require.NoError(t, err)
	_, err = v2.Verify(b, vectorNow)
	require.Equal(t, RefusedReplayed, CodeOf(err))
}

// TestSequenceStoreFile: the store refuses a file others may write, and a
// malformed one; a store it cannot write records nothing.
func TestSequenceStoreFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/seq"
	require.NoError(t, os.WriteFile(path, marshalStore(map[secure.Identifier]uint64{{1}: 3}), 0o600))
	s, err := OpenSequenceStore(path)
	require.NoError(t, err)
	require.Equal(t, uint64(3), s.Last(secure.Identifier{1}))

	require.NoError(t, os.Chmod(path, 0o620))
	_, err = OpenSequenceStore(path)
	require.ErrorContains(t, err, "group or others may write it")

	for _, bad := range [][]byte{
		{},
		{2, 0, 0, 0, 0},
		append(marshalStore(map[secure.Identifier]uint64{{1}: 3}), 0),
		marshalStore(map[secure.Identifier]uint64{{1}: 0}),
		append(append([]byte{1, 0, 0, 0, 2}, marshalStore(map[secure.Identifier]uint64{{2}: 1})[5:]...),
			marshalStore(map[secure.Identifier]uint64{{1}: 1})[5:]...), // out of order
	} {
		require.NoError(t, os.WriteFile(path, bad, 0o600))
		require.NoError(t, os.Chmod(path, 0o600))
		_, err = OpenSequenceStore(path)
		require.ErrorIs(t, err, ErrMalformed, "%x", bad)
	}

	// a store whose directory is gone fails, and records nothing
	s, err = OpenSequenceStore(dir + "/gone/seq")
	require.NoError(t, err)
	err = s.advance(secure.Identifier{1}, 1)
	require.Error(t, err)
	require.Zero(t, CodeOf(err))
	require.Zero(t, s.Last(secure.Identifier{1}))
}
