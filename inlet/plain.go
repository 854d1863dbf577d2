package inlet

import (
	"bytes"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/influxdata/influxdb/models"
	"github.com/influxdata/telegraf"
	influxser "github.com/influxdata/telegraf/plugins/serializers/influx"
)

// What the inlet sends: each point as line protocol, with the tag
// BucketTag. lineWriter writes a point straight from the bytes influxd's
// parser read when Telegraf's parser reads them alike (appendPlain), and
// serializes a Telegraf metric otherwise (appendMetric), as outputs.ockam
// does. FuzzParseLines checks that both ways give the listener the same
// metrics.

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
