package ockam_listener

import "github.com/ockam-addons/telegraf-ockam/receiver"

// The engine's names that the tests of this adapter assert on: the nack
// reasons and the reason tags of messages_refused and handshakes_failed.
const (
	reasonRevoked      = receiver.ReasonRevoked
	reasonExpired      = receiver.ReasonExpired
	reasonBadLine      = receiver.ReasonBadLine
	reasonNotDelivered = receiver.ReasonNotDelivered

	refusedRevoked  = receiver.RefusedRevoked
	refusedExpired  = receiver.RefusedExpired
	refusedParse    = receiver.RefusedParse
	refusedPolicy   = receiver.RefusedPolicy
	refusedTooLarge = receiver.RefusedTooLarge
	refusedOutput   = receiver.RefusedOutput
)

var handshakeReasons = receiver.HandshakeReasons

// InfluxDB's limits and the first frame's bound, as the tests state them
// (receiver/check.go and conn.go hold the engine's).
const (
	maxKeyLength   = 65535    // models.MaxKeyLength of influxd 1.8.10
	maxStringField = 64 << 10 // InfluxDB 1.x's documented bound of a string field
	maxHello       = 512      // the largest first frame the receiver waits for
)

var refusalReasons = receiver.RefusalReasons

const (
	closeStopping = receiver.CloseStopping
	closeIdle     = receiver.CloseIdle
)
