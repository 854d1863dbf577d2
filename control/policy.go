package control

import (
	"fmt"
	"maps"
	"slices"
)

// Rule lets an operator whose credential has every attribute of Attributes
// send instructions of the Kinds. An empty Attributes matches every
// credential of a trusted authority: spell out at least one attribute.
type Rule struct {
	Attributes map[string]string
	Kinds      []Kind
}

// Policy is the device's list of rules: an instruction is allowed if one
// rule matches its operator's credential and names its kind. An empty
// Policy allows nothing.
type Policy struct {
	rules []Rule
}

// NewPolicy checks and copies rules: each names at least one attribute and
// one known kind.
func NewPolicy(rules ...Rule) (*Policy, error) {
	p := &Policy{}
	for i, r := range rules {
		if len(r.Attributes) == 0 {
			return nil, fmt.Errorf("control: policy rule %d names no attribute: it would let every credential of the authority send instructions", i+1)
		}
		if len(r.Kinds) == 0 {
			return nil, fmt.Errorf("control: policy rule %d names no kind", i+1)
		}
		for _, k := range r.Kinds {
			if !k.Known() {
				return nil, fmt.Errorf("control: policy rule %d: unknown kind %v", i+1, k)
			}
		}
		p.rules = append(p.rules, Rule{Attributes: maps.Clone(r.Attributes), Kinds: slices.Clone(r.Kinds)})
	}
	return p, nil
}

// Allows reports whether an operator with these verified attributes may
// send kind.
func (p *Policy) Allows(attrs map[string]string, kind Kind) bool {
	for _, r := range p.rules {
		if slices.Contains(r.Kinds, kind) && hasAll(attrs, r.Attributes) {
			return true
		}
	}
	return false
}

// hasAll reports whether attrs holds every pair of want.
func hasAll(attrs, want map[string]string) bool {
	for k, v := range want {
		if got, ok := attrs[k]; !ok || got != v {
			return false
		}
	}
	return true
}
