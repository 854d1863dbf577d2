package main

import (
	_ "embed"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/aggregators"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/plugins/outputs"
	"github.com/influxdata/telegraf/plugins/parsers"
	"github.com/influxdata/telegraf/plugins/processors"
	"github.com/influxdata/telegraf/plugins/secretstores"
	"github.com/influxdata/telegraf/plugins/serializers"
)

// This file prints sample configurations as Telegraf's cmd/telegraf
// (printer.go) does, for --sample-config, --usage, config and plugins.
// Telegraf's package main cannot be imported, so this is a port of it over
// the same public plugin registries; the output is the same for the
// plugins this binary has.

// agentConfig is the [agent] section of a sample configuration: a copy of
// Telegraf's cmd/telegraf/agent.conf (a test checks that it is the same).
//
//go:embed agent.conf
var agentConfig string

// filters are the --*-filter flags: plugin names separated by ':'.
type filters struct {
	section, input, output, aggregator, processor, secretstore []string
}

// add appends the names of the filter flags of another place on the
// command line (telegraf --input-filter cpu config --input-filter mem).
func (f *filters) add(g filters) {
	f.section = append(f.section, g.section...)
	f.input = append(f.input, g.input...)
	f.output = append(f.output, g.output...)
	f.aggregator = append(f.aggregator, g.aggregator...)
	f.processor = append(f.processor, g.processor...)
	f.secretstore = append(f.secretstore, g.secretstore...)
}

// filterList is a flag of names separated by ':'; repeating it adds names.
type filterList []string

func (l *filterList) String() string { return strings.Join(*l, ":") }

func (l *filterList) Set(v string) error {
	for _, name := range strings.Split(v, ":") {
		if name != "" {
			*l = append(*l, name)
		}
	}
	return nil
}

const sampleHeader = `# Telegraf Configuration
#
# Telegraf is entirely plugin driven. All metrics are gathered from the
# declared inputs, and sent to the declared outputs.
#
# Plugins must be declared in here to be active.
# To deactivate a plugin, comment out the name and any variables.
#
# Use 'telegraf -config telegraf.conf -test' to see what metrics a config
# file would generate.
#
# Environment variables can be used anywhere in this config file, simply surround
# them with ${}. For strings the variable must be within quotes (ie, "${STR_VAR}"),
# for numbers and booleans they should be plain (ie, ${INT_VAR}, ${BOOL_VAR})

`

const globalTagsConfig = `
# Global tags can be specified here in key="value" format.
[global_tags]
  # dc = "us-east-1" # will tag all metrics with dc=us-east-1
  # rack = "1a"
  ## Environment variables can be used as tags, and throughout the config file
  # user = "$USER"

`

// sectionHeader returns the banner above a kind of plugins, as Telegraf
// prints it: the title centred in a box of '#', 79 wide.
func sectionHeader(title string) string {
	line := strings.Repeat("#", 79)
	return fmt.Sprintf("\n%s\n#%-77s#\n%s\n\n", line, strings.Repeat(" ", 28)+title, line)
}

var (
	// sectionDefaults are the sections printed without --section-filter.
	sectionDefaults = []string{"global_tags", "agent", "secretstores", "outputs", "processors", "aggregators", "inputs"}
	// inputDefaults are the inputs printed uncommented without --input-filter.
	inputDefaults = []string{"cpu", "mem", "swap", "system", "kernel", "processes", "disk", "diskio"}
)

// printSampleConfig prints a sample configuration: without filters, every
// plugin of this binary, commented out but for the default inputs; with
// filters, only the plugins named, uncommented.
func printSampleConfig(w io.Writer, f filters) {
	io.WriteString(w, sampleHeader)
	sections := f.section
	if len(sections) == 0 {
		sections = sectionDefaults
	}
	if slices.Contains(sections, "global_tags") {
		io.WriteString(w, globalTagsConfig)
	}
	if slices.Contains(sections, "agent") {
		io.WriteString(w, agentConfig)
	}
	if slices.Contains(sections, "secretstores") {
		printKind(w, "SECRET STORE PLUGINS", "secretstores", f.secretstore, nil, secretstorePlugins())
	}
	if slices.Contains(sections, "outputs") {
		printKind(w, "OUTPUT PLUGINS", "outputs", f.output, nil, outputPlugins())
	}
	if slices.Contains(sections, "processors") {
		printKind(w, "PROCESSOR PLUGINS", "processors", f.processor, nil, processorPlugins())
	}
	if slices.Contains(sections, "aggregators") {
		printKind(w, "AGGREGATOR PLUGINS", "aggregators", f.aggregator, nil, aggregatorPlugins())
	}
	if slices.Contains(sections, "inputs") {
		printInputs(w, f.input)
	}
}

// described is a plugin ready to print.
type described struct {
	name        string
	plugin      telegraf.PluginDescriber
	deprecation telegraf.DeprecationInfo
}

func secretstorePlugins() []described {
	var out []described
	for name, create := range secretstores.SecretStores {
		out = append(out, described{name, create("dummy"), secretstores.Deprecations[name]})
	}
	return sorted(out)
}

func outputPlugins() []described {
	var out []described
	for name, create := range outputs.Outputs {
		out = append(out, described{name, create(), outputs.Deprecations[name]})
	}
	out = sorted(out)
	// As in Telegraf: influxdb_v2 first.
	for i, d := range out {
		if d.name == "influxdb_v2" {
			out = append(append([]described{d}, out[:i]...), out[i+1:]...)
			break
		}
	}
	return out
}

func processorPlugins() []described {
	var out []described
	for name, create := range processors.Processors {
		out = append(out, described{name, create(), processors.Deprecations[name]})
	}
	return sorted(out)
}

func aggregatorPlugins() []described {
	var out []described
	for name, create := range aggregators.Aggregators {
		out = append(out, described{name, create(), aggregators.Deprecations[name]})
	}
	return sorted(out)
}

func sorted(ds []described) []described {
	sort.Slice(ds, func(i, j int) bool { return ds[i].name < ds[j].name })
	return ds
}

// printKind prints the plugins of one kind: those named by filter,
// uncommented; without a filter, those of defaults uncommented and the
// others commented out.
func printKind(w io.Writer, title, kind string, filter, defaults []string, all []described) {
	var printed bool
	for _, d := range all {
		commented := false
		switch {
		case len(filter) > 0 && !slices.Contains(filter, d.name):
			continue
		case len(filter) == 0:
			commented = !slices.Contains(defaults, d.name)
		}
		if !printed {
			io.WriteString(w, sectionHeader(title))
			printed = true
		}
		printConfig(w, kind, d, commented)
	}
}

// printInputs prints inputs as printKind does, the service inputs last.
func printInputs(w io.Writer, filter []string) {
	var polled, service []described
	for name, create := range inputs.Inputs {
		d := described{name, create(), inputs.Deprecations[name]}
		if _, ok := d.plugin.(telegraf.ServiceInput); ok {
			service = append(service, d)
		} else {
			polled = append(polled, d)
		}
	}
	printKind(w, "INPUT PLUGINS", "inputs", filter, inputDefaults, sorted(polled))
	printKind(w, "SERVICE INPUT PLUGINS", "inputs", filter, inputDefaults, sorted(service))
}

// printConfig prints one plugin's sample configuration, as Telegraf's
// printConfig does.
func printConfig(w io.Writer, kind string, d described, commented bool) {
	comment := ""
	if commented {
		comment = "# "
	}
	if di := d.deprecation; di.Since != "" {
		removal := ""
		if di.RemovalIn != "" {
			removal = " and will be removed in " + di.RemovalIn
		}
		fmt.Fprintf(w, "\n%s## DEPRECATED: The %q plugin is deprecated in version %s%s, %s.",
			comment, d.name, di.Since, removal, di.Notice)
	}
	sample := d.plugin.SampleConfig()
	if sample == "" {
		fmt.Fprintf(w, "\n#[[%s.%s]]", kind, d.name)
		fmt.Fprintf(w, "\n%s  # no configuration\n\n", comment)
		return
	}
	lines := strings.Split(sample, "\n")
	io.WriteString(w, "\n")
	for i, line := range lines {
		if i == len(lines)-1 {
			io.WriteString(w, "\n")
			continue
		}
		io.WriteString(w, strings.TrimRight(comment+line, " ")+"\n")
	}
}

// printUsage prints the sample configuration of the input and the output
// called name (telegraf --usage NAME).
func printUsage(w io.Writer, name string) error {
	found := false
	if create, ok := inputs.Inputs[name]; ok {
		printConfig(w, "inputs", described{name, create(), inputs.Deprecations[name]}, false)
		found = true
	}
	if create, ok := outputs.Outputs[name]; ok {
		printConfig(w, "outputs", described{name, create(), outputs.Deprecations[name]}, false)
		found = true
	}
	if !found {
		return fmt.Errorf("no input or output %q in this build (telegraf plugins lists them)", name)
	}
	return nil
}

// printPlugins prints every plugin of this build, KIND.NAME a line
// (telegraf plugins), or only the deprecated ones.
func printPlugins(w io.Writer, deprecated bool) {
	if deprecated {
		names(w, "inputs", inputs.Deprecations)
		names(w, "outputs", outputs.Deprecations)
		names(w, "processors", processors.Deprecations)
		names(w, "aggregators", aggregators.Deprecations)
		names(w, "secretstores", secretstores.Deprecations)
		names(w, "parsers", parsers.Deprecations)
		names(w, "serializers", serializers.Deprecations)
		return
	}
	names(w, "inputs", inputs.Inputs)
	names(w, "outputs", outputs.Outputs)
	names(w, "processors", processors.Processors)
	names(w, "aggregators", aggregators.Aggregators)
	names(w, "secretstores", secretstores.SecretStores)
	names(w, "parsers", parsers.Parsers)
	names(w, "serializers", serializers.Serializers)
}

func names[M ~map[string]V, V any](w io.Writer, kind string, m M) {
	list := make([]string, 0, len(m))
	for name := range m {
		list = append(list, kind+"."+name+"\n")
	}
	sort.Strings(list)
	io.WriteString(w, strings.Join(list, ""))
}
