package ockam

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/control/agent"
	"github.com/ockam-addons/telegraf-ockam/control/apply"
	"github.com/ockam-addons/telegraf-ockam/secure"
	"github.com/ockam-addons/telegraf-ockam/sender"
)

// ControlRule is one [[outputs.ockam.control_policy]] block: an operator
// whose credential has all Attributes (equal values) may send instructions
// of Kinds ("config", "artifact", "command").
type ControlRule struct {
	Attributes map[string]string `toml:"attributes"`
	Kinds      []string          `toml:"kinds"`
}

// controlAgent builds the control agent from the control options: nil
// without control_policy (the device does not opt in).
func (o *Output) controlAgent() (*agent.Agent, error) {
	if len(o.ControlPolicy) == 0 {
		if o.ControlState != "" || o.ControlConfigDir != "" || len(o.ControlCommands) > 0 ||
			len(o.ControlReleases) > 0 || o.ControlStagingDir != "" || len(o.ControlArtifactApply) > 0 {
			return nil, errors.New("control_state, control_config_dir, control_commands and the artifact options need at least one " +
				"[[outputs.ockam.control_policy]] block: without one, no instruction could ever be applied")
		}
		return nil, nil
	}
	var rules []control.Rule
	for i, r := range o.ControlPolicy {
		rule := control.Rule{Attributes: r.Attributes}
		for _, k := range r.Kinds {
			kind, err := control.ParseKind(k)
			if err != nil {
				return nil, fmt.Errorf("control_policy block %d: %w", i+1, err)
			}
			rule.Kinds = append(rule.Kinds, kind)
		}
		rules = append(rules, rule)
	}
	policy, err := control.NewPolicy(rules...)
	if err != nil {
		return nil, fmt.Errorf("control_policy: %w", err)
	}
	if o.ControlState == "" {
		return nil, errors.New("control_state is required with control_policy: the file of the sequence numbers " +
			"applied (keep it with the vault; losing it lets unexpired instructions be applied again)")
	}
	appliers := map[control.Kind]apply.Applier{}
	if o.ControlConfigDir != "" {
		fi, err := os.Stat(o.ControlConfigDir)
		if err != nil {
			return nil, fmt.Errorf("control_config_dir: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("control_config_dir %s: not a directory", o.ControlConfigDir)
		}
		appliers[control.KindConfig] = &apply.ConfigDir{Dir: o.ControlConfigDir}
	}
	if len(o.ControlCommands) > 0 {
		handlers := map[string]apply.Handler{}
		for name, argv := range o.ControlCommands {
			if err := control.CheckName(name); err != nil {
				return nil, fmt.Errorf("control_commands %q: %w", name, err)
			}
			if len(argv) == 0 || argv[0] == "" {
				return nil, fmt.Errorf("control_commands %q: want [program, arguments...]", name)
			}
			handlers[name] = apply.Handler{Program: argv[0], Args: slices.Clone(argv[1:])}
		}
		appliers[control.KindCommand] = &apply.Commands{Handlers: handlers, Timeout: time.Duration(o.ControlCommandTimeout)}
	}
	artifacts, err := o.controlArtifacts()
	if err != nil {
		return nil, err
	}
	if len(appliers) == 0 && artifacts == nil {
		return nil, errors.New("control_policy is set but none of control_config_dir, control_commands, control_staging_dir: this device applies nothing")
	}
	store, err := control.OpenSequenceStore(o.ControlState)
	if err != nil {
		return nil, fmt.Errorf("control_state: %w", err)
	}
	cur := o.trust.Current()
	v, err := control.NewVerifier(control.VerifierConfig{
		Credentials: o.trust.Verifier(),
		Policy:      policy,
		Device:      control.Device{Identifier: cur.Identity.Identifier(), Attributes: cur.Credential.Attributes},
		Sequences:   store,
	})
	if err != nil {
		return nil, err
	}
	a, err := agent.New(agent.Config{Verifier: v, Appliers: appliers, Artifacts: artifacts, Outbox: o.ControlState + ".outbox", Log: o.Log})
	if err != nil {
		return nil, fmt.Errorf("control_state: %w", err)
	}
	kinds := kindsOf(appliers)
	if artifacts != nil {
		kinds += " and artifacts staged in " + o.ControlStagingDir
	}
	o.Log.Infof("Control instructions: applying %s; sequences in %s", kinds, o.ControlState)
	return a, nil
}

// kindsOf names the kinds of appliers.
func kindsOf(appliers map[control.Kind]apply.Applier) string {
	var names []string
	for _, k := range []control.Kind{control.KindConfig, control.KindArtifact, control.KindCommand} {
		if appliers[k] != nil {
			names = append(names, k.String())
		}
	}
	return fmt.Sprint(names)
}

// controlArtifacts builds the artifact applier from the artifact options:
// nil without them.
func (o *Output) controlArtifacts() (*apply.Artifacts, error) {
	if len(o.ControlReleases) == 0 && o.ControlStagingDir == "" && len(o.ControlArtifactApply) == 0 {
		return nil, nil
	}
	if len(o.ControlReleases) == 0 || o.ControlStagingDir == "" {
		return nil, errors.New("artifact instructions need both control_release_identities and control_staging_dir")
	}
	fi, err := os.Stat(o.ControlStagingDir)
	if err != nil {
		return nil, fmt.Errorf("control_staging_dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("control_staging_dir %s: not a directory", o.ControlStagingDir)
	}
	a := &apply.Artifacts{Dir: o.ControlStagingDir, Timeout: time.Duration(o.ControlCommandTimeout)}
	for _, path := range o.ControlReleases {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("control_release_identities: %w", err)
		}
		id, err := secure.ParseIdentityFile(b)
		if err != nil {
			return nil, fmt.Errorf("control_release_identities %s: %w", path, err)
		}
		a.Releases = append(a.Releases, id)
	}
	if len(o.ControlArtifactApply) > 0 {
		if o.ControlArtifactApply[0] == "" {
			return nil, errors.New("control_artifact_apply: want [program, arguments...]")
		}
		a.Apply = &apply.Handler{Program: o.ControlArtifactApply[0], Args: slices.Clone(o.ControlArtifactApply[1:])}
	}
	return a, nil
}

// controlAgent is the control agent as the sender takes it.
type controlAgent struct{ a *agent.Agent }

var _ sender.Control = controlAgent{}

// NewSession implements sender.Control.
func (c controlAgent) NewSession(l sender.ControlLink) sender.ControlSession {
	return c.a.NewSession(l)
}
