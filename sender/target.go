package sender

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/ockam-addons/telegraf-ockam/transport/mqtt"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// Target is where the channels go: a listener's TCP address, an MQTT
// topic, or a route through relays (docs/CONCEPTS.md, "Routes, relays and
// transports"). Whatever carries it, the channel is end to end with the
// listener. The zero Target is not valid: build one with ParseTarget.
type Target struct {
	kind     targetKind
	hostport string   // targetTCP
	route    []string // targetRoute
	text     string   // for messages: the address, or the route
}

type targetKind int

const (
	targetNone targetKind = iota
	targetTCP
	targetMQTT
	targetRoute
)

// ParseTarget checks address (tcp://host:port or mqtt://host:port/topic)
// and route (relay hops, docs/CONCEPTS.md), exactly one of which is set.
// Its errors name the options "address" and "route".
func ParseTarget(address string, route []string) (Target, error) {
	switch {
	case address != "" && len(route) > 0:
		return Target{}, errors.New(`set either "address" or "route", not both`)
	case address == "" && len(route) == 0:
		return Target{}, errors.New(`option "address" is required (or "route", to reach the listener through relays)`)
	case len(route) > 0:
		if err := relay.ParseRoute(route); err != nil {
			return Target{}, fmt.Errorf("route: %w", err)
		}
		return Target{kind: targetRoute, route: route, text: "route " + strings.Join(route, " → ")}, nil
	case strings.HasPrefix(address, "mqtt://"):
		if _, err := mqtt.ParseURL(address); err != nil {
			return Target{}, fmt.Errorf("address %q: %w", address, err)
		}
		return Target{kind: targetMQTT, text: address}, nil
	}
	hostport, err := parseAddress(address)
	if err != nil {
		return Target{}, err
	}
	return Target{kind: targetTCP, hostport: hostport, text: address}, nil
}

// parseAddress returns host:port of a tcp:// address (mqtt:// addresses are
// parsed by ParseTarget).
func parseAddress(address string) (string, error) {
	scheme, _, ok := strings.Cut(address, "://")
	if !ok {
		return "", fmt.Errorf("address %q: want tcp://host:port", address)
	}
	if scheme != "tcp" {
		return "", fmt.Errorf("address %q: scheme %q is not supported, only tcp:// and mqtt:// addresses are supported "+
			"(or a route through relays in \"route\")", address, scheme)
	}
	u, err := url.Parse(address)
	if err != nil || u.User != nil || strings.TrimSuffix(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("address %q: want tcp://host:port", address)
	}
	if port, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || port == 0 || u.Hostname() == "" {
		return "", fmt.Errorf("address %q: want tcp://host:port with a port from 1 to 65535", address)
	}
	return u.Host, nil
}

// MQTT reports whether t is an mqtt:// address, the only kind that takes a
// user name and password.
func (t Target) MQTT() bool { return t.kind == targetMQTT }

// String returns the address or the route, for messages.
func (t Target) String() string { return t.text }

// dialTarget opens the connection a channel runs on, within ctx.
func (s *Sender) dialTarget(ctx context.Context) (net.Conn, error) {
	switch s.cfg.Target.kind {
	case targetRoute:
		return relay.Dial(ctx, s.cfg.Target.route)
	case targetMQTT:
		return s.dialMQTT(ctx)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", s.cfg.Target.hostport)
}

// dialMQTT connects to the broker of an mqtt:// target, with the password
// as it is now.
func (s *Sender) dialMQTT(ctx context.Context) (net.Conn, error) {
	opts := mqtt.Options{Username: s.cfg.MQTTUsername, ConnectTimeout: s.cfg.Timeout, Logger: s.log}
	if s.cfg.MQTTPassword != nil {
		password, err := s.cfg.MQTTPassword()
		if err != nil {
			return nil, fmt.Errorf("mqtt_password: %w", err)
		}
		opts.Password = password
	}
	return mqtt.Dial(ctx, s.cfg.Target.text, opts)
}
