package sink

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/influxdata/telegraf"
)

// route picks the bucket of each metric: bucket, or, with an attribute,
// the template with {{attribute}} replaced by the metric's tag of that name
// (the listener sets it from the sender's credential, see attribute_tags).
type route struct {
	bucket    string // every metric without the tag goes here
	attribute string // "" routes everything to bucket
	prefix    string // the template around its placeholder
	suffix    string
}

// bucketValue is what a tag value must look like to become part of a bucket
// (or database) name: no "/" (InfluxDB 1.x reads "db/rp"), no quotes, no
// spaces, nothing to escape.
var bucketValue = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// newRoute checks the routing settings. With an attribute and no template,
// the template is bucket + "_{{attribute}}".
func newRoute(bucket, attribute, template string) (route, error) {
	r := route{bucket: bucket, attribute: attribute}
	if attribute == "" {
		if template != "" {
			return r, fmt.Errorf("bucket_template %q needs bucket_attribute", template)
		}
		return r, nil
	}
	placeholder := "{{" + attribute + "}}"
	if template == "" {
		if strings.Contains(bucket, "/") {
			return r, fmt.Errorf("bucket %q names a retention policy: set bucket_template, such as %q",
				bucket, "telemetry_"+placeholder+"/autogen")
		}
		template = bucket + "_" + placeholder
	}
	before, after, ok := strings.Cut(template, placeholder)
	if !ok {
		return r, fmt.Errorf("bucket_template %q does not contain %s (bucket_attribute is %q)", template, placeholder, attribute)
	}
	if strings.Contains(before+after, "{{") || strings.Contains(before+after, "}}") {
		return r, fmt.Errorf("bucket_template %q: only one placeholder, %s, is allowed", template, placeholder)
	}
	r.prefix, r.suffix = before, after
	return r, nil
}

// bucketOf returns the bucket of m, or an error if its tag cannot be part
// of a bucket name.
func (r route) bucketOf(m telegraf.Metric) (string, error) {
	if r.attribute == "" {
		return r.bucket, nil
	}
	v, ok := m.GetTag(r.attribute)
	if !ok {
		return r.bucket, nil
	}
	if !bucketValue.MatchString(v) {
		return "", fmt.Errorf("the sender's %s attribute %q cannot name a bucket (letters, digits, '.', '_' and '-' only)",
			r.attribute, v)
	}
	return r.prefix + v + r.suffix, nil
}

// split groups metrics by bucket, in the order of their first metric.
func (r route) split(metrics []telegraf.Metric) (buckets []string, byBucket map[string][]telegraf.Metric, err error) {
	byBucket = make(map[string][]telegraf.Metric, 1)
	for _, m := range metrics {
		b, err := r.bucketOf(m)
		if err != nil {
			return nil, nil, err
		}
		if _, ok := byBucket[b]; !ok {
			buckets = append(buckets, b)
		}
		byBucket[b] = append(byBucket[b], m)
	}
	return buckets, byBucket, nil
}
