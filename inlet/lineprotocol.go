package inlet

import (
	"bytes"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

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
	types := map[fieldOf]models.FieldType{} // the type each field has in this body
	for _, p := range points {
		name := string(p.Name())
		if p.Tags().Get([]byte("time")) != nil {
			out.dropped++
			tagTime = first(tagTime, fmt.Sprintf(`invalid tag key: input tag "time" on measurement "%s" is invalid`, name))
			continue
		}
		if plain {
			var ok bool
			if w.buf, ok = appendPlain(w.buf, p, w.tag, types); ok {
				out.count++
				out.plain++
				continue
			}
		}
		m, reason := toMetric(p, name, types)
		if reason == errNotCarried {
			bad := fmt.Sprintf("unable to parse '%s': a backslash or a control character that the inlet cannot carry unchanged", p.String())
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

// lineWriter writes the points of one body.
type lineWriter struct {
	buf    []byte
	bucket string
	tag    []byte // ",<BucketTag>=<bucket>", for appendPlain
	ser    *influxser.Serializer
}

func newLineWriter(bucket string, size int) *lineWriter {
	// The lines are about as long as the body, plus the tag on each.
	return &lineWriter{buf: make([]byte, 0, size+size/4), bucket: bucket, tag: []byte("," + BucketTag + "=" + bucket)}
}

// appendMetric serializes m, with the tag BucketTag, as outputs.ockam does.
func (w *lineWriter) appendMetric(m telegraf.Metric) error {
	if w.ser == nil {
		w.ser = &influxser.Serializer{}
		if err := w.ser.Init(); err != nil {
			return err
		}
	}
	m.AddTag(BucketTag, w.bucket)
	line, err := w.ser.Serialize(m)
	if err != nil {
		return err
	}
	w.buf = append(w.buf, line...)
	return nil
}

// appendPlain appends p to buf as "<key> <fields> <nanoseconds>\n", where
// key is the series key as influxd read it (measurement and sorted tags, as
// in the body) with tag added among the tags, and fields are written from
// the parsed values as Telegraf's serializer writes them (integers with an
// i, floats with the fewest digits that read back the same, true or false,
// strings quoted). It does so only for a point whose key and string values hold no
// backslash, no control character and no double quote, whose tags are
// plain key=value pairs and not BucketTag, and whose fields are not "time"
// and not repeated: Telegraf and influxd read those bytes the same way, so
// no check is needed. It records the types of the fields in types, as
// toMetric does. Otherwise it returns buf unchanged and false, and the
// point goes through toMetric.
func appendPlain(buf []byte, p models.Point, tag []byte, types map[fieldOf]models.FieldType) ([]byte, bool) {
	start := len(buf)
	buf, ok := appendKey(buf, p.Key(), tag)
	if !ok {
		return buf[:start], false
	}
	name := ""
	var fields []keyType // of p so far: a repeated one takes the long way
	iter := p.FieldIterator()
	for iter.Next() {
		k, typ := iter.FieldKey(), iter.Type()
		// FieldKey is unescaped: a key that needs escaping takes the long way.
		if len(k) == 0 || string(k) == "time" || !plainValue(string(k)) || bytes.ContainsAny(k, " ,=") ||
			repeated(fields, k) {
			return buf[:start], false
		}
		if name == "" {
			name = string(p.Name())
		}
		if have, ok := types[fieldOf{name, string(k)}]; ok && have != typ {
			return buf[:start], false // toMetric gives influxd's reason
		}
		fields = append(fields, keyType{string(k), typ})
		if len(fields) == 1 {
			buf = append(buf, ' ')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, k...)
		buf = append(buf, '=')
		var ok bool
		if buf, ok = appendValue(buf, iter); !ok {
			return buf[:start], false
		}
	}
	if len(fields) == 0 {
		return buf[:start], false // toMetric drops it, as influxd does
	}
	for _, f := range fields {
		types[fieldOf{name, f.key}] = f.typ
	}
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, p.UnixNano(), 10)
	return append(buf, '\n'), true
}

// keyType is a field's key and type.
type keyType struct {
	key string
	typ models.FieldType
}

// repeated reports whether k is among fields.
func repeated(fields []keyType, k []byte) bool {
	for _, f := range fields {
		if f.key == string(k) {
			return true
		}
	}
	return false
}

// appendValue appends the value at iter as appendPlain writes it; false if
// it cannot.
func appendValue(buf []byte, iter models.FieldIterator) ([]byte, bool) {
	switch iter.Type() {
	case models.Float:
		v, err := iter.FloatValue()
		return strconv.AppendFloat(buf, v, 'f', -1, 64), err == nil // as Telegraf's serializer
	case models.Integer:
		v, err := iter.IntegerValue()
		return append(strconv.AppendInt(buf, v, 10), 'i'), err == nil
	case models.Boolean:
		v, err := iter.BooleanValue()
		return strconv.AppendBool(buf, v), err == nil
	case models.String:
		v := iter.StringValue()
		if !plainValue(v) || strings.ContainsRune(v, '"') {
			return buf, false
		}
		buf = append(buf, '"')
		buf = append(buf, v...)
		return append(buf, '"'), true
	}
	return buf, false // unsigned: influxd 1.8 refuses it
}

// plainValue reports whether s holds no backslash and no control
// character: no escape and no character that the two dialects write or
// read differently.
func plainValue(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, '\\') && !strings.ContainsFunc(s, unicode.IsControl)
}

// plainBucket reports whether bucket can be a tag value as it is.
func plainBucket(bucket string) bool {
	return plainValue(bucket) && !strings.ContainsAny(bucket, ", =")
}

// appendKey appends the series key key with tag (",BucketTag=bucket")
// among its tags, in order, as Telegraf's serializer would write them. It
// returns false, and what it appended is to be dropped, unless key is
// plain (plainValue), its tags are key=value pairs with one '=' each, and
// none is BucketTag or empty: then Telegraf's parser reads it as influxd did.
func appendKey(buf, key, tag []byte) ([]byte, bool) {
	if !utf8.Valid(key) || bytes.IndexByte(key, '\\') >= 0 || bytes.ContainsFunc(key, unicode.IsControl) {
		return buf, false
	}
	name, tags, _ := bytes.Cut(key, []byte{','})
	if len(name) == 0 { // influxd reads a name out of a NUL
		return buf, false
	}
	buf = append(buf, name...)
	bucketTag := []byte(BucketTag)
	for len(tags) > 0 {
		var pair []byte
		pair, tags, _ = bytes.Cut(tags, []byte{','})
		k, v, ok := bytes.Cut(pair, []byte{'='})
		if !ok || len(k) == 0 || len(v) == 0 || bytes.IndexByte(v, '=') >= 0 || bytes.Equal(k, bucketTag) {
			return buf, false
		}
		if tag != nil && bytes.Compare(k, bucketTag) > 0 {
			buf, tag = append(buf, tag...), nil
		}
		buf = append(buf, ',')
		buf = append(buf, pair...)
	}
	return append(buf, tag...), true
}

// toMetric returns p as a metric, without a field "time" (influxd skips it),
// and records the types of its fields in types. It returns nil and "" if p
// has no other field, nil and influxd's reason if a field's type differs
// from the one recorded, and nil and errNotCarried if the point would not
// reach influxd unchanged (then nothing is recorded). With types nil, it
// only converts p.
func toMetric(p models.Point, name string, types map[fieldOf]models.FieldType) (telegraf.Metric, string) {
	fields := map[string]any{}
	iter := p.FieldIterator()
	for iter.Next() {
		key := string(iter.FieldKey())
		if key == "time" {
			continue
		}
		typ := iter.Type()
		if have, ok := types[fieldOf{name, key}]; ok && have != typ {
			return nil, fmt.Sprintf(`field type conflict: input field "%s" on measurement "%s" is type %s, already exists as type %s`,
				key, name, typeName(typ), typeName(have))
		}
		v, err := fieldValue(iter)
		if err != nil {
			// The parser checked every value: a caller's bug, or influxd's.
			panic(fmt.Sprintf("inlet: internal error: field %q of a parsed point: %v", key, err))
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
	m := metric.New(name, tags, fields, p.Time())
	if types != nil && !carried(m) {
		return nil, errNotCarried
	}
	if types != nil {
		for key, v := range fields {
			types[fieldOf{name, key}] = fieldType(v)
		}
	}
	return m, ""
}

// fieldOf names a field of a measurement.
type fieldOf struct{ measurement, field string }

// errNotCarried marks a point that influxd parses but that would not reach
// it unchanged; see carried.
const errNotCarried = "not carried"

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
func fieldValue(iter models.FieldIterator) (any, error) {
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
