package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestControlArtifactRollout delivers a software artifact with the real
// binaries: a release identity signs its manifest (ockam control release),
// an operator the instruction (ockam control sign), ockam control send
// hands both to the gateway's Telegraf, which sends the bytes in chunks to
// the device's Telegraf; the device stages exactly the released bytes, runs
// its apply program, and the applied outcome row is in InfluxDB. Then the
// same manifest with other bytes of its size: refused as a digest
// mismatch, with its row, and nothing staged.
func TestControlArtifactRollout(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	gateway := cli.identity("gateway", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	device := cli.identity("device", "")
	cli.issue(authority, device, "720h", "role=sensor", "site=plant-7")
	operator := cli.identity("operator", "")
	cli.issue(authority, operator, "720h", "role=operator")
	release := cli.identity("release", "")

	socket := filepath.Join(t.TempDir(), "control.sock")
	conf := listenerConf(t, gateway, authority, db, `["mem"]`,
		"  service_address = \"tcp://127.0.0.1:0\""+fmt.Sprintf("\n  control_socket = %q", socket))
	gw := startProcess(t, "gateway", bin.telegraf, "--config", conf)
	addr := gw.waitLog(listeningOckam, 30*time.Second)[1]

	staging := filepath.Join(t.TempDir(), "staging")
	require.NoError(t, os.Mkdir(staging, 0o700))
	state := t.TempDir()
	ran := filepath.Join(state, "applied")
	devConf := filepath.Join(t.TempDir(), "device.conf")
	renderTemplate(t, "device.conf.tmpl", devConf, map[string]string{
		"Interval": "10s", "Inputs": "[[inputs.mem]]\n  fieldinclude = [\"total\"]",
		"ListenerAddress": addr, "ListenerIdentity": gateway.id,
		"VaultPath": device.vault, "VaultPassphrase": "", "CredentialPath": device.credential,
		"AuthorityPath": authority.identity,
	})
	f, err := os.OpenFile(devConf, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	// the apply program records its OCKAM_ARTIFACT and the staged path (a
	// script: Telegraf would expand $VARIABLES in its configuration)
	script := filepath.Join(state, "apply.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s %s' \"$OCKAM_ARTIFACT\" \"$2\" > \"$1\"\n"), 0o755))
	_, err = fmt.Fprintf(f, "  control_state = %q\n  control_release_identities = [%q]\n  control_staging_dir = %q\n"+
		"  control_artifact_apply = [%q, %q]\n"+
		"  [[outputs.ockam.control_policy]]\n    attributes = { role = \"operator\" }\n    kinds = [\"artifact\"]\n",
		filepath.Join(state, "control.seq"), release.identity, staging, script, ran)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	startProcess(t, "device", bin.telegraf, "--config", devConf)
	eventually(t, 60*time.Second, "the device's first row", func() (bool, string) {
		return len(db.rows("mem")) > 0, ""
	})

	// Three chunks and a bit of a 64 KiB chunk size.
	data := make([]byte, 3*65493+1234)
	for i := range data {
		data[i] = byte(i*31 + i/256)
	}
	artifact := filepath.Join(cli.dir, "fw-2.bin")
	require.NoError(t, os.WriteFile(artifact, data, 0o644))
	manifest := filepath.Join(cli.dir, "fw.manifest")
	cli.run("", "control", "release", "--vault", release.vault, "-o", manifest, artifact)
	sign := func(out string) string {
		return controlID.FindStringSubmatch(cli.run("", "control", "sign", "--vault", operator.vault, "--credential",
			operator.credential, "--to="+device.identity, "--kind", "artifact", "--file", manifest, "-o", filepath.Join(cli.dir, out)))[1]
	}
	applied := sign("fw.bin")
	require.Contains(t, cli.run("", "control", "send", "--socket", socket, "--artifact", artifact, filepath.Join(cli.dir, "fw.bin")),
		"accepted: instruction "+applied)
	eventually(t, 90*time.Second, "the applied outcome row", func() (bool, string) {
		got := rollout(t, db, applied)
		return len(got) == 1, fmt.Sprint(got)
	})
	require.Equal(t, map[string]string{device.id + " applied": "code=0 reason="}, rollout(t, db, applied))
	staged, err := os.ReadFile(filepath.Join(staging, "fw-2.bin"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, staged), "the staged bytes are the released ones")
	got, err := os.ReadFile(ran)
	require.NoError(t, err)
	require.Equal(t, "fw-2.bin "+filepath.Join(staging, "fw-2.bin"), string(got))

	// Other bytes of the same size handed to the gateway with the same
	// manifest: the device refuses them and stages nothing new.
	other := filepath.Join(cli.dir, "other.bin")
	data[len(data)-1] ^= 0xff
	require.NoError(t, os.WriteFile(other, data, 0o644))
	refused := sign("fw2.bin")
	require.Contains(t, cli.run("", "control", "send", "--socket", socket, "--artifact", other, filepath.Join(cli.dir, "fw2.bin")),
		"accepted: instruction "+refused)
	eventually(t, 90*time.Second, "the refusal row", func() (bool, string) {
		got := rollout(t, db, refused)
		return len(got) == 1, fmt.Sprint(got)
	})
	require.Regexp(t, `^code=16 reason=.*SHA-256`, rollout(t, db, refused)[device.id+" refused"])
	entries, err := os.ReadDir(staging)
	require.NoError(t, err)
	require.Len(t, entries, 1, "fw-2.bin only, no temporary file")
	staged, err = os.ReadFile(filepath.Join(staging, "fw-2.bin"))
	require.NoError(t, err)
	require.False(t, bytes.Equal(data, staged), "the first artifact is still the one staged")
}
