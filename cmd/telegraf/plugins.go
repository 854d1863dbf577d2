package main

// The plugins compiled in. Each is a single package: importing it registers
// it (inputs.Add, outputs.Add, ...). Add a stock plugin by importing its
// package from github.com/influxdata/telegraf/plugins/...; Telegraf's
// plugins/*/all packages would pull in every plugin (a binary several times
// larger).
import (
	// telegraf-ockam
	_ "github.com/ockam-addons/telegraf-ockam/cmd/telegraf/internal" // inputs.internal
	_ "github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	_ "github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"

	// inputs
	_ "github.com/influxdata/telegraf/plugins/inputs/cpu"
	_ "github.com/influxdata/telegraf/plugins/inputs/disk"
	_ "github.com/influxdata/telegraf/plugins/inputs/exec"
	_ "github.com/influxdata/telegraf/plugins/inputs/file"
	_ "github.com/influxdata/telegraf/plugins/inputs/influxdb_v2_listener"
	_ "github.com/influxdata/telegraf/plugins/inputs/mem"
	_ "github.com/influxdata/telegraf/plugins/inputs/nats_consumer"
	_ "github.com/influxdata/telegraf/plugins/inputs/net"
	_ "github.com/influxdata/telegraf/plugins/inputs/system"

	// outputs
	_ "github.com/influxdata/telegraf/plugins/outputs/file"
	_ "github.com/influxdata/telegraf/plugins/outputs/influxdb"
	_ "github.com/influxdata/telegraf/plugins/outputs/influxdb_v2"
	_ "github.com/influxdata/telegraf/plugins/outputs/nats"

	// data formats
	_ "github.com/influxdata/telegraf/plugins/parsers/influx"
	_ "github.com/influxdata/telegraf/plugins/serializers/influx"
)
