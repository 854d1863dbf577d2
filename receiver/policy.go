package receiver

import (
	"errors"
	"fmt"
	"maps"

	"github.com/influxdata/telegraf/filter"
)

// AllowRule is one allow block ([[inputs.ockam_listener.allow]]): a
// sender whose credential has all Attributes (equal values) may write
// Measurements (globs of Telegraf's filter package).
type AllowRule struct {
	Attributes   map[string]string `toml:"attributes"`
	Measurements []string          `toml:"measurements"`
}

// policy is the compiled list of allow blocks. A nil policy (no allow block)
// lets any sender with a valid credential write anything.
type policy struct {
	rules []rule
}

type rule struct {
	attributes   map[string]string
	measurements filter.Filter
}

// newPolicy compiles the allow blocks.
func newPolicy(allow []AllowRule) (*policy, error) {
	if len(allow) == 0 {
		return nil, nil
	}
	p := &policy{rules: make([]rule, 0, len(allow))}
	for i, a := range allow {
		if len(a.Measurements) == 0 {
			return nil, fmt.Errorf("allow[%d]: measurements is empty, so the block allows nothing", i)
		}
		for k := range a.Attributes {
			if k == "" {
				return nil, fmt.Errorf("allow[%d]: attributes has an empty key", i)
			}
		}
		for _, m := range a.Measurements {
			if m == "" {
				return nil, fmt.Errorf("allow[%d]: measurements has an empty pattern", i)
			}
		}
		f, err := filter.Compile(a.Measurements)
		if err != nil {
			return nil, fmt.Errorf("allow[%d]: measurements %q: %w", i, a.Measurements, err)
		}
		if f == nil {
			return nil, errors.New("internal error: filter.Compile returned no filter")
		}
		p.rules = append(p.rules, rule{attributes: maps.Clone(a.Attributes), measurements: f})
	}
	return p, nil
}

// grant returns what a credential with these attributes may write: the
// measurement filters of every rule whose attributes it all has.
func (p *policy) grant(attrs map[string]string) grant {
	if p == nil {
		return grant{all: true}
	}
	var g grant
	for _, r := range p.rules {
		if hasAll(attrs, r.attributes) {
			g.filters = append(g.filters, r.measurements)
		}
	}
	return g
}

// hasAll reports whether attrs holds every key of want with the same value.
func hasAll(attrs, want map[string]string) bool {
	for k, v := range want {
		if got, ok := attrs[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// grant is what one peer may write. Its zero value allows nothing.
type grant struct {
	all     bool
	filters []filter.Filter
}

// allows reports whether the peer may write measurement name.
func (g grant) allows(name string) bool {
	if g.all {
		return true
	}
	for _, f := range g.filters {
		if f.Match(name) {
			return true
		}
	}
	return false
}
