// Package deploy_test checks docker-compose.yml, the Dockerfile and the
// demo configurations in deploy/compose/ without a Docker engine: the compose
// file is loaded with compose-go and checked for what the demo needs, the
// Telegraf configurations are loaded by Telegraf's own loader, and, with
// OCKAM_E2E=1 (make test), the services' commands run on loopback with the
// real binaries (see loopback_test.go).
package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is the repository, seen from this package's directory.
const repoRoot = ".."

// The demo's members: the gateway's service, and each device's service.
const gatewayService = "telegraf-gateway"

// The relay's service, the address the gateway registers at and devices
// route through, and the name the gateway registers there.
const (
	relayService = "relay"
	relayAddress = "tcp://relay:4000"
	relayName    = "plant-7-gateway"
)

// device is a device of the demo.
type device struct {
	member  string // the member name init.sh enrolls it as
	site    string // its credential's site attribute
	relayed bool   // it reaches the gateway through the relay, not its port
}

var deviceServices = map[string]device{
	"telegraf-device-1": {member: "device-1", site: "plant-7"},
	"telegraf-device-2": {member: "device-2", site: "plant-9", relayed: true},
}

// loadProject loads docker-compose.yml as `docker compose config` would,
// with an empty environment (nothing of the caller's leaks in).
func loadProject(t *testing.T) *types.Project {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

// service returns the named service or fails t.
func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yml: no service %q (have %v)", name, sortedKeys(p.Services))
	}
	return s
}

// configFile returns the repository file that the service sees at target,
// through a `configs:` entry, or fails t.
func configFile(t *testing.T, p *types.Project, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, c := range s.Configs {
		if c.Target == target {
			obj, ok := p.Configs[c.Source]
			if !ok {
				t.Fatalf("service %s: config %q is not defined", s.Name, c.Source)
			}
			return obj.File
		}
	}
	t.Fatalf("service %s: no config mounted at %s", s.Name, target)
	return ""
}

// env returns the service's environment as KEY=VALUE strings.
func env(s types.ServiceConfig) []string {
	var kv []string
	for k, v := range s.Environment {
		if v != nil {
			kv = append(kv, k+"="+*v)
		}
	}
	sort.Strings(kv)
	return kv
}

// readFile returns the content of path or fails t.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replacer rewrites the demo's container paths and host names for a run on
// loopback. Each old string must occur in every text it is applied to
// that is listed as needing it, so that a change of the demo files that the
// rewrite no longer covers fails loudly instead of running something else.
type replacer struct {
	t     *testing.T
	pairs []string // old, new, ...
}

// apply replaces every pair in s; each old string in must must occur.
func (r *replacer) apply(s string, must ...string) string {
	r.t.Helper()
	for _, old := range must {
		if !strings.Contains(s, old) {
			r.t.Fatalf("%q does not occur in:\n%s", old, s)
		}
	}
	return strings.NewReplacer(r.pairs...).Replace(s)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
