package inlet

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The inlet writes as its device for whoever reaches it, and a web browser on
// the device reaches it too: a page on any site can POST a text/plain body to
// http://127.0.0.1:8086/write without a CORS preflight (a "simple request"),
// and with DNS rebinding (a name of the attacker's that first resolves to its
// server, then to 127.0.0.1) it can even read the answers, /health included.
// InfluxDB clients and Telegraf are not browsers: they send no Origin and no
// Sec-Fetch-* headers, and they name the inlet by the address they were
// given. So a request is refused when
//
//   - it carries an Origin header, of any value ("null" included): browsers send
//     it with every cross-origin request and with every POST, and the inlet
//     serves no page of its own that could be a legitimate origin;
//   - it carries Sec-Fetch-Site with any value but "none" (a user typing the
//     address of /health into the address bar): "cross-site", "same-site" and
//     "same-origin" all mean a page made the request;
//   - its Host names neither a loopback address, "localhost", the address the
//     connection arrived at, nor a name in Config.AllowedHosts: a rebinding page
//     sends its own name as Host. A request without a Host (HTTP/1.0) passes:
//     browsers always send one.

// browserRefusal returns why r looks like a request made by a web page, or ""
// if it does not. local is the address the connection was accepted on (nil
// if unknown); allowed are the extra host names, lower case.
func browserRefusal(r *http.Request, local net.Addr, allowed map[string]bool) string {
	if _, ok := r.Header["Origin"]; ok {
		return "a request with an Origin header (from a web page) is refused: InfluxDB clients send none"
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "none" {
		return "a request with Sec-Fetch-Site " + quoteHeader(site) + " (from a web page) is refused"
	}
	if r.Host != "" && !allowedHost(r.Host, local, allowed) {
		return "Host " + quoteHeader(r.Host) + " is refused: use a loopback address, localhost or the inlet's " +
			"listen address (a name that resolves here may be DNS rebinding by a web page)"
	}
	return ""
}

// allowedHost reports whether hostport (a Host header) names a loopback
// address, localhost, the local address, or one of allowed. The port is not
// compared: a port forward may change it, and a rebinding page cannot change
// the name.
func allowedHost(hostport string, local net.Addr, allowed map[string]bool) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || allowed[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	if tcp, ok := local.(*net.TCPAddr); ok {
		if l, ok := netip.AddrFromSlice(tcp.IP); ok && l.Unmap() == ip && !ip.IsUnspecified() {
			return true
		}
	}
	return false
}

// quoteHeader quotes a header value for an error message, cut to a length
// that keeps the message readable.
func quoteHeader(v string) string {
	const max = 128
	if len(v) > max {
		v = v[:max] + "…"
	}
	return strconv.Quote(strings.ToValidUTF8(v, ""))
}

// browserLogInterval is how often a refused browser request is logged: a page
// can send them in a loop.
const browserLogInterval = time.Minute

// refuseBrowser answers 403 and returns true if r looks like a request made
// by a web page; see browserRefusal.
func (h *Handler) refuseBrowser(w http.ResponseWriter, r *http.Request) bool {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	why := browserRefusal(r, local, h.allowedHosts)
	if why == "" {
		return false
	}
	h.stats.browserRefused.Incr(1)
	if h.browserLog.due(time.Now()) {
		h.log.Warnf("%s %s from %s: 403: %s (further refusals are counted in browser_requests_refused and logged "+
			"at most once a minute)", r.Method, r.URL.Path, r.RemoteAddr, why)
	}
	api := v2API
	if r.URL.Path == "/write" {
		api = v1API
	}
	writeError(w, api, http.StatusForbidden, why)
	return true
}

// logLimiter lets a line through at most once per browserLogInterval.
type logLimiter struct {
	mu   sync.Mutex
	next time.Time
}

// due reports whether a line may be logged at now, and if so holds the next
// one back for the interval.
func (l *logLimiter) due(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		return false
	}
	l.next = now.Add(browserLogInterval)
	return true
}
