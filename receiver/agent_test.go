package receiver

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/control/agent"
	"github.com/ockam-addons/telegraf-ockam/control/apply"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// agentDevice is a device running the real control agent on a real
// channel to the receiver: its reader hands instructions to the agent's
// session and routes acks to it, as outputs.ockam does.
type agentDevice struct {
	t       *testing.T
	d       *device
	agent   *agent.Agent
	dir     string  // the watched configuration directory
	staging string  // the artifacts' staging directory
	release *device // the release identity whose manifests it accepts
	// reorder makes the reader hand the agent each artifact's first chunk
	// after its second: a gateway that sends chunks out of order
	reorder atomic.Bool
	ch      *secure.Channel
	session *agent.Session

	mu      sync.Mutex
	waiters map[uint64]chan<- secure.Message
	done    chan struct{}
}

func (f *fixture) agentDevice(t *testing.T, attrs map[string]string, state string) *agentDevice {
	t.Helper()
	d := f.device(attrs)
	policy, err := control.NewPolicy(control.Rule{Attributes: map[string]string{"role": "operator"},
		Kinds: []control.Kind{control.KindConfig, control.KindCommand, control.KindArtifact}})
	require.NoError(t, err)
	store, err := control.OpenSequenceStore(filepath.Join(state, "sequences"))
	require.NoError(t, err)
	v, err := control.NewVerifier(control.VerifierConfig{Credentials: f.verifier, Policy: policy,
		Device: control.Device{Identifier: d.id.Identifier(), Attributes: d.cred.Attributes}, Sequences: store})
	require.NoError(t, err)
	dir := filepath.Join(state, "telegraf.d")
	require.NoError(t, os.Mkdir(dir, 0o700))
	staging := filepath.Join(state, "staging")
	require.NoError(t, os.Mkdir(staging, 0o700))
	release := f.device(map[string]string{"role": "release"})
	a, err := agent.New(agent.Config{Verifier: v, Outbox: filepath.Join(state, "outbox"),
		// the apply program copies its environment's OCKAM_ARTIFACT and the file's path
		Artifacts: &apply.Artifacts{Dir: staging, Releases: []*secure.Identity{release.id.Public()},
			Apply: &apply.Handler{Program: "/bin/sh", Args: []string{"-c",
				`printf '%s %s' "$OCKAM_ARTIFACT" "$1" > "$0"`, filepath.Join(state, "applied")}}},
		Appliers: map[control.Kind]apply.Applier{
			control.KindConfig: &apply.ConfigDir{Dir: dir},
			// the argument, copied from standard input to a file
			control.KindCommand: &apply.Commands{Handlers: map[string]apply.Handler{
				"interval": {Program: "/bin/cp", Args: []string{"/dev/stdin", filepath.Join(state, "interval")}}}},
		}})
	require.NoError(t, err)
	return &agentDevice{t: t, d: d, agent: a, dir: dir, staging: staging, release: release}
}

func (a *agentDevice) Send(m secure.Message) error { return a.ch.Send(m) }
func (a *agentDevice) Expect(batch uint64, w chan<- secure.Message) {
	a.mu.Lock()
	a.waiters[batch] = w
	a.mu.Unlock()
}

// connect opens a channel to addr and starts the agent on it.
func (a *agentDevice) connect(f *fixture, addr net.Addr) {
	t := a.t
	t.Helper()
	ch := f.open(t, a.d, addr)
	a.ch, a.waiters, a.done = ch, map[uint64]chan<- secure.Message{}, make(chan struct{})
	a.session = a.agent.NewSession(a)
	go func() {
		defer close(a.done)
		var held []byte // the first chunk, when reordering
		for {
			m, err := ch.Receive()
			if err != nil {
				return
			}
			switch m.Type {
			case secure.TypeInstruction:
				a.session.Offer(m.Payload)
			case secure.TypeChunk:
				c, err := control.ParseChunk(m.Payload)
				switch {
				case err == nil && a.reorder.Load() && c.Offset == 0 && !c.Last:
					held = m.Payload
					continue
				case held != nil:
					a.session.OfferChunk(m.Payload)
					a.session.OfferChunk(held)
					held = nil
					continue
				}
				a.session.OfferChunk(m.Payload)
			case secure.TypeAck, secure.TypeNack:
				a.mu.Lock()
				w := a.waiters[m.Batch]
				delete(a.waiters, m.Batch)
				a.mu.Unlock()
				if w != nil {
					w <- m
				}
			}
		}
	}()
	require.NoError(t, a.session.Begin())
	t.Cleanup(a.close)
}

func (a *agentDevice) close() {
	if a.ch == nil {
		return
	}
	a.ch.Close("done")
	<-a.done
	a.session.Stop()
	a.ch = nil
}

// outcomeOf waits for the ockam_control metric of instruction id and
// acknowledges it with o.
func outcomeOf(t *testing.T, sink *chanSink, id control.ID, o Outcome) (map[string]string, map[string]any) {
	t.Helper()
	for {
		d := sink.next(t)
		require.Len(t, d.metrics, 1)
		m := d.metrics[0]
		d.done(o)
		if m.Tags()["instruction"] == id.String() {
			require.Equal(t, OutcomeMeasurement, m.Name())
			return tags(m), m.Fields()
		}
	}
}

// TestControlAgentEndToEnd: an operator's config instruction, handed to
// the gateway's endpoint, is written by the device's agent into its
// watched directory, and its outcome comes back as a metric of the
// device's verified identity; a command runs its configured program with
// the argument; an instruction signed by the gateway's own
// identity and a replayed sequence are refused on the device, each with
// its refusal row; an outcome the gateway did not ack is sent again from
// the outbox on the next channel.
func TestControlAgentEndToEnd(t *testing.T) {
	f := newFixture(t)
	cfg := f.controlConfig(t, t.TempDir())
	sink := newChanSink()
	r := start(t, cfg, newCounters(), sink)
	dev := f.agentDevice(t, map[string]string{"site": "plant-7", "role": "sensor"}, t.TempDir())
	dev.connect(f, r.Addr())
	op := f.operator(nil)
	id := dev.d.id.Identifier().String()

	in := instruction(t, op, "site=plant-7", 5, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, in)
	tg, fields0 := outcomeOf(t, sink, in.ID, Delivered())
	require.Equal(t, map[string]string{"instruction": in.ID.String(), "operator": op.id.Identifier().String(),
		"kind": "config", "result": "applied", "ockam_identity": id, "site": "plant-7"}, tg)
	require.Equal(t, map[string]any{"sequence": int64(5), "code": int64(0), "reason": ""}, fields0)
	got, err := os.ReadFile(filepath.Join(dev.dir, "ockam-interval.conf"))
	require.NoError(t, err)
	require.Equal(t, "[agent]\n  interval = \"5s\"\n", string(got))

	// A command: the configured program runs with the argument.
	payload, err := control.MarshalNamed("interval", []byte("2s"))
	require.NoError(t, err)
	target, err := control.ParseTarget(id)
	require.NoError(t, err)
	cmd, err := control.Sign(op.id.Signer(), op.cred, control.Template{Kind: control.KindCommand, Target: target,
		Sequence: 6, IssuedAt: time.Now(), Lifetime: time.Hour, Payload: payload}, nil)
	require.NoError(t, err)
	accepted(t, cfg.ControlSocket, cmd)
	tg2, fields := outcomeOf(t, sink, cmd.ID, Delivered())
	require.Equal(t, "applied", tg2["result"], fields)
	require.Equal(t, "command", tg2["kind"])
	arg, err := os.ReadFile(filepath.Join(filepath.Dir(dev.dir), "interval"))
	require.NoError(t, err)
	require.Equal(t, "2s", string(arg))

	// Signed by the gateway: its credential (role=listener) is valid, but
	// the device's policy gives it nothing.
	gw := &device{id: f.member.Identity, cred: f.member.Credential}
	forged := instruction(t, gw, id, 7, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, forged)
	tg, fields = outcomeOf(t, sink, forged.ID, Delivered())
	require.Equal(t, "refused", tg["result"])
	require.Equal(t, int64(control.RefusedUnauthorized), fields["code"])

	// The operator's sequence 6 (the command's) again, in a new
	// instruction: replayed.
	replay := instruction(t, op, id, 6, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, replay)
	tg, fields = outcomeOf(t, sink, replay.ID, Delivered())
	require.Equal(t, "refused", tg["result"])
	require.Equal(t, int64(control.RefusedReplayed), fields["code"])

	// An outcome not delivered by the gateway stays in the outbox and is
	// sent again, first thing, on the next channel.
	older := instruction(t, op, id, 4, time.Now(), time.Hour)
	accepted(t, cfg.ControlSocket, older)
	tg, fields = outcomeOf(t, sink, older.ID, Transient("store down"))
	require.Equal(t, int64(control.RefusedRollback), fields["code"])
	require.Eventually(t, func() bool { return dev.agent.Outbox() == 1 }, wait, time.Millisecond)
	dev.close()
	dev.connect(f, r.Addr())
	tg2, fields2 := outcomeOf(t, sink, older.ID, Delivered())
	require.Equal(t, tg, tg2)
	require.Equal(t, fields, fields2)
	require.Eventually(t, func() bool { return dev.agent.Outbox() == 0 }, wait, time.Millisecond)
}
