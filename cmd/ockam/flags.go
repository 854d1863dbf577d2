package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ockam-addons/telegraf-ockam/secure"
)

// stringList is a repeatable string flag.
type stringList []string

// String returns the values, comma-separated.
func (l *stringList) String() string { return strings.Join(*l, ",") }

// Set appends one value.
func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// attrFlags is the repeatable --attr KEY=VALUE flag. A key given twice is
// an error. secure.IssueCredential checks the characters and lengths.
type attrFlags map[string]string

// String returns the attributes as a map.
func (a attrFlags) String() string { return fmt.Sprint(map[string]string(a)) }

// Set adds one KEY=VALUE attribute.
func (a attrFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want KEY=VALUE")
	}
	if _, dup := a[k]; dup {
		return fmt.Errorf("attribute %q given twice", k)
	}
	a[k] = v
	return nil
}

// ttlFlag is a positive duration flag that accepts Go durations ("720h",
// "90m") and whole days ("30d").
type ttlFlag time.Duration

// day is the unit of the "d" suffix. Days are 24 hours: credentials count
// seconds, not calendar days.
const day = 24 * time.Hour

// String prints whole days as "Nd" and anything else as a Go duration.
func (t *ttlFlag) String() string {
	d := time.Duration(*t)
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

// Set parses a duration.
func (t *ttlFlag) Set(s string) error {
	d, err := parseTTL(s)
	if err != nil {
		return err
	}
	*t = ttlFlag(d)
	return nil
}

// parseTTL parses a Go duration or a whole number of days ("30d"), which
// must be positive.
func parseTTL(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseInt(n, 10, 64)
		if err != nil || days > math.MaxInt64/int64(day) {
			return 0, errors.New("want a duration such as 720h, 90m or 30d")
		}
		d = time.Duration(days) * day
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("want a duration such as 720h, 90m or 30d")
		}
	}
	if d <= 0 {
		return 0, errors.New("the duration must be positive")
	}
	return d, nil
}

// resolveSubject names an identity: arg is an identity file if a file of
// that name exists (its attestation signature is checked), else an
// identifier ("I" and 64 hex digits).
func resolveSubject(flagName, arg string) (secure.Identifier, error) {
	fi, err := os.Stat(arg)
	switch {
	case err == nil && fi.IsDir():
		return secure.Identifier{}, withHint(fmt.Errorf("--%s %s is a directory, not an identity file", flagName, arg),
			fmt.Sprintf("if it is a vault, run 'ockam identity export --vault %s --out FILE' and pass FILE", arg))
	case err == nil:
		id, err := readIdentityFile(arg)
		if err != nil {
			return secure.Identifier{}, err
		}
		return id.Identifier(), nil
	case !errors.Is(err, fs.ErrNotExist):
		return secure.Identifier{}, err
	}
	id, err := secure.ParseIdentifier(arg)
	if err != nil {
		return secure.Identifier{}, fmt.Errorf("--%s %q is neither an identity file nor an identifier (I and 64 hex digits)",
			flagName, arg)
	}
	return id, nil
}

// resolveCredentialID parses a credential id: a credential file if one of
// that name exists, else 32 hex digits.
func resolveCredentialID(arg string) (secure.CredentialID, error) {
	var id secure.CredentialID
	if _, err := os.Stat(arg); err == nil {
		c, err := readCredentialFile(arg)
		if err != nil {
			return id, err
		}
		return c.ID, nil
	}
	b, err := hex.DecodeString(arg)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("--credential %q is neither a credential file nor a credential id (%d hex digits)",
			arg, 2*len(id))
	}
	copy(id[:], b)
	return id, nil
}

// oneArg returns the single positional argument named what.
func oneArg(args []string, what string) (string, error) {
	switch len(args) {
	case 0:
		return "", usagef("missing %s", what)
	case 1:
		return args[0], nil
	default:
		return "", usagef("unexpected argument %q (only one %s)", args[1], what)
	}
}

// noArgs returns a usage error if there is any positional argument.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// required returns a usage error naming the first of the flags that was
// left empty.
func required(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if f := fs.Lookup(name); f == nil || f.Value.String() == "" {
			return usagef("missing required flag --%s", name)
		}
	}
	return nil
}

// begin checks what every leaf command checks first: no positional
// argument, and the required flags set. It returns the current time.
func begin(e *env, fs *flag.FlagSet, args []string, requiredFlags ...string) (time.Time, error) {
	if err := noArgs(args); err != nil {
		return time.Time{}, err
	}
	if err := required(fs, requiredFlags...); err != nil {
		return time.Time{}, err
	}
	return e.now()
}

// formatTime formats t in RFC 3339, UTC.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
