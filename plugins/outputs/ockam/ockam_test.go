package ockam

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/influxdata/telegraf/selfstat"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ockam-addons/telegraf-ockam/internal/ockamtest"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// newOutput returns an initialized plugin for the fixture's device, sending
// to addr, and closes it when the test ends.
func (f *fixture) newOutput(t *testing.T, addr string, modify ...func(*Output)) (*Output, *testutil.CaptureLogger) {
	t.Helper()
	log := &testutil.CaptureLogger{}
	o := outputs.Outputs["ockam"]().(*Output)
	o.Address = "tcp://" + addr
	o.VaultPath = f.vaultPath
	o.CredentialPath = f.credPath
	o.AuthorityPath = f.authorityPath
	// Long enough that no dial and no answer runs out of time on a loaded
	// machine; a test of the timeout sets its own.
	o.Timeout = config.Duration(30 * time.Second)
	o.Log = log
	for _, m := range modify {
		m(o)
	}
	require.NoError(t, o.Init())
	t.Cleanup(func() { require.NoError(t, o.Close()) })
	return o, log
}

// testMetrics returns n distinct metrics.
func testMetrics(n int) []telegraf.Metric { return namedMetrics("cpu", n) }

// namedMetrics returns n distinct metrics called name.
func namedMetrics(name string, n int) []telegraf.Metric {
	ms := make([]telegraf.Metric, n)
	for i := range ms {
		ms[i] = metric.New(name,
			map[string]string{"host": fmt.Sprintf("h%d", i)},
			map[string]any{"usage": float64(i) + 0.5, "count": int64(i), "state": "ok"},
			time.Unix(1700000000, int64(i)))
	}
	return ms
}

// parseMessages parses the payloads of data messages back into metrics.
func parseMessages(t *testing.T, msgs []secure.Message) []telegraf.Metric {
	t.Helper()
	var out []telegraf.Metric
	for _, m := range msgs {
		require.Equal(t, secure.TypeData, m.Type)
		p := &influx.Parser{}
		require.NoError(t, p.Init())
		ms, err := p.Parse(m.Payload)
		require.NoError(t, err)
		out = append(out, ms...)
	}
	return out
}

// requireArrivedOnce checks that the listener received exactly the lines of
// want, each once.
func requireArrivedOnce(t *testing.T, l *fakeListener, want []telegraf.Metric) {
	t.Helper()
	testutil.RequireMetricsEqual(t, want, parseMessages(t, l.messages()), testutil.SortMetrics())
}

// newCollector returns a statistics collector whose stats no other test
// (or run of this test) shares: selfstat's registry is global.
func newCollector(t *testing.T) *selfstat.Collector {
	c := selfstat.NewCollector(map[string]string{"test": fmt.Sprintf("%s-%d", t.Name(), collectors.Add(1))})
	t.Cleanup(c.UnregisterAll)
	return c
}

var collectors atomic.Int64

func TestConfigKeys(t *testing.T) {
	typ := reflect.TypeFor[Output]()
	var keys []string
	for i := range typ.NumField() {
		if tag := typ.Field(i).Tag.Get("toml"); tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	require.Equal(t, []string{"address", "route", "mqtt_username", "mqtt_password", "vault_path", "vault_passphrase", "credential_path", "authority_path",
		"authority_paths", "listener_identity", "listener_attributes", "timeout", "max_message_size",
		"revocation_list", "revocation_check_interval", "revocation_source", "revocation_poll_interval",
		"revocation_state", "revocation_fail_open", "revocation_refuse_stale",
		"control_policy", "control_state", "control_config_dir", "control_commands", "control_command_timeout",
		"control_release_identities", "control_staging_dir", "control_artifact_apply"}, keys)
	for _, k := range keys {
		if k == "control_policy" { // a block
			require.Contains(t, sampleConfig, "[[outputs.ockam.control_policy]]")
		} else {
			require.Contains(t, sampleConfig, k+" = ", "sample.conf documents %s", k)
		}
		require.Contains(t, readmeText(t), "- `"+k+"`", "README.md documents %s", k)
	}
	o := outputs.Outputs["ockam"]().(*Output)
	require.Equal(t, config.Duration(10*time.Second), o.Timeout)
	require.Equal(t, config.Size(256*1024), o.MaxMessageSize)
	require.Equal(t, sampleConfig, o.SampleConfig())
}

// operatorPolicy is a control_policy letting role=operator send kinds.
func operatorPolicy(kinds ...string) []ControlRule {
	return []ControlRule{{Attributes: map[string]string{"role": "operator"}, Kinds: kinds}}
}

func TestInitErrors(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	other, err := secure.CreateIdentity(vault.NewMemory(), now)
	require.NoError(t, err)

	tests := []struct {
		name    string
		modify  func(*Output)
		prepare func(t *testing.T)
		is      error  // errors.Is target, if any
		text    string // a part of the message
	}{
		{name: "no address", modify: func(o *Output) { o.Address = "" }, text: `option "address" is required (or "route"`},
		{name: "no vault", modify: func(o *Output) { o.VaultPath = "" }, text: `option "vault_path" is required`},
		{name: "no credential", modify: func(o *Output) { o.CredentialPath = "" }, text: `option "credential_path" is required`},
		{name: "no authority", modify: func(o *Output) { o.AuthorityPath = "" }, text: `option "authority_path" is required`},
		{name: "udp", modify: func(o *Output) { o.Address = "udp://127.0.0.1:4000" }, text: "only tcp:// and mqtt:// addresses are supported"},
		{name: "mqtt login on tcp", modify: func(o *Output) { o.MQTTUsername = "device" }, text: "apply to an mqtt:// address only"},
		{name: "bad pin", modify: func(o *Output) { o.ListenerIdentity = "I1234" }, is: secure.ErrMalformed, text: "listener_identity"},
		{name: "negative timeout", modify: func(o *Output) { o.Timeout = -1 }, text: "timeout"},
		{name: "huge messages", modify: func(o *Output) { o.MaxMessageSize = secure.DefaultMaxMessageSize + 1 }, text: "max_message_size"},
		{name: "missing vault", modify: func(o *Output) { o.VaultPath = filepath.Join(f.dir, "nope") }, text: "ockam identity create"},
		{name: "missing credential", modify: func(o *Output) { o.CredentialPath = filepath.Join(f.dir, "nope") }, text: "credential_path"},
		{name: "missing authority", modify: func(o *Output) { o.AuthorityPath = filepath.Join(f.dir, "nope") }, text: "authority_path"},
		{name: "control without policy", modify: func(o *Output) { o.ControlState = filepath.Join(f.dir, "seq") },
			text: "need at least one [[outputs.ockam.control_policy]] block"},
		{name: "control without state", modify: func(o *Output) { o.ControlPolicy = operatorPolicy("config"); o.ControlConfigDir = f.dir },
			text: "control_state is required"},
		{name: "control applying nothing", modify: func(o *Output) {
			o.ControlPolicy, o.ControlState = operatorPolicy("config"), filepath.Join(f.dir, "seq")
		}, text: "none of control_config_dir, control_commands, control_staging_dir"},
		{name: "control artifact without release identities", modify: func(o *Output) {
			o.ControlPolicy, o.ControlState = operatorPolicy("artifact"), filepath.Join(f.dir, "seq")
			o.ControlStagingDir = f.dir
		}, text: "need both control_release_identities and control_staging_dir"},
		{name: "control artifact release identity missing", modify: func(o *Output) {
			o.ControlPolicy, o.ControlState = operatorPolicy("artifact"), filepath.Join(f.dir, "seq")
			o.ControlStagingDir, o.ControlReleases = f.dir, []string{filepath.Join(f.dir, "nope.identity")}
		}, text: "control_release_identities"},
		{name: "control artifact options without policy", modify: func(o *Output) { o.ControlStagingDir = f.dir },
			text: "need at least one [[outputs.ockam.control_policy]] block"},
		{name: "control unknown kind", modify: func(o *Output) { o.ControlPolicy = operatorPolicy("reboot") }, text: "control_policy block 1"},
		{name: "control policy without attributes", modify: func(o *Output) {
			o.ControlPolicy = []ControlRule{{Kinds: []string{"config"}}}
			o.ControlState, o.ControlConfigDir = filepath.Join(f.dir, "seq"), f.dir
		}, text: "names no attribute"},
		{name: "control command without program", modify: func(o *Output) {
			o.ControlPolicy, o.ControlState = operatorPolicy("command"), filepath.Join(f.dir, "seq")
			o.ControlCommands = map[string][]string{"interval": {}}
		}, text: `control_commands "interval"`},
		{name: "control config dir missing", modify: func(o *Output) {
			o.ControlPolicy, o.ControlState = operatorPolicy("config"), filepath.Join(f.dir, "seq")
			o.ControlConfigDir = filepath.Join(f.dir, "nope")
		}, text: "control_config_dir"},
		{
			name:    "credential from another authority",
			prepare: func(t *testing.T) { f.writeCredential(t, f.issue(t, other, f.device.Identifier(), now, time.Hour)) },
			is:      secure.ErrUnknownIssuer,
			text:    "was not issued by the authority in authority_path",
		},
		{
			name: "credential of another identity",
			prepare: func(t *testing.T) {
				f.writeCredential(t, f.issue(t, f.authority, f.listener.Identifier(), now, time.Hour))
			},
			is:   secure.ErrWrongSubject,
			text: "issued to another identity",
		},
		// An expired credential starts: TestStartsWithExpiredCredential.
		{
			name: "not a credential",
			prepare: func(t *testing.T) {
				require.NoError(t, os.WriteFile(f.credPath, f.authority.Public().MarshalFile(), 0o644))
			},
			is:   secure.ErrMalformed,
			text: "credential_path",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.writeCredential(t, f.issue(t, f.authority, f.device.Identifier(), now, time.Hour))
			if tt.prepare != nil {
				tt.prepare(t)
			}
			o := outputs.Outputs["ockam"]().(*Output)
			o.Address = "tcp://127.0.0.1:4000"
			o.VaultPath, o.CredentialPath, o.AuthorityPath = f.vaultPath, f.credPath, f.authorityPath
			o.Log = testutil.Logger{}
			if tt.modify != nil {
				tt.modify(o)
			}
			err := o.Init()
			require.Error(t, err)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
			}
			require.ErrorContains(t, err, tt.text)
		})
	}
}

func TestWriteAck(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr())
	require.NoError(t, o.Connect())

	ms := testMetrics(5)
	require.NoError(t, o.Write(ms))
	requireArrivedOnce(t, l, ms)
	require.Len(t, l.messages(), 1)
	hs := l.handshakeLog()
	require.Len(t, hs, 1)
	require.NoError(t, hs[0].err)
	require.Equal(t, f.device.Identifier(), hs[0].cred.Subject)

	require.NoError(t, o.Write(nil), "an empty batch needs no channel")
}

func TestWriteNackPermanent(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, log := f.newOutput(t, l.addr(), func(o *Output) { o.MaxMessageSize = 200 })
	require.NoError(t, o.Connect())

	// Refuse the message that holds h0; accept the others.
	l.setReply(func(m secure.Message) reply {
		if bytes.Contains(m.Payload, []byte("host=h0 ")) {
			return replyNackPermanent
		}
		return replyAck
	})
	ms := testMetrics(6)
	require.NoError(t, o.Write(ms), "a permanent nack drops, it does not retry")
	requireArrivedOnce(t, l, ms)
	require.Greater(t, len(l.messages()), 1)

	refused := parseMessages(t, l.messages()[:1])
	errs := log.Errors()
	require.Len(t, errs, 1)
	require.Contains(t, errs[0], fmt.Sprintf("refused %d metrics permanently", len(refused)))
	require.Contains(t, errs[0], "refused by policy")
}

func TestWriteNackTransient(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr())
	require.NoError(t, o.Connect())

	l.setReply(func(secure.Message) reply { return replyNackTransient })
	ms := testMetrics(4)
	err := o.Write(ms)
	require.ErrorContains(t, err, "output buffer full")
	requireArrivedOnce(t, l, ms)

	// Telegraf retries the same batch: it arrives again (a duplicate, not a loss).
	l.setReply(func(secure.Message) reply { return replyAck })
	require.NoError(t, o.Write(ms))
	testutil.RequireMetricsEqual(t, append(ms, ms...), parseMessages(t, l.messages()), testutil.SortMetrics())
	require.Len(t, l.handshakeLog(), 1, "a transient nack keeps the channel")
}

func TestWriteNoAnswer(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.Timeout = config.Duration(300 * time.Millisecond) })
	require.NoError(t, o.Connect())

	l.setReply(func(secure.Message) reply { return replySilent })
	waitChannel(t, o) // the 300ms are for the answer, not for the dial
	ms := testMetrics(3)
	start := time.Now()
	err := o.Write(ms)
	require.ErrorContains(t, err, "no answer")
	require.Less(t, time.Since(start), 30*time.Second, "the silent listener never answers: the timeout ended it")
	l.waitMessages(t, 1)
	requireArrivedOnce(t, l, ms)

	// The device closed the channel, telling the listener why.
	require.Eventually(t, func() bool { return len(l.endLog()) == 1 }, 30*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, l.endLog()[0], secure.ErrClosed)
	require.ErrorContains(t, l.endLog()[0], "no acknowledgement within timeout")

	// The next Write opens a new channel.
	l.setReply(func(secure.Message) reply { return replyAck })
	require.NoError(t, o.Write(ms))
	require.Equal(t, 2, l.channels())
}

func TestWriteConnectionDropped(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) {
		o.Statistics = newCollector(t)
	})
	require.NoError(t, o.Connect())

	l.setReply(func(secure.Message) reply { return replyDrop })
	waitChannel(t, o) // what is timed is the write, not the dial
	ms := testMetrics(3)
	start := time.Now()
	require.ErrorContains(t, o.Write(ms), "lost")
	require.Less(t, time.Since(start), time.Duration(o.Timeout), "a lost connection does not wait for the timeout")

	l.setReply(func(secure.Message) reply { return replyAck })
	require.NoError(t, o.Write(ms))
	testutil.RequireMetricsEqual(t, append(ms, ms...), parseMessages(t, l.messages()), testutil.SortMetrics())
	require.Len(t, l.handshakeLog(), 2)
	requireStat(t, o.Statistics.Get("ockam", "reconnects", nil), 1)
}

func TestListenerDownAtConnect(t *testing.T) {
	f := newFixture(t)
	addr := ockamtest.FreeAddr(t)
	o, log := f.newOutput(t, addr)
	require.NoError(t, o.Connect(), "Connect never fails: Telegraf would exit")
	ms := testMetrics(3)
	err := o.Write(ms)
	require.ErrorContains(t, err, "connection refused")
	require.NotEmpty(t, log.Warnings())

	l := f.startListener(t, addr)
	require.NoError(t, o.Write(ms))
	requireArrivedOnce(t, l, ms)
}

func TestPinnedListener(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.ListenerIdentity = f.listener.Identifier().String() })
	require.NoError(t, o.Connect())
	require.NoError(t, o.Write(testMetrics(1)))
}

// TestListenerAttributes: without a pin, a holder of any credential from
// the authority could pose as the listener; listener_attributes refuses a
// listener whose credential lacks them, before message 3.
func TestListenerAttributes(t *testing.T) {
	f := newFixture(t) // the fixture's listener holds role=sensor
	l := f.startListener(t, "127.0.0.1:0")

	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.ListenerAttributes = map[string]string{"role": "listener"} })
	require.NoError(t, o.Connect())
	err := o.Write(testMetrics(2))
	require.ErrorIs(t, err, secure.ErrPeerAttributes)
	require.ErrorContains(t, err, "listener_attributes")
	require.Empty(t, l.messages())
	for _, h := range l.waitHandshakes(t, 1) {
		require.Error(t, h.err, "the device never sent message 3")
	}

	ok, _ := f.newOutput(t, l.addr(), func(o *Output) { o.ListenerAttributes = map[string]string{"role": "sensor"} })
	require.NoError(t, ok.Connect())
	require.NoError(t, ok.Write(testMetrics(1)))
}

func TestPinMismatch(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr(), func(o *Output) { o.ListenerIdentity = f.authority.Identifier().String() })
	require.NoError(t, o.Connect())

	err := o.Write(testMetrics(2))
	require.ErrorIs(t, err, secure.ErrPinMismatch)
	require.Empty(t, l.messages())
	// The listener read message 1 only: the device stopped after message 2
	// and never sent message 3, which carries its identity and credential.
	hs := l.waitHandshakes(t, 1)
	for _, h := range hs {
		require.Error(t, h.err)
		require.Equal(t, 1, h.reads)
		require.Nil(t, h.cred)
	}
}

func TestListenerFromAnotherAuthority(t *testing.T) {
	f := newFixture(t)
	other, err := secure.CreateIdentity(vault.NewMemory(), time.Now())
	require.NoError(t, err)
	f.listenerCred = f.issue(t, other, f.listener.Identifier(), time.Now(), time.Hour)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr())
	require.NoError(t, o.Connect())

	err = o.Write(testMetrics(1))
	require.ErrorIs(t, err, secure.ErrUnknownIssuer)
	require.ErrorContains(t, err, "listener's credential is not from the authority")
	for _, h := range l.waitHandshakes(t, 1) {
		require.Equal(t, 1, h.reads)
	}
}

func TestSplitIntoMessages(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	const limit = 300
	o, _ := f.newOutput(t, l.addr(), func(o *Output) {
		o.MaxMessageSize = limit
		o.Statistics = newCollector(t)
	})
	require.NoError(t, o.Connect())

	ms := testMetrics(40)
	// The expected packing: greedy, whole lines, at most limit bytes.
	want, size, total := 0, 0, 0
	for _, m := range ms {
		line, err := o.serializer.Serialize(m)
		require.NoError(t, err)
		if want == 0 || size+len(line) > limit {
			want++
			size = 0
		}
		size += len(line)
		total += len(line)
	}
	require.Greater(t, want, 5)

	require.NoError(t, o.Write(ms))
	msgs := l.messages()
	require.Len(t, msgs, want)
	for _, m := range msgs {
		require.LessOrEqual(t, len(m.Payload), limit)
		require.Equal(t, byte('\n'), m.Payload[len(m.Payload)-1], "messages end at a line boundary")
	}
	requireArrivedOnce(t, l, ms)
	// Batch ids are unique and increasing.
	for i := 1; i < len(msgs); i++ {
		require.Greater(t, msgs[i].Batch, msgs[i-1].Batch)
	}

	stat := func(field string) int64 { return o.Statistics.Get("ockam", field, nil).Get() }
	require.Equal(t, int64(want), stat("messages_sent"))
	require.Equal(t, int64(want), stat("acks"))
	require.Equal(t, int64(total), stat("bytes_sent"))
	require.Zero(t, stat("nacks_permanent"))
	require.Zero(t, stat("nacks_transient"))
	require.Zero(t, stat("reconnects"))
}

func TestLongLineTravelsAlone(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, log := f.newOutput(t, l.addr(), func(o *Output) { o.MaxMessageSize = 1024 })
	require.NoError(t, o.Connect())

	long := metric.New("blob", nil, map[string]any{"data": strings.Repeat("x", 200_000)}, time.Unix(1700000000, 0))
	// Too long for any listener: dropped with an error, the rest still goes.
	huge := metric.New("huge", nil, map[string]any{"data": strings.Repeat("y", secure.DefaultMaxMessageSize)}, time.Unix(1700000000, 0))
	before, after := namedMetrics("before", 2), namedMetrics("after", 2)
	ms := append(append(append([]telegraf.Metric{}, before...), long, huge), after...)

	require.NoError(t, o.Write(ms))
	msgs := l.messages()
	require.Len(t, msgs, 3, "small lines, the long line alone (fragmented by the channel), small lines")
	require.Greater(t, len(msgs[1].Payload), secure.MaxPlaintext)
	got := parseMessages(t, msgs[1:2])
	testutil.RequireMetricsEqual(t, []telegraf.Metric{long}, got)
	requireArrivedOnce(t, l, append(append(before, long), after...))
	require.Len(t, log.Errors(), 1)
	require.Contains(t, log.Errors()[0], `Dropping a metric of "huge"`)
}

func TestExpiredNackReloadsCredential(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr())
	require.NoError(t, o.Connect())

	// The operator renewed the credential file by the time the listener
	// says the one in use expired; the next channel carries the new one.
	renewed := f.issue(t, f.authority, f.device.Identifier(), time.Now(), 2*time.Hour)
	l.setReply(func(secure.Message) reply {
		f.writeCredential(t, renewed)
		return replyNackExpired
	})
	ms := testMetrics(2)
	require.ErrorContains(t, o.Write(ms), "expired")

	l.setReply(func(secure.Message) reply { return replyAck })
	require.NoError(t, o.Write(ms))
	hs := l.handshakeLog()
	require.Len(t, hs, 2, "the channel was closed after the nack")
	require.NotEqual(t, renewed.ID, hs[0].cred.ID)
	require.Equal(t, renewed.ID, hs[1].cred.ID)
}

func TestRenewedCredentialMustBeValid(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr())
	// Between Init and the first dial the credential is replaced by an
	// expired one: no dial, a clear error.
	f.writeCredential(t, f.issue(t, f.authority, f.device.Identifier(), time.Now().Add(-2*time.Hour), time.Hour))
	require.NoError(t, o.Connect())
	err := o.Write(testMetrics(1))
	require.ErrorIs(t, err, secure.ErrExpired)
	require.ErrorContains(t, err, "renew it with ockam credential issue")
	require.Empty(t, l.handshakeLog())
}

func TestWriteBeforeConnect(t *testing.T) {
	f := newFixture(t)
	o, _ := f.newOutput(t, "127.0.0.1:1")
	require.ErrorContains(t, o.Write(testMetrics(1)), "Connect was not called")
}

func TestCloseEndsChannel(t *testing.T) {
	f := newFixture(t)
	l := f.startListener(t, "127.0.0.1:0")
	before := runtime.NumGoroutine()
	o, _ := f.newOutput(t, l.addr())
	require.NoError(t, o.Connect())
	require.NoError(t, o.Write(testMetrics(1)))
	require.Greater(t, runtime.NumGoroutine(), before)
	require.NoError(t, o.Close())
	require.Eventually(t, func() bool { return len(l.endLog()) == 1 }, 30*time.Second, 10*time.Millisecond)
	require.ErrorIs(t, l.endLog()[0], secure.ErrClosed)
	require.ErrorContains(t, l.endLog()[0], "telegraf output closing")
	require.NoError(t, o.Close(), "Close twice is harmless")
	// No goroutine is left: not the dialer, not the reader (nor the fake
	// listener's side of the connection).
	waitGoroutines(t, before)
}

// TestCloseDestroysSecrets: Close wipes the MQTT password and the vault
// passphrase, as the listener's Stop does.
func TestCloseDestroysSecrets(t *testing.T) {
	f := newFixture(t)
	// A port nothing listens on: the dialer keeps failing in the background.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	o, _ := f.newOutput(t, addr, func(o *Output) {
		o.Address = "mqtt://" + addr + "/ockam/plant-7"
		o.MQTTUsername = "device"
		o.MQTTPassword = config.NewSecret([]byte("broker-password"))
	})
	require.NoError(t, o.Connect())
	require.False(t, o.MQTTPassword.Empty())
	require.NoError(t, o.Close())
	require.True(t, o.MQTTPassword.Empty(), "mqtt_password destroyed")
	require.True(t, o.VaultPassphrase.Empty(), "vault_passphrase destroyed")
}

func TestCloseWhileDialing(t *testing.T) {
	f := newFixture(t)
	// A listener that accepts TCP but never answers the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	before := runtime.NumGoroutine()
	o, _ := f.newOutput(t, ln.Addr().String(), func(o *Output) { o.Timeout = config.Duration(time.Minute) })
	require.NoError(t, o.Connect())
	conn, err := ln.Accept()
	require.NoError(t, err)
	defer conn.Close()
	start := time.Now()
	require.NoError(t, o.Close())
	require.Less(t, time.Since(start), 5*time.Second, "Close does not wait for the handshake timeout")
	waitGoroutines(t, before)
}

func TestExpiredAttestationReloadsIdentity(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	v, err := vault.OpenFile(f.vaultPath, nil)
	require.NoError(t, err)
	dev, err := secure.LoadIdentity(v)
	require.NoError(t, err)
	// The purpose key in use expires two to three seconds from now (expiry
	// is rounded down to a second), after Init even on a busy machine...
	require.NoError(t, dev.RotatePurposeKey(v, now, 3*time.Second))
	l := f.startListener(t, "127.0.0.1:0")
	o, _ := f.newOutput(t, l.addr())
	old := o.trust.Current().Identity.Public().Attestation().PurposeKey
	require.Eventually(t, func() bool { return o.trust.Current().Identity.CheckAttestation(time.Now()) != nil },
		5*time.Second, 20*time.Millisecond)
	// ...and the operator rotated it meanwhile.
	require.NoError(t, dev.RotatePurposeKey(v, time.Now(), time.Hour))

	require.NoError(t, o.Connect())
	require.NoError(t, o.Write(testMetrics(1)))
	require.NotEqual(t, old, o.trust.Current().Identity.Public().Attestation().PurposeKey)
}

func readmeText(t *testing.T) string {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	return string(readme)
}

// waitChannel waits until o's dialer has opened a channel, so that what a
// test times next is the write, not the dial (which, under load, may take
// a good part of the timeout).
func waitChannel(t *testing.T, o *Output) {
	t.Helper()
	require.Eventually(t, func() bool { _, err := o.Peer(); return err == nil }, 30*time.Second, time.Millisecond)
}

// requireStat expects s to reach want and checks it is exactly want. The
// dialer counts a reconnection after it published the channel that a
// write then uses: the write can return first.
func requireStat(t *testing.T, s selfstat.Stat, want int64) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); s.Get() != want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, want, s.Get(), "%s", s.FieldName())
}

// waitGoroutines waits until at most n goroutines run. (require.Eventually
// would add its own.)
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); runtime.NumGoroutine() > n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
	}
}
