package control

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// artifactSeq signs an artifact instruction of data for target, its
// manifest signed by the operator's key (the gateway does not check it).
func artifactSeq(t *testing.T, f *fixtures, target Target, seq uint64, data []byte) *Instruction {
	t.Helper()
	m, err := SignManifest(f.operator.id.Signer(), "fw.bin", uint64(len(data)), sha256.Sum256(data))
	require.NoError(t, err)
	tpl := configTemplate(target, seq)
	tpl.Kind, tpl.Payload = KindArtifact, m.Marshal()
	in, err := Sign(f.operator.id.Signer(), f.operator.cred, tpl, nil)
	require.NoError(t, err)
	return in
}

// TestPendingArtifact: an artifact is kept 0600 next to the store with
// its instruction, across a restart, and removed when its one device
// answered or when it expired; bytes of another size than the manifest's,
// over the cap, or without an artifact instruction are refused; an entry
// whose file is gone is refused at start, and stray files are removed.
func TestPendingArtifact(t *testing.T) {
	f := newFixtures(t)
	p, creds, path := f.gatewayPending(t, PendingLimits{PerTarget: 8, Total: 8, Bytes: 1 << 20, ArtifactBytes: 100})
	dev := f.device.id.Identifier()
	data := bytes.Repeat([]byte("a"), 60)
	in := artifactSeq(t, f, Target{Device: dev}, 1, data)
	file := filepath.Join(path+".artifacts", in.ID.String())

	_, err := p.AddArtifact(in.Marshal(), 61, bytes.NewReader(append(data, 'b')), vectorNow)
	require.ErrorIs(t, err, ErrMalformed)
	_, err = p.Add(in.Marshal(), vectorNow)
	require.ErrorIs(t, err, ErrMalformed)
	_, err = p.AddArtifact(signSeq(t, f.operator, Target{Device: dev}, 9).Marshal(), 60, bytes.NewReader(data), vectorNow)
	require.ErrorIs(t, err, ErrMalformed)
	// the client stops early: nothing kept, the bytes reserved are released
	_, err = p.AddArtifact(in.Marshal(), 60, bytes.NewReader(data[:10]), vectorNow)
	require.Error(t, err)
	require.Equal(t, 0, p.Len())

	_, err = p.AddArtifact(in.Marshal(), 60, bytes.NewReader(data), vectorNow)
	require.NoError(t, err)
	fi, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	// 60 of 100 bytes held: another 60 passes the cap
	second := artifactSeq(t, f, Target{Device: dev}, 2, data)
	_, err = p.AddArtifact(second.Marshal(), 60, bytes.NewReader(data), vectorNow)
	require.ErrorIs(t, err, ErrPendingFull)

	// a restart keeps it, and removes a stray file
	stray := filepath.Join(path+".artifacts", ".x.tmp")
	require.NoError(t, os.WriteFile(stray, []byte("x"), 0o600))
	p, err = OpenPending(path, creds, PendingLimits{PerTarget: 8, Total: 8, Bytes: 1 << 20, ArtifactBytes: 100}, vectorNow)
	require.NoError(t, err)
	require.Equal(t, 1, p.Len())
	af, err := p.ArtifactFile(in)
	require.NoError(t, err)
	got := make([]byte, 61)
	n, _ := af.Read(got)
	af.Close()
	require.Equal(t, data, got[:n])
	_, err = os.Stat(stray)
	require.ErrorIs(t, err, os.ErrNotExist)

	// answered by its device: gone, and its bytes no longer count
	require.NoError(t, p.Answered(in.ID, dev))
	_, err = os.Stat(file)
	require.ErrorIs(t, err, os.ErrNotExist)
	_, err = p.AddArtifact(second.Marshal(), 60, bytes.NewReader(data), vectorNow)
	require.NoError(t, err)

	// expired: gone at the next prune
	require.NoError(t, p.Prune(vectorNow.Add(2*time.Hour)))
	_, err = os.Stat(filepath.Join(path+".artifacts", second.ID.String()))
	require.ErrorIs(t, err, os.ErrNotExist)

	// an entry whose artifact file is gone is refused at start
	third := artifactSeq(t, f, Target{Device: dev}, 3, data)
	_, err = p.AddArtifact(third.Marshal(), 60, bytes.NewReader(data), vectorNow)
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(path+".artifacts", third.ID.String())))
	_, err = OpenPending(path, creds, PendingLimits{}, vectorNow)
	require.ErrorContains(t, err, "its artifact")
}
