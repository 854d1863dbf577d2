package receiver

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// artifactInstruction signs an artifact instruction of op for target,
// carrying a manifest signed by release for data.
func artifactInstruction(t *testing.T, op, release *device, target string, seq uint64, name string, data []byte) *control.Instruction {
	t.Helper()
	m, err := control.SignManifest(release.id.Signer(), name, uint64(len(data)), sha256.Sum256(data))
	require.NoError(t, err)
	tg, err := control.ParseTarget(target)
	require.NoError(t, err)
	in, err := control.Sign(op.id.Signer(), op.cred, control.Template{Kind: control.KindArtifact, Target: tg,
		Sequence: seq, IssuedAt: time.Now(), Lifetime: time.Hour, Payload: m.Marshal()}, nil)
	require.NoError(t, err)
	return in
}

// handOverArtifact sends an instruction and n bytes of data to the control
// endpoint and returns its answer.
func handOverArtifact(t *testing.T, path string, in *control.Instruction, n uint64, data []byte) (byte, string) {
	t.Helper()
	nc, err := net.Dial("unix", path)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(wait)))
	b := in.Marshal()
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	frame = binary.BigEndian.AppendUint64(append(frame, b...), n)
	_, err = nc.Write(append(frame, data...))
	require.NoError(t, err)
	answer, err := io.ReadAll(nc)
	require.NoError(t, err)
	require.NotEmpty(t, answer)
	return answer[0], string(answer[1:])
}

// TestControlArtifact delivers artifacts to the real agent over a real
// channel, in chunks of the largest size and a partial last one: applied
// (staged bytes, apply program run), a digest mismatch, a manifest of
// another release identity, and bytes that do not match the manifest's
// size or pass the gateway's cap (refused at the endpoint).
func TestControlArtifact(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	cfg := f.controlConfig(t, dir)
	cfg.ControlLimits = control.PendingLimits{PerTarget: 64, Total: 64, Bytes: 64 << 20, ArtifactBytes: 1 << 20}
	sink := newChanSink()
	r := start(t, cfg, newCounters(), sink)
	state := t.TempDir()
	dev := f.agentDevice(t, map[string]string{"site": "plant-7", "role": "sensor"}, state)
	dev.connect(f, r.Addr())
	op := f.operator(nil)
	id := dev.d.id.Identifier().String()

	data := make([]byte, 2*secure.MaxChunkData+1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	in := artifactInstruction(t, op, dev.release, id, 1, "fw.bin", data)
	status, reason := handOverArtifact(t, cfg.ControlSocket, in, uint64(len(data)), data)
	require.Equal(t, byte(EndpointAccepted), status, reason)
	kept, err := os.Stat(filepath.Join(dir, "pending.artifacts", in.ID.String()))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), kept.Mode().Perm())
	tg, fields := outcomeOf(t, sink, in.ID, Delivered())
	require.Equal(t, "applied", tg["result"], fields)
	require.Equal(t, "artifact", tg["kind"])
	staged, err := os.ReadFile(filepath.Join(dev.staging, "fw.bin"))
	require.NoError(t, err)
	require.Equal(t, data, staged)
	ran, err := os.ReadFile(filepath.Join(state, "applied"))
	require.NoError(t, err)
	require.Equal(t, "fw.bin "+filepath.Join(dev.staging, "fw.bin"), string(ran))
	// answered by its one device: its bytes leave the gateway
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(dir, "pending.artifacts", in.ID.String()))
		return os.IsNotExist(err)
	}, wait, time.Millisecond)

	// Other bytes of the same size: the gateway cannot tell, the device
	// refuses them and stages nothing.
	other := append([]byte(nil), data...)
	other[len(other)/2] ^= 1
	bad := artifactInstruction(t, op, dev.release, id, 2, "fw2.bin", data)
	status, reason = handOverArtifact(t, cfg.ControlSocket, bad, uint64(len(other)), other)
	require.Equal(t, byte(EndpointAccepted), status, reason)
	tg, fields = outcomeOf(t, sink, bad.ID, Delivered())
	require.Equal(t, "refused", tg["result"])
	require.Equal(t, int64(control.RefusedDigestMismatch), fields["code"])
	entries, err := os.ReadDir(dev.staging)
	require.NoError(t, err)
	require.Len(t, entries, 1) // fw.bin only: no fw2.bin, no temporary file

	// A manifest signed by another identity than the release identity.
	forger := f.device(map[string]string{"role": "release"})
	forged := artifactInstruction(t, op, forger, id, 3, "fw3.bin", data)
	status, reason = handOverArtifact(t, cfg.ControlSocket, forged, uint64(len(data)), data)
	require.Equal(t, byte(EndpointAccepted), status, reason)
	tg, fields = outcomeOf(t, sink, forged.ID, Delivered())
	require.Equal(t, "refused", tg["result"])
	require.Equal(t, int64(control.RefusedUnknownIssuer), fields["code"])
	entries, err = os.ReadDir(dev.staging)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// A gateway that sends the chunks out of order: refused, nothing
	// staged.
	dev.reorder.Store(true)
	swapped := artifactInstruction(t, op, dev.release, id, 6, "fw6.bin", data)
	status, reason = handOverArtifact(t, cfg.ControlSocket, swapped, uint64(len(data)), data)
	require.Equal(t, byte(EndpointAccepted), status, reason)
	tg, fields = outcomeOf(t, sink, swapped.ID, Delivered())
	require.Equal(t, "refused", tg["result"])
	require.Equal(t, int64(control.RefusedInvalidPayload), fields["code"])
	require.Contains(t, fields["reason"], "chunk at")
	entries, err = os.ReadDir(dev.staging)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// More bytes than the manifest's size, and an artifact past the
	// gateway's cap: refused at the endpoint, nothing kept.
	more := artifactInstruction(t, op, dev.release, id, 4, "fw4.bin", data)
	status, reason = handOverArtifact(t, cfg.ControlSocket, more, uint64(len(data)+1), nil)
	require.Equal(t, byte(EndpointRefused), status)
	require.Contains(t, reason, "the manifest of fw4.bin names")
	big := make([]byte, 1<<20+1)
	huge := artifactInstruction(t, op, dev.release, id, 5, "big.bin", big)
	status, reason = handOverArtifact(t, cfg.ControlSocket, huge, uint64(len(big)), nil)
	require.Equal(t, byte(EndpointRefused), status)
	require.Contains(t, reason, "pass the limit of 1048576")
	left, err := os.ReadDir(filepath.Join(dir, "pending.artifacts"))
	require.NoError(t, err)
	require.Empty(t, left)
}

// recordLink is a Link that records what a session sends.
type recordLink struct {
	mu   sync.Mutex
	sent []secure.Message
}

func (l *recordLink) Send(m secure.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, m)
	return nil
}

func (l *recordLink) Expect(uint64, chan<- secure.Message) {}

func (l *recordLink) outcomes(t *testing.T) []control.Outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []control.Outcome
	for _, m := range l.sent {
		if m.Type == secure.TypeOutcome {
			o, err := control.ParseOutcome(m.Payload)
			require.NoError(t, err)
			out = append(out, o)
		}
	}
	return out
}

// TestControlArtifactChunksRaceInstruction: the reader queues an artifact
// instruction and then its chunks, and the agent's loop finds both queued
// at once (a session begun after they arrived); it must take the
// instruction first, never drop its first chunk. Repeated, since the
// loop's choice between ready queues is random.
func TestControlArtifactChunksRaceInstruction(t *testing.T) {
	f := newFixture(t)
	dev := f.agentDevice(t, map[string]string{"site": "plant-7", "role": "sensor"}, t.TempDir())
	op := f.operator(nil)
	data := make([]byte, 100)
	for i := range 16 {
		name := fmt.Sprintf("fw%d.bin", i)
		in := artifactInstruction(t, op, dev.release, dev.d.id.Identifier().String(), uint64(i+1), name, data)
		l := &recordLink{}
		s := dev.agent.NewSession(l)
		s.Offer(in.Marshal())
		s.OfferChunk(control.AppendChunk(nil, control.Chunk{ID: in.ID, Data: data[:50]}))
		s.OfferChunk(control.AppendChunk(nil, control.Chunk{ID: in.ID, Offset: 50, Last: true, Data: data[50:]}))
		require.NoError(t, s.Begin())
		// (the outbox, never acked here, sends the earlier rounds' first)
		var o control.Outcome
		require.Eventually(t, func() bool {
			for _, got := range l.outcomes(t) {
				if got.ID == in.ID {
					o = got
					return true
				}
			}
			return false
		}, wait, time.Millisecond)
		s.Stop()
		require.Equal(t, control.Applied, o.Result, "round %d: %s", i, o.Reason)
		staged, err := os.ReadFile(filepath.Join(dev.staging, name))
		require.NoError(t, err)
		require.Equal(t, data, staged)
	}
}
