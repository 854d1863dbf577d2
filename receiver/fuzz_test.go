package receiver

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/fuzzseed"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

var updateSeeds = flag.Bool("update", false, "rewrite the fuzz seed corpora in testdata/fuzz/")

// fuzzFixture is a receiver after New (not started) and the verified peer
// of an in-process handshake with it: a sensor of site plant-7.
func fuzzFixture(t testing.TB) (*Receiver, *secure.Peer) {
	f := newFixture(t)
	cfg := f.config()
	cfg.AttributeTags = []string{"site", "zone"}
	cfg.Allow = []AllowRule{{Attributes: map[string]string{"role": "sensor"}, Measurements: []string{"cpu", "temp*", "mem"}}}
	r, err := New(cfg)
	require.NoError(t, err)
	d := f.device(map[string]string{"role": "sensor", "site": "plant-7"})
	i, err := secure.NewInitiator(secure.HandshakeConfig{Identity: d.id, Credential: d.cred, Verifier: f.verifier, Now: r.now})
	require.NoError(t, err)
	r2, err := secure.NewResponder(secure.HandshakeConfig{Identity: r.trust.Current().Identity, Credential: r.trust.Current().Credential,
		Verifier: r.verifier, Now: r.now})
	require.NoError(t, err)
	msg1, err := i.Start()
	require.NoError(t, err)
	msg2, err := r2.Respond(msg1)
	require.NoError(t, err)
	msg3, _, err := i.Finish(msg2)
	require.NoError(t, err)
	s, err := r2.Finish(msg3)
	require.NoError(t, err)
	return r, s.Peer()
}

// FuzzHandleMessage: the attacker is a device with a valid credential (its
// own, or a stolen one with its keys) and controls the batch id and every
// byte of a data message's payload, which handle takes through
// authorization, line-protocol parsing, the policy and the stamping of
// verified tags. Whatever it sends, the message is either delivered whole
// to the Sink or answered at once, never both; every metric delivered is one
// the policy allows, with the verified identity and attributes as its only
// values of those tags; a refusal is a permanent nack of that batch with a
// valid reason; the channel is never closed (the credential stays valid).
func FuzzHandleMessage(f *testing.F) {
	requireSeeds(f)
	r, peer := fuzzFixture(f)
	id := peer.Identifier.String()
	f.Fuzz(func(t *testing.T, batch uint64, payload []byte) {
		var got []delivery
		sink := sinkFunc(func(p Peer, metrics []telegraf.Metric, done func(Outcome)) {
			got = append(got, delivery{peer: p, metrics: metrics, done: done})
		})
		r.server = server{sink: sink, undelivered: make(chan struct{}, 1), budget: newByteBudget(1<<40, 1<<40)}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		c := newConn(a)
		defer c.cancel()
		parser, err := newParser()
		require.NoError(t, err)
		parser.SetTimeFunc(fuzzNow) // a line without a timestamp gets this one
		c.peer, c.parser, c.key = peer, parser, id
		c.grant, c.tags = r.policy.grant(peer.Credential.Attributes), r.tagsFor(peer)

		reason, ok := r.handle(c, secure.Message{Type: secure.TypeData, Batch: batch, Payload: payload})
		require.True(t, ok)
		require.Empty(t, reason)
		if len(got) == 0 {
			require.Len(t, c.queue, 1, "a message not delivered is answered at once")
			m := c.queue[0].msg
			require.Equal(t, batch, m.Batch)
			if m.Type == secure.TypeAck {
				require.Empty(t, mustParse(t, payload), "only a message without metrics is acked at once")
				return
			}
			require.Equal(t, secure.TypeNack, m.Type)
			require.True(t, m.Permanent, "%+v", m)
			require.True(t, utf8.ValidString(m.Reason) && len(m.Reason) <= secure.MaxReason && m.Reason != "")
			return
		}
		require.Empty(t, c.queue, "a delivered message is answered when the Sink is done")
		require.Len(t, got, 1)
		require.Equal(t, peer.Identifier, got[0].peer.Identifier)
		emitted := got[0].metrics
		want := mustParse(t, payload)
		require.Len(t, emitted, len(want))
		for i, m := range emitted {
			require.True(t, c.grant.allows(m.Name()), "measurement %q emitted", m.Name())
			require.Equal(t, want[i].Name(), m.Name())
			require.Equal(t, want[i].Fields(), m.Fields())
			require.Equal(t, want[i].Time(), m.Time())
			tags := want[i].Tags()
			tags["ockam_identity"], tags["site"] = id, "plant-7"
			delete(tags, "zone") // not an attribute of the credential
			require.Equal(t, tags, m.Tags())
		}
		got[0].done(Delivered())
		require.Len(t, c.queue, 1)
		require.Equal(t, secure.Message{Type: secure.TypeAck, Batch: batch}, c.queue[0].msg)
	})
}

// sinkFunc is a Sink of one function.
type sinkFunc func(Peer, []telegraf.Metric, func(Outcome))

func (f sinkFunc) Deliver(p Peer, metrics []telegraf.Metric, done func(Outcome)) { f(p, metrics, done) }

// fuzzNow is the time of a line without a timestamp.
func fuzzNow() time.Time { return time.Unix(1700000000, 0) }

// mustParse parses line protocol with a parser of its own.
func mustParse(t *testing.T, payload []byte) []telegraf.Metric {
	t.Helper()
	p, err := newParser()
	require.NoError(t, err)
	p.SetTimeFunc(fuzzNow)
	ms, err := p.Parse(payload)
	require.NoError(t, err)
	return ms
}

// requireSeeds fails a fuzz target whose seed corpus is missing or empty.
func requireSeeds(f *testing.F) { fuzzseed.Require(f, seedHint) }

// seedHint is the command that writes the seed corpora.
const seedHint = "go test -run TestFuzzSeeds -update"

// fuzzSeeds is the seed corpus of FuzzHandleMessage, by file name.
func fuzzSeeds() map[string]struct {
	batch   uint64
	payload string
} {
	const end = " 1700000000000000000\n"
	type seed = struct {
		batch   uint64
		payload string
	}
	return map[string]seed{
		"lines":        {1, "cpu,host=a usage=1" + end + "temp_c value=21.5" + end + "mem used=3i" + end},
		"forged-tags":  {2, "temp,ockam_identity=Iforged,site=elsewhere,zone=z,host=a value=1" + end},
		"policy":       {3, "valve_open value=1" + end},
		"mixed-policy": {4, "cpu usage=1" + end + "valve_open value=1" + end},
		"bad-line":     {5, "cpu usage=1" + end + "cpu usage=" + end},
		"empty":        {6, ""},
		"comments":     {7, "# a comment\n\n   \n"},
		"escapes":      {8, `cpu,tag\ key=a\,b field\=x="s\"q",n=1u` + end},
		"no-timestamp": {9, "mem used=1i\n"},
		"unicode":      {10, "temp,site=é,zone=ß valeur=1" + end},
		"crlf":         {11, "cpu usage=1 1700000000000000000\r\n"},
		"nul":          {12, "cpu\x00 usage=1" + end},
		"long-error":   {13, "cpu " + strings.Repeat("é", 3000) + "\n"},
		"many":         {1<<64 - 1, strings.Repeat("cpu,core=0 usage=1"+end, 200)},
		"types":        {15, `temp b=true,s="x",i=-1i,u=2u,f=1e300` + end},
	}
}

// TestFuzzSeeds writes the seed corpus with -update; otherwise it checks
// that the committed seeds are what fuzzSeeds makes. Files the fuzzer adds
// are left alone.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzHandleMessage")
	if *updateSeeds {
		require.NoError(t, os.MkdirAll(dir, 0o755))
	}
	for name, s := range fuzzSeeds() {
		path := filepath.Join(dir, "seed-"+name)
		want := fmt.Sprintf("go test fuzz v1\nuint64(%d)\n[]byte(%q)\n", s.batch, s.payload)
		if *updateSeeds {
			require.NoError(t, os.WriteFile(path, []byte(want), 0o644))
		}
		got, err := os.ReadFile(path)
		require.NoError(t, err, "run: go test ./receiver -run TestFuzzSeeds -update")
		require.Equal(t, want, string(got), path)
	}
}
