package ockam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/ockam-addons/telegraf-ockam/transport/mqtt"
	"github.com/ockam-addons/telegraf-ockam/transport/relay"
)

// target is where the channels go: a listener's TCP address, an MQTT
// topic, or a route through relays (docs/CONCEPTS.md, "Routes, relays and
// transports"). Whatever carries it, the channel is end to end with the
// listener.
type target struct {
	kind     targetKind
	hostport string   // targetTCP
	route    []string // targetRoute
	text     string   // for messages: the address, or the route
}

type targetKind int

const (
	targetTCP targetKind = iota
	targetMQTT
	targetRoute
)

// parseTarget checks address and route, exactly one of which is set.
func parseTarget(address string, route []string) (target, error) {
	switch {
	case address != "" && len(route) > 0:
		return target{}, errors.New(`set either "address" or "route", not both`)
	case address == "" && len(route) == 0:
		return target{}, errors.New(`option "address" is required (or "route", to reach the listener through relays)`)
	case len(route) > 0:
		if err := relay.ParseRoute(route); err != nil {
			return target{}, fmt.Errorf("route: %w", err)
		}
		return target{kind: targetRoute, route: route, text: "route " + strings.Join(route, " → ")}, nil
	case strings.HasPrefix(address, "mqtt://"):
		if _, err := mqtt.ParseURL(address); err != nil {
			return target{}, fmt.Errorf("address %q: %w", address, err)
		}
		return target{kind: targetMQTT, text: address}, nil
	}
	hostport, err := parseAddress(address)
	if err != nil {
		return target{}, err
	}
	return target{kind: targetTCP, hostport: hostport, text: address}, nil
}

// String returns the address or the route, for messages.
func (t target) String() string { return t.text }

// dialTarget opens the connection a channel runs on.
func (o *Ockam) dialTarget(ctx context.Context) (net.Conn, error) {
	switch o.target.kind {
	case targetRoute:
		return relay.Dial(ctx, o.target.route)
	case targetMQTT:
		opts := mqtt.Options{Username: o.MQTTUsername, ConnectTimeout: o.timeout, Logger: o.Log}
		if !o.MQTTPassword.Empty() {
			password, err := o.MQTTPassword.Get()
			if err != nil {
				return nil, fmt.Errorf("mqtt_password: %w", err)
			}
			opts.Password = password.String()
			password.Destroy()
		}
		return mqtt.Dial(ctx, o.target.text, opts)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", o.target.hostport)
}
