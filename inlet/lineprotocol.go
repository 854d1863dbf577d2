package inlet

import (
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode"

	"github.com/influxdata/influxdb/models"
	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	influxser "github.com/influxdata/telegraf/plugins/serializers/influx"
)

// The inlet accepts what InfluxDB 1.8 accepts, line by line: a body is
// parsed by influxd's own parser (models.ParsePointsWithPrecision of
// github.com/influxdata/influxdb v1.8.10), and the points that influxd
// would drop when it stores them, which the inlet can tell from the body
// alone, are dropped as influxd drops them (tsdb.Shard.validateSeriesAndFields):
// a tag key "time", a point whose only field is "time", and a field whose type
// differs from the type of the same field earlier in the body. The text of
// every error is influxd's. One refusal is the inlet's own: a point whose
// backslashes or control characters Telegraf and influxd read differently,
// which would be stored changed (see carried). Type conflicts with data
// already stored, and a missing database, only the database knows.

// lines is a parsed write body.
type lines struct {
	// payload are the points to send, in the order of the body, as line
	// protocol that Telegraf's parser (the listener's) reads as influxd
	// read the body, each with the tag BucketTag; count is their number.
	payload []byte
	count   int
	// plain counts the points written from the parsed values without a
	// Telegraf metric (see appendPlain); the others were serialized.
	plain int
	// metrics are the metrics serialized, with plain false only (for the
	// fuzz test).
	metrics []telegraf.Metric
	// unserializable counts the points that Telegraf's serializer refused,
	// and unserializableReason says why for the first.
	unserializable       int
	unserializableReason string
	// parseErr names every line that does not parse, as influxd does:
	// "unable to parse '<line>': <reason>", one per line; "" if none.
	parseErr string
	// dropped counts the points that parse but that influxd would not
	// store; dropReason is influxd's reason for the first of them.
	dropped    int
	dropReason string
}

// parseLines parses body as influxd 1.8 does for a write with precision
// (influxd's codes: "n" or "", "u", "ms", "s", "m", "h"), and writes the
// points to send, each tagged BucketTag=bucket. A point without a
// timestamp gets now, truncated to the precision.
//
// Most points are written straight from what influxd's parser read
// (appendPlain): the series key as it is in the body, the field values
// and the timestamp in nanoseconds. A Telegraf metric is built and
// serialized only where it must be: a point whose bytes need a check of
// the two dialects (backslashes, control characters), that has a tag
// BucketTag of its own or a field "time", or when the bucket must be
// escaped.
//
// It is self-contained (no Handler) so that whatever sends the bytes can
// check them with InfluxDB's rules first.
func parseLines(body []byte, now time.Time, precision, bucket string) lines {
	return parseBody(body, now, precision, bucket, true)
}

// parseBody is parseLines; with plain false every point is serialized from
// a Telegraf metric (the fuzz test compares both ways).
func parseBody(body []byte, now time.Time, precision, bucket string, plain bool) lines {
	points, err := models.ParsePointsWithPrecision(body, now.UTC(), precision)
	var out lines
	plain = plain && plainBucket(bucket)
	w := newLineWriter(bucket, len(body))
	if err != nil {
		out.parseErr = err.Error()
	}
	var tagTime, fieldTime, conflict string // the first reason of each kind, as influxd orders them
	types := fieldTypes{}                   // the type each field has in this body
	for _, p := range points {
		name := string(p.Name())
		if p.Tags().Get([]byte("time")) != nil {
			out.dropped++
			tagTime = first(tagTime, fmt.Sprintf(`invalid tag key: input tag "time" on measurement "%s" is invalid`, name))
			continue
		}
		if plain {
			if w.appendPlain(p, name, types) {
				out.count++
				out.plain++
				continue
			}
		}
		m, reason := toMetric(p, name, types)
		if why, ok := unparsable[reason]; ok {
			bad := fmt.Sprintf("unable to parse '%s': %s", p.String(), why)
			out.parseErr = strings.TrimPrefix(out.parseErr+"\n"+bad, "\n")
			continue
		}
		if m == nil {
			out.dropped++
			if reason == "" {
				fieldTime = first(fieldTime, fmt.Sprintf(`invalid field name: input field "time" on measurement "%s" is invalid`, name))
			}
			conflict = first(conflict, reason)
			continue
		}
		if err := w.appendMetric(m); err != nil {
			out.unserializable++
			out.unserializableReason = first(out.unserializableReason, fmt.Sprintf("metric %q: %v", name, err))
			continue
		}
		if !plain {
			out.metrics = append(out.metrics, m)
		}
		out.count++
	}
	out.payload = w.buf
	out.dropReason = first(first(tagTime, fieldTime), conflict)
	return out
}

// unparsable are the reasons of toMetric that refuse a point as influxd
// refuses a line it cannot parse, and the message for each.
var unparsable = map[string]string{
	errNotCarried: "a backslash or a control character that the inlet cannot carry unchanged",
	errUnreadable: "a field value that influxd's own parser cannot read back",
}

// toMetric returns p as a metric, without a field "time" (influxd skips it),
// and records the types of its fields in types. It returns nil and "" if p
// has no other field, nil and influxd's reason if a field's type differs
// from the one recorded, nil and errNotCarried if the point would not
// reach influxd unchanged, and nil and errUnreadable if influxd cannot read
// a field value back (then nothing is recorded). With types nil, it
// only converts p.
func toMetric(p models.Point, name string, types fieldTypes) (telegraf.Metric, string) {
	fields := map[string]any{}
	iter := p.FieldIterator()
	for iter.Next() {
		key := string(iter.FieldKey())
		if key == "time" {
			continue
		}
		typ := iter.Type()
		if have, ok := types.get(name, []byte(key)); ok && have != typ {
			return nil, fmt.Sprintf(`field type conflict: input field "%s" on measurement "%s" is type %s, already exists as type %s`,
				key, name, typeName(typ), typeName(have))
		}
		v, err := fieldValue(iter)
		if err != nil {
			return nil, errUnreadable
		}
		fields[key] = v
	}
	if len(fields) == 0 {
		return nil, ""
	}
	tags := map[string]string{}
	for _, t := range p.Tags() {
		tags[string(t.Key)] = string(t.Value)
	}
	// The fields in the order of the body (the last of a repeated one): a
	// map's order would make carried, which serializes m, vary from run
	// to run.
	m := metric.New(name, tags, nil, p.Time())
	for iter.Reset(); iter.Next(); {
		if key := string(iter.FieldKey()); key != "time" {
			m.AddField(key, fields[key])
		}
	}
	if types != nil && !carried(m) {
		return nil, errNotCarried
	}
	if types != nil {
		for key, v := range fields {
			types.set(name, []byte(key), fieldType(v))
		}
	}
	return m, ""
}

// fieldTypes are the types of the fields of a body, by measurement and
// field key.
type fieldTypes map[string]map[string]models.FieldType

// get returns the type of field key of measurement name, if recorded.
func (ft fieldTypes) get(name string, key []byte) (models.FieldType, bool) {
	t, ok := ft[name][string(key)]
	return t, ok
}

// set records the type of field key of measurement name.
func (ft fieldTypes) set(name string, key []byte, t models.FieldType) {
	m := ft[name]
	if m == nil {
		m = map[string]models.FieldType{}
		ft[name] = m
	}
	if have, ok := m[string(key)]; !ok || have != t {
		m[string(key)] = t
	}
}

// errNotCarried marks a point that influxd parses but that would not reach
// it unchanged; see carried.
const errNotCarried = "not carried"

// errUnreadable marks a point that influxd's parser accepts but whose field
// values it cannot read back (see fieldValue): influxd itself would fail on
// it, so it is refused as unparsable.
const errUnreadable = "unreadable"

// carried reports whether m reaches influxd unchanged on its way through the
// channel and the gateway: serialized by Telegraf (outputs.ockam, then the
// gateway's outputs), parsed by Telegraf (the listener) and by influxd. The
// dialects differ on backslashes (influxd reads `\\ ` as a backslash and an
// escaped space, Telegraf as an escaped backslash and the end of the name)
// and on control characters (Telegraf writes a form feed in a key as `\f`,
// which influxd stores as two characters), so only points with either are
// checked.
func carried(m telegraf.Metric) bool {
	if !needsCheck(m) {
		return true
	}
	s := &influxser.Serializer{}
	p := &influx.Parser{}
	if s.Init() != nil || p.Init() != nil {
		return false
	}
	line, err := s.Serialize(m)
	if err != nil {
		return false
	}
	back, err := p.Parse(line)
	if err != nil || len(back) != 1 || !sameMetric(m, back[0]) {
		return false
	}
	points, err := models.ParsePointsWithPrecision(line, time.Time{}, "n")
	if err != nil || len(points) != 1 {
		return false
	}
	stored, reason := toMetric(points[0], string(points[0].Name()), nil)
	return reason == "" && stored != nil && sameMetric(m, stored)
}

// needsCheck reports whether m has a backslash or a control character in its
// name, a tag, a field key or a string value, or an empty key.
func needsCheck(m telegraf.Metric) bool {
	odd := func(s string) bool {
		return strings.ContainsRune(s, '\\') || strings.ContainsFunc(s, unicode.IsControl)
	}
	key := func(s string) bool { return s == "" || odd(s) } // "": influxd reads a key out of a NUL
	if key(m.Name()) {
		return true
	}
	for _, t := range m.TagList() {
		if key(t.Key) || key(t.Value) {
			return true
		}
	}
	for _, f := range m.FieldList() {
		if v, ok := f.Value.(string); key(f.Key) || ok && odd(v) {
			return true
		}
	}
	return false
}

// sameMetric reports whether a and b have the same name, tags and fields.
func sameMetric(a, b telegraf.Metric) bool {
	return a.Name() == b.Name() && maps.Equal(a.Tags(), b.Tags()) && maps.Equal(a.Fields(), b.Fields())
}

// fieldValue returns the value at iter, unescaped as influxd stores it.
// influxd's parser accepts lines whose values its own iterator then reads
// out of bounds (a string of a single quote after an escaped key:
// FuzzParseLines found `0 0=""\,"="`); that panic is returned as the
// point's error.
func fieldValue(iter models.FieldIterator) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("influxd's parser cannot read the value back: %v", r)
		}
	}()
	switch iter.Type() {
	case models.Float:
		return iter.FloatValue()
	case models.Integer:
		return iter.IntegerValue()
	case models.Unsigned: // refused by the parser of influxd 1.8 (models.EnableUintSupport)
		return iter.UnsignedValue()
	case models.String:
		return iter.StringValue(), nil
	case models.Boolean:
		return iter.BooleanValue()
	}
	return nil, fmt.Errorf("unknown field type %v", iter.Type())
}

// fieldType is the models type of a value fieldValue returned.
func fieldType(v any) models.FieldType {
	switch v.(type) {
	case float64:
		return models.Float
	case int64:
		return models.Integer
	case uint64:
		return models.Unsigned
	case string:
		return models.String
	}
	return models.Boolean
}

// typeName is influxd's name of a field type (influxql.DataType.String).
func typeName(t models.FieldType) string {
	switch t {
	case models.Float:
		return "float"
	case models.Integer:
		return "integer"
	case models.Unsigned:
		return "unsigned"
	case models.String:
		return "string"
	case models.Boolean:
		return "boolean"
	}
	return "unknown"
}

// first returns a if it is set, else b.
func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
