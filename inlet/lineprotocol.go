package inlet

import (
	"bytes"
	"fmt"
	"maps"
	"math"
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
	tag    []byte    // ",<BucketTag>=<bucket>", for appendPlain
	fields []keyType // appendPlain's, reused
	line   []byte    // appendPlain's, reused
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

// appendPlain appends p to w.buf as "<key> <fields> <nanoseconds>\n",
// where key is the series key as influxd read it (measurement and sorted
// tags, as in the body) with the bucket tag added among the tags, and
// fields are the point's fields as they are in the body. It does so only
// for a point whose bytes hold no backslash and no control character,
// whose tags are plain key=value pairs and not BucketTag, whose fields are
// not "time" and not repeated, and whose values are written as Telegraf's
// parser reads them (no leading zeros, a finite float): Telegraf and
// influxd then read those bytes the same way, so no check is needed. It
// records the types of the fields in types, as toMetric does. Otherwise it
// appends nothing and returns false, and the point goes through toMetric.
func (w *lineWriter) appendPlain(p models.Point, name string, types fieldTypes) bool {
	// The body's bytes, as influxd keeps them: key, fields, nanoseconds.
	w.line = p.AppendString(w.line[:0])
	key := p.Key()
	sp := bytes.LastIndexByte(w.line, ' ')
	if sp <= len(key) || bytes.IndexByte(w.line, '\\') >= 0 || bytes.ContainsFunc(w.line, unicode.IsControl) ||
		!utf8.Valid(w.line) {
		return false
	}
	raw := w.line[len(key)+1 : sp]
	fields := w.fields[:0] // of p so far: a repeated one takes the long way
	defer func() { w.fields = fields[:0] }()
	rest := raw
	iter := p.FieldIterator()
	for iter.Next() {
		k, typ := iter.FieldKey(), iter.Type()
		if len(fields) > 0 {
			if len(rest) == 0 || rest[0] != ',' {
				return false
			}
			rest = rest[1:]
		}
		// FieldKey is unescaped: a key that needs escaping takes the long way.
		if len(k) == 0 || string(k) == "time" || bytes.ContainsAny(k, " ,=") || repeated(fields, k) ||
			!bytes.HasPrefix(rest, k) || len(rest) == len(k) || rest[len(k)] != '=' {
			return false
		}
		if have, ok := types.get(name, k); ok && have != typ {
			return false // toMetric gives influxd's reason
		}
		rest = rest[len(k)+1:]
		n := valueLength(rest, typ)
		if n == 0 || !readAlike(rest[:n], iter) {
			return false
		}
		rest = rest[n:]
		fields = append(fields, keyType{k, typ})
	}
	if len(fields) == 0 || len(rest) != 0 {
		return false // no field: toMetric drops it, as influxd does
	}
	for _, f := range fields {
		types.set(name, f.key, f.typ)
	}
	start := len(w.buf)
	var ok bool
	if w.buf, ok = appendKey(w.buf, key, w.tag); !ok {
		w.buf = w.buf[:start]
		return false
	}
	w.buf = append(w.buf, w.line[len(key):]...) // " fields nanoseconds"
	w.buf = append(w.buf, '\n')
	return true
}

// valueLength returns the length of the value of type typ at the start of
// b, a field section without backslashes: a quoted string, or up to the
// next comma.
func valueLength(b []byte, typ models.FieldType) int {
	if typ == models.String {
		if len(b) < 2 || b[0] != '"' {
			return 0
		}
		end := bytes.IndexByte(b[1:], '"')
		if end < 0 {
			return 0
		}
		return end + 2
	}
	if n := bytes.IndexByte(b, ','); n >= 0 {
		return n
	}
	return len(b)
}

// readAlike reports whether Telegraf's parser reads the value v, which
// influxd's parser read as the value at iter, as the same value: it
// matches Telegraf's grammar (machine.go.rl: integers without leading
// zeros, floats of digits with an optional fraction and exponent, the
// booleans both accept) and a float is finite (influxd and Telegraf both
// read the same text with strconv).
func readAlike(v []byte, iter models.FieldIterator) bool {
	switch iter.Type() {
	case models.String:
		return true // quoted, without backslashes
	case models.Boolean:
		switch string(v) {
		case "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE":
			return true
		}
		return false
	case models.Integer:
		digits, ok := bytes.CutSuffix(bytes.TrimPrefix(v, []byte{'-'}), []byte{'i'})
		return ok && allDigits(digits) && (len(digits) == 1 || digits[0] != '0')
	case models.Float:
		mant, exp, hasExp := bytes.Cut(bytes.TrimPrefix(v, []byte{'-'}), []byte{'e'})
		if !hasExp {
			mant, exp, hasExp = bytes.Cut(mant, []byte{'E'})
		}
		whole, frac, dot := bytes.Cut(mant, []byte{'.'})
		switch {
		case !allDigits(whole) || !allDigits(frac) || len(whole)+len(frac) == 0 || len(whole) == 0 && !dot:
			return false
		case hasExp:
			if len(exp) > 0 && (exp[0] == '+' || exp[0] == '-') {
				exp = exp[1:]
			}
			if len(exp) == 0 || !allDigits(exp) {
				return false
			}
		}
		if hasExp || len(v) > 300 { // could overflow: influxd keeps ±Inf, Telegraf refuses it
			f, err := iter.FloatValue()
			return err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
		}
		return true
	}
	return false // unsigned: influxd 1.8 refuses it
}

// allDigits reports whether b is only ASCII digits (true for none).
func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// keyType is a field's key and type.
type keyType struct {
	key []byte // in the point's bytes
	typ models.FieldType
}

// repeated reports whether k is among fields.
func repeated(fields []keyType, k []byte) bool {
	for _, f := range fields {
		if bytes.Equal(f.key, k) {
			return true
		}
	}
	return false
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
