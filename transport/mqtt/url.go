package mqtt

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPort is the broker port of an address that names none (MQTT over
// plain TCP; TLS to the broker is not supported yet).
const DefaultPort = 1883

// MaxBaseTopic bounds the base topic, in bytes. MQTT allows 65535-byte
// topic names; a base of a few levels is what addresses need, and a bound
// keeps the longest topic (base + "/out/" + session id) far from MQTT's.
const MaxBaseTopic = 256

// URL is a parsed mqtt:// address: a broker and a base topic under which
// the sessions' topics live (docs/PROTOCOL.md, "MQTT transport").
type URL struct {
	// Broker is the broker as paho wants it: "tcp://host:port".
	Broker string
	// BaseTopic is the base topic, without leading or trailing '/'.
	BaseTopic string
}

// String returns the canonical address, "mqtt://host:port/base", with the
// port always written out.
func (u *URL) String() string {
	return "mqtt://" + strings.TrimPrefix(u.Broker, "tcp://") + "/" + u.BaseTopic
}

// inTopic is the topic of a session's device-to-listener messages.
func (u *URL) inTopic(sid string) string { return u.BaseTopic + "/in/" + sid }

// outTopic is the topic of a session's listener-to-device messages.
func (u *URL) outTopic(sid string) string { return u.BaseTopic + "/out/" + sid }

// ParseURL checks an mqtt:// address, "mqtt://host[:port]/base/topic", and
// returns it with the port filled in. It is strict: the scheme is "mqtt",
// there is a host, no user information (a password belongs in
// Options.Password, not in an address that ends up in logs), no query or
// fragment, and a base topic of levels made of A-Z a-z 0-9 . _ ~ -, at most
// MaxBaseTopic bytes. Its errors never repeat the whole address.
func ParseURL(raw string) (*URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the address, user information included
		}
		return nil, fmt.Errorf("mqtt: address: %v", err)
	}
	switch {
	case u.Scheme != "mqtt":
		return nil, fmt.Errorf("mqtt: address scheme %q: want \"mqtt\"", u.Scheme)
	case !strings.HasPrefix(raw, "mqtt:"): // url.Parse lowers the scheme
		return nil, fmt.Errorf("mqtt: address scheme %q: want \"mqtt\"", raw[:len("mqtt")])
	case u.Opaque != "":
		return nil, errors.New("mqtt: address: want mqtt://host:port/topic")
	case u.User != nil:
		return nil, errors.New("mqtt: address has user information: set the username and password options instead")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, errors.New("mqtt: address has a query")
	case strings.Contains(raw, "#"):
		return nil, errors.New("mqtt: address has '#': wildcards are not allowed in a base topic")
	case u.Hostname() == "":
		return nil, errors.New("mqtt: address has no host")
	}
	port := DefaultPort
	if strings.HasSuffix(u.Host, ":") {
		return nil, errors.New("mqtt: address has an empty port")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p[0] == '0' {
			return nil, fmt.Errorf("mqtt: address port %q: want 1 to 65535", p)
		}
		port = n
	}
	if strings.Contains(raw, "%") { // so u.Path is the path as written
		return nil, errors.New("mqtt: address: percent-encoding is not allowed")
	}
	base, err := checkBaseTopic(strings.TrimPrefix(u.Path, "/"))
	if err != nil {
		return nil, err
	}
	return &URL{Broker: "tcp://" + net.JoinHostPort(u.Hostname(), strconv.Itoa(port)), BaseTopic: base}, nil
}

// checkBaseTopic returns base if it is a valid base topic.
func checkBaseTopic(base string) (string, error) {
	if base == "" {
		return "", errors.New("mqtt: address has no base topic: want mqtt://host:port/topic")
	}
	if len(base) > MaxBaseTopic {
		return "", fmt.Errorf("mqtt: base topic is %d bytes, more than %d", len(base), MaxBaseTopic)
	}
	for i, level := range strings.Split(base, "/") {
		if level == "" {
			return "", fmt.Errorf("mqtt: base topic %q has an empty level", base)
		}
		for _, r := range level {
			switch {
			case r == '+':
				return "", fmt.Errorf("mqtt: base topic %q has a wildcard '+'", base)
			case !topicChar(r):
				return "", fmt.Errorf("mqtt: base topic %q: level %d has %q: want A-Z a-z 0-9 . _ ~ -", base, i+1, r)
			}
		}
	}
	return base, nil
}

func topicChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r == '.' || r == '_' || r == '~' || r == '-'
}
