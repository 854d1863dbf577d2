package inlet

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// TestAttackBrowser performs what a web page open in a browser on the device
// can do against an inlet on loopback, through a real secure channel to a
// listener: a cross-site text/plain POST (no CORS preflight needed), the same
// from a sandboxed page (Origin: null) and from a same-site one, and a DNS
// rebinding page that reads /health and writes as a same-origin page (its own
// name in Host). Each is refused with 403 and a reason, nothing reaches the
// listener, the refusals are counted and logged once; clients that name the
// inlet as they should still write.
func TestAttackBrowser(t *testing.T) {
	f := newChannelFixture(t, true)
	stats := newCollector(t)
	log := &testutil.CaptureLogger{}
	h, err := New(Config{Sender: f.sender(t, stats), Log: log, Statistics: stats})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	require.NoError(t, err)

	send := func(method, path, host string, header map[string]string, body string) (int, map[string]string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Host = host
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var m map[string]string
		if len(b) > 0 && resp.StatusCode != http.StatusOK {
			require.NoError(t, json.Unmarshal(b, &m), "%s", b)
		}
		if resp.StatusCode == http.StatusForbidden {
			require.NotContains(t, string(b), f.cfg.Identity.Identifier().String(), "the listener's identifier")
		}
		return resp.StatusCode, m
	}
	const origin = "a request with an Origin header (from a web page) is refused: InfluxDB clients send none"
	rebinding := func(host string) string {
		return "Host " + `"` + host + `"` + " is refused: use a loopback address, localhost or the inlet's listen " +
			"address (a name that resolves here may be DNS rebinding by a web page)"
	}
	crossSite := map[string]string{ // what fetch(url, {method: "POST", mode: "no-cors", body}) sends
		"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://evil.example",
		"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty",
	}
	loopback := "127.0.0.1:" + port
	attacks := []struct {
		name, method, path, host string
		header                   map[string]string
		want                     map[string]string
	}{
		{"cross-site POST, v1", http.MethodPost, "/write?db=db", loopback, crossSite, map[string]string{"error": origin}},
		{"cross-site POST, v2", http.MethodPost, "/api/v2/write?bucket=db", "localhost:" + port, crossSite,
			map[string]string{"code": "forbidden", "message": origin}},
		{"sandboxed page", http.MethodPost, "/write?db=db", loopback, map[string]string{"Origin": "null"},
			map[string]string{"error": origin}},
		{"same-site page without Origin", http.MethodPost, "/write?db=db", loopback,
			map[string]string{"Sec-Fetch-Site": "same-site"},
			map[string]string{"error": `a request with Sec-Fetch-Site "same-site" (from a web page) is refused`}},
		{"rebinding page reads /health", http.MethodGet, "/health", "rebind.evil.example:" + port,
			map[string]string{"Sec-Fetch-Site": "same-origin"},
			map[string]string{"code": "forbidden", "message": `a request with Sec-Fetch-Site "same-origin" (from a web page) is refused`}},
		{"rebinding Host alone, /health", http.MethodGet, "/health", "rebind.evil.example:" + port, nil,
			map[string]string{"code": "forbidden", "message": rebinding("rebind.evil.example:" + port)}},
		{"rebinding Host alone, write", http.MethodPost, "/write?db=db", "rebind.evil.example:" + port, nil,
			map[string]string{"error": rebinding("rebind.evil.example:" + port)}},
		{"rebinding to a name under localhost's", http.MethodPost, "/write?db=db", "localhost.evil.example", nil,
			map[string]string{"error": rebinding("localhost.evil.example")}},
		{"unspecified address", http.MethodPost, "/write?db=db", "0.0.0.0:" + port, nil,
			map[string]string{"error": rebinding("0.0.0.0:" + port)}},
	}
	for _, a := range attacks {
		status, body := send(a.method, a.path, a.host, a.header, "e2e_browser,src=page v=1 1700000000\n")
		require.Equal(t, http.StatusForbidden, status, a.name)
		require.Equal(t, a.want, body, a.name)
	}
	require.Empty(t, f.received(), "nothing of the page reached the listener")
	counters := h.Counters()
	require.Equal(t, int64(len(attacks)), counters["ockam_inlet.browser_requests_refused"])
	require.Zero(t, counters["ockam_inlet.writes"])
	require.Zero(t, counters["ockam_inlet.metrics_received"])
	warnings := log.Warnings()
	require.Len(t, warnings, 1, "logged once a minute")
	require.Contains(t, warnings[0], "POST /write from 127.0.0.1:")
	require.Contains(t, warnings[0], "403: "+origin+" (further refusals are counted in browser_requests_refused")

	// What clients do: the address they were given, any case of localhost,
	// [::1] (served here on IPv4: the name is what counts), no browser
	// headers. A user who types the /health address in a browser sends
	// Sec-Fetch-Site: none.
	for _, host := range []string{loopback, "localhost:" + port, "LocalHost.:" + port, "[::1]:" + port, "127.0.0.2", "localhost"} {
		status, body := send(http.MethodPost, "/write?db=db&precision=s", host, map[string]string{"Content-Type": "text/plain; charset=utf-8"},
			"e2e_client,host="+strings.Trim(host, "[]:.")+" v=1 1700000000\n")
		require.Equal(t, http.StatusNoContent, status, "%s: %v", host, body)
	}
	require.Len(t, f.received(), 6)
	status, _ := send(http.MethodGet, "/health", "localhost:"+port, map[string]string{"Sec-Fetch-Site": "none"}, "")
	require.Equal(t, http.StatusOK, status)
}

// TestAllowedHost checks the Host rule: loopback names and addresses, the
// address the connection arrived at, Config.AllowedHosts; nothing else.
func TestAllowedHost(t *testing.T) {
	lan := &net.TCPAddr{IP: net.ParseIP("192.168.7.5"), Port: 8086}
	allowed := map[string]bool{"inlet.plant.lan": true}
	tests := []struct {
		host  string
		local net.Addr
		want  bool
	}{
		{"127.0.0.1:8086", nil, true},
		{"127.9.9.9", nil, true},
		{"[::1]:8086", nil, true},
		{"[::ffff:127.0.0.1]:8086", nil, true},
		{"localhost", nil, true},
		{"LOCALHOST:1", nil, true},
		{"localhost.:8086", nil, true},
		{"192.168.7.5:8086", lan, true},
		{"192.168.7.5:18086", lan, true}, // a port forward
		{"inlet.plant.lan:8086", lan, true},
		{"INLET.plant.lan.", lan, true},
		{"192.168.7.5:8086", nil, false},
		{"192.168.7.6:8086", lan, false},
		{"0.0.0.0:8086", &net.TCPAddr{IP: net.IPv4zero}, false},
		{"[::]:8086", nil, false},
		{"evil.example", lan, false},
		{"localhost.evil.example", nil, false},
		{"evil.localhost.example:8086", nil, false},
		{"127.0.0.1.evil.example", nil, false},
		{"[127.0.0.1]:8086", nil, true}, // not a valid Host, but loopback all the same
		{"[inlet.plant.lan]:1", lan, true},
		{"", nil, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, allowedHost(tt.host, tt.local, allowed), "%q", tt.host)
	}
}
