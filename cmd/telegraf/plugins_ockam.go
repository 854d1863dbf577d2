package main

// The plugins of telegraf-ockam, in every build whatever the plugin list
// (plugins.txt) says.
import (
	_ "github.com/ockam-addons/telegraf-ockam/cmd/telegraf/internal" // inputs.internal
	_ "github.com/ockam-addons/telegraf-ockam/plugins/inputs/ockam_listener"
	_ "github.com/ockam-addons/telegraf-ockam/plugins/outputs/ockam"
)
