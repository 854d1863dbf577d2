package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ockam-addons/telegraf-ockam/internal/testproxy"
	"github.com/ockam-addons/telegraf-ockam/secure"
)

// TestAttacksReachNothing runs attacks of docs/SECURITY.md against the real
// pipeline (custom Telegraf on both sides, influxd) while a device sends a
// finite stream through a proxy that tampers with its traffic: a bit is
// flipped in the second data message of each of its first connections
// (the listener closes each such channel; the device sends the batch
// again). Meanwhile, at the listener's port: line protocol and an InfluxDB
// write request in clear, the device's recorded session replayed, a
// client with a credential of another authority, and one with the device's
// stolen credential file. InfluxDB must hold exactly the device's metrics,
// and no log line may hold a private key or a credential.
func TestAttacksReachNothing(t *testing.T) {
	bin := requireBinaries(t)
	db := startInfluxDB(t, bin.influxd)
	cli := newOckamCLI(t, bin.ockam)
	authority := cli.identity("authority", "")
	rogue := cli.identity("rogue-authority", "")
	gateway := cli.identity("listener", "")
	cli.issue(authority, gateway, "720h", "role=listener")
	sensor := cli.identity("device", "")
	cli.issue(authority, sensor, "720h", "role=sensor", "site=plant-7")
	impostor := cli.identity("impostor", "")
	cli.issue(rogue, impostor, "720h", "role=sensor", "site=plant-7")
	thief := cli.identity("thief", "")

	// 40 a second for 15 s. The stream must outlast the three tampered
	// channels: each takes two data messages on its connection, at least two
	// flushes (1 s) of a device that has metrics left to send, so the third
	// comes ≈6 s into the stream, later on a slow machine.
	const n, perRun = 600, 20
	pts := sequence("e2e_seq", n)
	l := startListener(t, bin.telegraf, gateway, authority, db, `["e2e_*"]`, "")
	px := testproxy.Start(t, l.addr)
	var mu sync.Mutex
	tampered := 0
	px.SetTamper(func(dir testproxy.Direction, i int, f []byte) [][]byte {
		if dir == testproxy.ToTarget && i == 3 { // handshake 0 and 1, data 2 and 3
			f[len(f)/2] ^= 0x10
			mu.Lock()
			tampered++
			mu.Unlock()
		}
		return [][]byte{f}
	})
	via := *l
	via.addr = px.Addr()
	start := time.Now()
	dev := startDevice(t, bin.telegraf, sensor, authority, &via, "500ms", execInputs(t, pts, perRun))
	stored := func() int { return len(db.seqs("e2e_seq")[sensor.id]) }

	channelDecrypt := regexp.MustCompile(`Channel from \S+ \(I[0-9a-f]+…\) failed \(decrypt\)`)
	eventually(t, 60*time.Second, "three tampered channels", func() (bool, string) {
		return l.proc.count(channelDecrypt) >= 3, ""
	})
	px.SetTamper(nil) // from now on the path is clean

	// Plaintext at the port.
	for _, data := range []string{
		"cpu,host=evil usage=99 1700000000000000000\n",
		"POST /api/v2/write?bucket=db%2Fautogen HTTP/1.1\r\nHost: gateway\r\nContent-Length: 43\r\n\r\n" +
			"cpu,host=evil usage=99 1700000000000000000\n",
	} {
		sendRaw(t, l.addr, []byte(data))
	}
	// The device's first recorded session, replayed whole.
	first := px.Conns()[0]
	<-first.Done()
	sendRaw(t, l.addr, slices.Concat(first.Frames(testproxy.ToTarget)...))
	// Modified clients: a credential of another authority, a stolen one.
	for _, u := range []Unchecked{
		{Vault: impostor.vault, Credential: impostor.credential, Authority: authority.identity},
		{Vault: thief.vault, Credential: sensor.credential, Authority: authority.identity},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := u.Send(ctx, l.addr, []byte(sequence("e2e_seq", 1)[0].sent()+"\n"))
		cancel()
		if !errors.Is(err, ErrNoAck) {
			t.Errorf("unchecked client of %s: Send = %v, want an error wrapping ErrNoAck", u.Vault, err)
		}
	}

	eventually(t, 90*time.Second, "the whole stream", func() (bool, string) { return stored() >= n, "" })
	elapsed := time.Since(start)
	requireDrained(t, dev)
	rows := db.rows("e2e_seq")
	if want := storedAll(pts, sensor.id, "plant-7"); !slices.Equal(rows, want) {
		t.Fatalf("InfluxDB holds %d rows of e2e_seq, want exactly the %d the device sent", len(rows), len(want))
	}
	if evil := db.rows("cpu"); len(evil) > 0 {
		t.Errorf("InfluxDB holds %d cpu rows sent in clear", len(evil))
	}
	reasons := map[string]*regexp.Regexp{
		"tampered channels":      channelDecrypt,
		"plaintext":              regexp.MustCompile(`Handshake from \S+ failed \(malformed\): .*first frame is not a handshake message`),
		"replayed session":       regexp.MustCompile(`Handshake from \S+ failed \(decrypt\): .*message 3`),
		"another authority":      regexp.MustCompile(`Handshake from \S+ failed \(unknown_issuer\)`),
		"stolen credential file": regexp.MustCompile(`Handshake from \S+ failed \(wrong_subject\)`),
		"device write retries":   regexp.MustCompile(`Error writing to outputs\.ockam`),
	}
	counts := map[string]int{}
	for what, re := range reasons {
		p := l.proc
		if what == "device write retries" {
			p = dev
		}
		if counts[what] = p.count(re); counts[what] == 0 {
			t.Errorf("no log line for %s (%s)", what, re)
		}
	}
	requireNoSecretsLogged(t, []*member{authority, rogue, gateway, sensor, impostor, thief}, l.proc, dev)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("figures: %d metrics sent, %d stored, exactly the device's, in %.1fs; %d data messages tampered with; "+
		"listener log lines: %v; %d points written to InfluxDB", n, len(rows), elapsed.Seconds(), tampered, counts,
		written(l.proc))
}

// sendRaw writes data to addr and waits for the listener to close the
// connection.
func sendRaw(t *testing.T, addr string, data []byte) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	_, _ = nc.Write(data)
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("the listener kept a connection open that sent %q…", data[:min(len(data), 16)])
			}
			return
		}
	}
}

// requireNoSecretsLogged fails t if a process log holds a private key of
// the members' vaults (unencrypted key files) or one of their credentials,
// raw, in hex or in base64.
func requireNoSecretsLogged(t *testing.T, members []*member, procs ...*process) {
	t.Helper()
	secrets := map[string][]byte{}
	for _, m := range members {
		keys, _ := filepath.Glob(filepath.Join(m.vault, "*.key"))
		for _, k := range keys {
			b, err := os.ReadFile(k)
			if err != nil || len(b) != 39 {
				t.Fatalf("%s: want an unencrypted key file (%v)", k, err)
			}
			secrets[k] = b[7:]
		}
		if m.credential == "" {
			continue
		}
		b, err := os.ReadFile(m.credential)
		if err != nil {
			t.Fatal(err)
		}
		c, err := secure.ParseCredentialFile(b)
		if err != nil {
			t.Fatal(err)
		}
		raw := c.Marshal()
		secrets[m.credential] = raw
		secrets[m.credential+" signature"] = raw[len(raw)-64:]
	}
	for _, p := range procs {
		text := p.text()
		for name, s := range secrets {
			for _, form := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s),
				base64.RawStdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)} {
				if strings.Contains(text, form) {
					t.Errorf("the log of %s holds %s", p.name, name)
				}
			}
		}
	}
}
