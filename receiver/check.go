package receiver

import (
	"fmt"
	"strings"

	"github.com/influxdata/telegraf"
)

// Checks of a message's points before they are emitted (docs/PROTOCOL.md,
// section 13, and README.md, "Refusals"). A message with one point that
// fails is refused whole with a permanent nack naming the point: its points
// could never be stored, and once emitted they would fail the output batch
// that also holds other devices' points.

// BucketTag is the reserved tag of docs/PROTOCOL.md, section 13: the bucket
// an InfluxDB client named, set by ockam inlet influxdb.
const BucketTag = "_ockam_bucket"

// The limits of InfluxDB 1.x, as influxd 1.8.10 applies them
// (github.com/influxdata/influxdb@v1.8.10, models/points.go and
// tsdb/shard.go). InfluxDB 2.x has the same key limit.
const (
	// maxKeyLength is models.MaxKeyLength: the series key (measurement and
	// tags, escaped as in line protocol) and each series key plus
	// fieldKeySeparator plus a field key must fit in it, or influxd refuses
	// the whole write as unparsable.
	maxKeyLength = 65535
	// fieldKeySeparator is the length of tsm1's "#!~#" between a series key
	// and a field key.
	fieldKeySeparator = 4
	// maxStringField is the documented bound of a string field value in
	// InfluxDB 1.x ("64KB"); longer strings are not guaranteed to be stored.
	maxStringField = 64 << 10
	// ReservedKey is the name influxd refuses as a tag key, and drops as a
	// field key.
	ReservedKey = "time"
)

// pointRefusal is why a message was refused before delivery: the
// messages_refused reason and the nack's text.
type pointRefusal struct {
	kind   string // RefusedReservedField or RefusedInvalidPoint
	reason string
}

// reservedFields returns the field keys no point may carry: the tags the
// listener stamps (identity_tag and attribute_tags) and the reserved tags of
// docs/PROTOCOL.md, section 13. InfluxQL resolves a name that is both a
// tag and a field to the field, so a device's field "ockam_identity" would
// answer a query for another device's verified tag.
func reservedFields(identityTag string, attributeTags []string) map[string]bool {
	r := map[string]bool{BucketTag: true}
	if identityTag != "" {
		r[identityTag] = true
	}
	for _, k := range attributeTags {
		r[k] = true
	}
	return r
}

// checkPoints checks every point of a message against the reserved field
// keys and InfluxDB's rules, as the point will leave the listener: with the
// stamped tags (an empty value removes the tag). It returns nil if all pass.
func checkPoints(metrics []telegraf.Metric, reserved map[string]bool, stamped map[string]string) *pointRefusal {
	// The stamped tags' part of every series key, computed once.
	stampedKey := 0
	for k, v := range stamped {
		if v != "" {
			stampedKey += 2 + escapedLen(k, true) + escapedLen(v, true)
		}
	}
	types := map[fieldID]string{} // within the message
	for _, m := range metrics {
		name := m.Name()
		for _, f := range m.FieldList() {
			if reserved[f.Key] {
				return &pointRefusal{RefusedReservedField, fmt.Sprintf(
					"field %q on measurement %q has the name of a tag the listener sets from the sender's credential; "+
						"rename the field", f.Key, name)}
			}
		}
		if r := checkInfluxRules(m, stamped, stampedKey, types); r != "" {
			return &pointRefusal{RefusedInvalidPoint, r}
		}
	}
	return nil
}

// fieldID is a field of a measurement: the key of checkPoints' types (a
// struct, so that a lookup allocates no string).
type fieldID struct{ measurement, field string }

// checkInfluxRules returns why influxd would refuse m, or "". The texts are
// influxd's own where it has one. stampedKey is the length the stamped tags
// add to the series key.
func checkInfluxRules(m telegraf.Metric, stamped map[string]string, stampedKey int, types map[fieldID]string) string {
	name := m.Name()
	if _, ok := m.GetTag(ReservedKey); ok {
		return fmt.Sprintf("invalid tag key: input tag %q on measurement %q is invalid", ReservedKey, name)
	}
	key := escapedLen(name, false) + stampedKey
	for _, t := range m.TagList() {
		if _, ok := stamped[t.Key]; !ok {
			key += 2 + escapedLen(t.Key, true) + escapedLen(t.Value, true)
		}
	}
	if key > maxKeyLength {
		return fmt.Sprintf("max key length exceeded: %d > %d (measurement %q)", key, maxKeyLength, truncate(name, 64))
	}
	for _, f := range m.FieldList() {
		if f.Key == ReservedKey {
			return fmt.Sprintf("invalid field name: input field %q on measurement %q is invalid", ReservedKey, name)
		}
		if sz := key + fieldKeySeparator + escapedLen(f.Key, true); sz > maxKeyLength {
			return fmt.Sprintf("max key length exceeded: %d > %d (measurement %q, field %q)", sz, maxKeyLength,
				truncate(name, 64), truncate(f.Key, 64))
		}
		typ := fieldType(f.Value)
		if s, ok := f.Value.(string); ok && len(s) > maxStringField {
			return fmt.Sprintf("input field %q on measurement %q is a string of %d bytes, over InfluxDB's limit of %d",
				f.Key, name, len(s), maxStringField)
		}
		k := fieldID{name, f.Key}
		if prev, ok := types[k]; !ok {
			types[k] = typ
		} else if prev != typ {
			return fmt.Sprintf("field type conflict: input field %q on measurement %q is type %s, "+
				"and type %s earlier in the same message", f.Key, name, typ, prev)
		}
	}
	return ""
}

// fieldType names the InfluxDB type a field value is written as.
func fieldType(v any) string {
	switch v.(type) {
	case float64, float32:
		return "float"
	case int64, int32, int16, int8, int:
		return "integer"
	case uint64, uint32, uint16, uint8, uint:
		return "unsigned"
	case bool:
		return "boolean"
	case string:
		return "string"
	}
	return fmt.Sprintf("%T", v)
}

// escapedLen is the length of s escaped as a measurement (tag false) or a
// tag key, tag value or field key (tag true) in line protocol, as
// Telegraf's influx serializer writes it.
func escapedLen(s string, tag bool) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', ',', '\n', '\r', '\t', '\f':
			n++
		case '=':
			if tag {
				n++
			}
		}
	}
	return n
}

// truncate cuts s to at most n bytes, for a reason that quotes a peer's
// string.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
