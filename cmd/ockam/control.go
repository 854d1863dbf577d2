package main

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ockam-addons/telegraf-ockam/control"
	"github.com/ockam-addons/telegraf-ockam/vault"
)

// controlCommand returns "ockam control".
func controlCommand() *command {
	return &command{name: "control", subs: []*command{
		{name: "sign", summary: "sign an instruction to devices (operator)", usage: controlSignUsage, flags: controlSign},
		{name: "release", summary: "sign the manifest of an artifact (release identity)", usage: controlReleaseUsage, flags: controlRelease},
		{name: "inspect", summary: "print the fields of an instruction", usage: controlInspectUsage, flags: controlInspect},
		{name: "send", summary: "hand instructions to a gateway's control socket", usage: controlSendUsage, flags: controlSend},
	}}
}

// controlSequenceRecord is the vault record that holds the last sequence
// number the operator signed: 8 bytes, big-endian.
const controlSequenceRecord = "control-sequence"

// Size limits of the files "ockam control" reads.
const (
	maxInstructionFile = control.MaxInstructionSize
	maxArtifactFile    = control.MaxArtifactSize
)

// controlSignUsage is the --help text of "ockam control sign".
const controlSignUsage = `Usage: ockam control sign --vault OPERATOR_DIR --credential FILE
                         (--to IDENTITY | --select KEY=VALUE[,KEY=VALUE...])
                         --kind config|artifact|command --file FILE [--name NAME]
                         [--sequence N] [--expires-in DURATION] -o FILE

Signs an instruction (docs/PROTOCOL.md, section 17) with the identity in the
vault OPERATOR_DIR, carrying its credential FILE, and writes it to the
output FILE (binary, mode 0644). Devices apply it only if their policy lets
the credential's attributes send this kind, it is for them, it has not
expired, and its sequence number is above every one of this operator they
applied. Prints the instruction id and sequence number.

Flags:
  --vault DIR              the operator's vault directory, or a pkcs11: spec
                           (required)
  --credential FILE        the operator's credential (required)
  --to IDENTITY            the target: one device, by identity file or
                           identifier
  --select KEY=VALUE,...   the target: every device whose credential has
                           all these attributes (one of --to, --select)
  --kind KIND              config (a Telegraf configuration fragment),
                           artifact (a manifest made by 'ockam control
                           release') or command (an action's argument)
                           (required)
  --file FILE              the fragment, manifest or argument; "-" for
                           stdin (required)
  --name NAME              config: the fragment's name (the device writes
                           ockam-NAME.conf; default: FILE's base name
                           without .conf); command: the action (required)
  --sequence N             the sequence number (default: one above the last
                           one this vault signed, kept in the vault)
  --expires-in DURATION    how long devices accept it: 90m, 24h, 7d, at
                           most 30d (default 1h)
  -o, --out FILE           where to write it, "-" for stdout (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase

A config instruction with an empty fragment removes the fragment NAME.
`

// controlSign defines "ockam control sign".
func controlSign(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	credential := fs.String("credential", "", "operator credential file")
	to := fs.String("to", "", "target device")
	sel := fs.String("select", "", "target attributes")
	kind := fs.String("kind", "", "config, artifact or command")
	file := fs.String("file", "", "payload file")
	name := fs.String("name", "", "fragment or action name")
	sequence := fs.Uint64("sequence", 0, "sequence number")
	expires := ttlFlag(time.Hour)
	fs.Var(&expires, "expires-in", "lifetime")
	var out string
	fs.StringVar(&out, "out", "", "output file")
	fs.StringVar(&out, "o", "", "output file")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		now, err := begin(e, fs, args, "vault", "credential", "kind", "file")
		if err != nil {
			return err
		}
		if out == "" {
			return usagef("missing -o FILE")
		}
		k, err := control.ParseKind(*kind)
		if err != nil {
			return usagef("--kind: %v", err)
		}
		target, err := controlTarget(*to, *sel)
		if err != nil {
			return err
		}
		data, err := readPayloadFile(e, *file, control.MaxPayloadSize)
		if err != nil {
			return err
		}
		payload, err := controlPayload(k, *name, *file, data)
		if err != nil {
			return err
		}
		cred, err := readCredentialFile(*credential)
		if err != nil {
			return err
		}
		if !now.Before(cred.ExpiresAt) {
			return withHint(fmt.Errorf("credential %s expired at %s: devices refuse its instructions", *credential, formatTime(cred.ExpiresAt)),
				"ask the authority for a new credential")
		}
		if err := checkOutput(out, *force); err != nil {
			return err
		}
		v, operator, err := vf.load(e)
		if err != nil {
			return err
		}
		seq, err := nextSequence(v, *sequence)
		if err != nil {
			return err
		}
		in, err := control.Sign(operator.Signer(), cred, control.Template{Kind: k, Target: target, Sequence: seq,
			IssuedAt: now, Lifetime: time.Duration(expires), Payload: payload}, nil)
		if err != nil {
			return fmt.Errorf("sign instruction: %w", err)
		}
		// record the sequence before the instruction leaves: never sign one twice
		if err := v.WriteRecord(controlSequenceRecord, binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return fmt.Errorf("record sequence %d in the vault: %w", seq, err)
		}
		if in.ExpiresAt.After(cred.ExpiresAt) {
			e.warnf("the instruction expires after the credential (%s): devices refuse it from then on", formatTime(cred.ExpiresAt))
		}
		if err := writeOutput(e, out, in.Marshal(), *force); err != nil {
			return err
		}
		if out != "-" {
			fmt.Fprintf(e.stdout, "id:       %s\nsequence: %d\n", in.ID, in.Sequence)
		}
		return nil
	}
}

// controlTarget reads --to or --select, exactly one of them.
func controlTarget(to, sel string) (control.Target, error) {
	switch {
	case (to == "") == (sel == ""):
		return control.Target{}, usagef("want one of --to IDENTITY and --select KEY=VALUE")
	case to != "":
		id, err := resolveSubject("to", to)
		if err != nil {
			return control.Target{}, err
		}
		return control.Target{Device: id}, nil
	}
	if strings.HasPrefix(sel, "I") && !strings.Contains(sel, "=") {
		return control.Target{}, usagef("--select %s: an identifier goes in --to", sel)
	}
	t, err := control.ParseTarget(sel)
	if err != nil {
		return control.Target{}, usagef("--select: %v", err)
	}
	return t, nil
}

// controlPayload encodes the payload of kind from the file's data.
func controlPayload(k control.Kind, name, file string, data []byte) ([]byte, error) {
	switch k {
	case control.KindArtifact:
		if name != "" {
			return nil, usagef("--name: an artifact's name is in its manifest")
		}
		if _, err := control.ParseManifest(data); err != nil {
			return nil, withHint(fmt.Errorf("%s is not an artifact manifest: %w", file, err),
				"make one with 'ockam control release --vault RELEASE_DIR -o MANIFEST ARTIFACT'")
		}
		return data, nil
	case control.KindConfig:
		if name == "" && file != "-" {
			name = strings.TrimSuffix(filepath.Base(file), ".conf")
		}
		if !utf8.Valid(data) {
			return nil, fmt.Errorf("%s is not UTF-8: a Telegraf configuration is TOML", file)
		}
	}
	if name == "" {
		return nil, usagef("missing --name NAME")
	}
	p, err := control.MarshalNamed(name, data)
	if err != nil {
		return nil, usagef("--name: %v", err)
	}
	if len(p) > control.MaxPayloadSize {
		return nil, fmt.Errorf("%s: the payload is larger than %d bytes", file, control.MaxPayloadSize)
	}
	return p, nil
}

// readPayloadFile reads FILE, or stdin for "-", of at most max bytes.
func readPayloadFile(e *env, path string, max int64) ([]byte, error) {
	if path != "-" {
		return readBounded(path, max, false)
	}
	if e.stdin == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(e.stdin, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("stdin: larger than %d bytes", max)
	}
	return b, nil
}

// nextSequence returns the sequence to sign: want if given (it must be
// above the last one), else one above the last one the vault recorded.
func nextSequence(v vault.Vault, want uint64) (uint64, error) {
	var last uint64
	rec, err := v.ReadRecord(controlSequenceRecord)
	switch {
	case errors.Is(err, vault.ErrNotFound):
	case err != nil:
		return 0, fmt.Errorf("read the last sequence: %w", err)
	case len(rec) != 8:
		return 0, fmt.Errorf("vault record %s: %d bytes, want 8", controlSequenceRecord, len(rec))
	default:
		last = binary.BigEndian.Uint64(rec)
	}
	if want == 0 {
		if last == ^uint64(0) {
			return 0, errors.New("the sequence numbers of this vault are used up")
		}
		return last + 1, nil
	}
	if want <= last {
		return 0, withHint(fmt.Errorf("--sequence %d: this vault signed %d already; devices refuse a sequence not above the last one they applied", want, last),
			"leave out --sequence to take the next one")
	}
	return want, nil
}

// controlReleaseUsage is the --help text of "ockam control release".
const controlReleaseUsage = `Usage: ockam control release --vault RELEASE_DIR [--name NAME] -o MANIFEST ARTIFACT

Signs, with the identity in the vault RELEASE_DIR (a release identity,
which devices list in their configuration), the manifest of the file
ARTIFACT: its name, size and SHA-256. An operator then signs an artifact
instruction with it: 'ockam control sign --kind artifact --file MANIFEST'.
A device stages the artifact only if its bytes match the manifest.

Flags:
  --vault DIR              the release identity's vault directory, or a
                           pkcs11: spec (required)
  --name NAME              the name devices stage it under (default:
                           ARTIFACT's base name)
  -o, --out FILE           where to write the manifest (required)
  --force                  replace FILE if it exists
  --passphrase-file FILE   the file holding the vault passphrase
`

// controlRelease defines "ockam control release".
func controlRelease(fs *flag.FlagSet) action {
	var vf vaultFlags
	vf.register(fs)
	name := fs.String("name", "", "artifact name")
	var out string
	fs.StringVar(&out, "out", "", "output file")
	fs.StringVar(&out, "o", "", "output file")
	force := fs.Bool("force", false, "replace an existing output file")
	return func(e *env, args []string) error {
		path, err := oneArg(args, "ARTIFACT")
		if err != nil {
			return err
		}
		if err := required(fs, "vault"); err != nil {
			return err
		}
		if out == "" {
			return usagef("missing -o FILE")
		}
		if *name == "" {
			*name = filepath.Base(path)
		}
		if err := control.CheckName(*name); err != nil {
			return usagef("--name: %v", err)
		}
		size, digest, err := hashFile(path)
		if err != nil {
			return err
		}
		if err := checkOutput(out, *force); err != nil {
			return err
		}
		_, release, err := vf.load(e)
		if err != nil {
			return err
		}
		m, err := control.SignManifest(release.Signer(), *name, size, digest)
		if err != nil {
			return fmt.Errorf("sign manifest: %w", err)
		}
		if err := writeOutput(e, out, m.Marshal(), *force); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "sha256: %x\nsize:   %d\n", digest, size)
		return nil
	}
}

// hashFile returns the size and SHA-256 of the regular file at path.
func hashFile(path string) (uint64, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return 0, sum, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return 0, sum, fmt.Errorf("%s is not a regular file", path)
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, maxArtifactFile+1))
	switch {
	case err != nil:
		return 0, sum, err
	case n == 0 || n > maxArtifactFile:
		return 0, sum, fmt.Errorf("%s: %d bytes, want 1 to %d", path, n, maxArtifactFile)
	}
	copy(sum[:], h.Sum(nil))
	return uint64(n), sum, nil
}

// controlInspectUsage is the --help text of "ockam control inspect".
const controlInspectUsage = `Usage: ockam control inspect FILE

Prints the fields of the instruction in FILE: id, kind, operator and its
credential, sequence number, validity, target and payload, and whether the
signature verifies with the operator key it carries. It does not decide
whether a device applies it: that takes the device's authorities,
revocation lists, policy and sequence store.
`

// controlInspect defines "ockam control inspect".
func controlInspect(*flag.FlagSet) action {
	return func(e *env, args []string) error {
		path, err := oneArg(args, "instruction FILE")
		if err != nil {
			return err
		}
		in, err := readParsed(path, maxInstructionFile, control.Parse)
		if err != nil {
			return err
		}
		w := e.stdout
		fmt.Fprintf(w, "id:         %s\n", in.ID)
		fmt.Fprintf(w, "kind:       %v\n", in.Kind)
		fmt.Fprintf(w, "operator:   %s\n", in.Operator())
		fmt.Fprintf(w, "credential: %s, issued by %s, expires %s\n", in.Credential.ID, in.Credential.Issuer, formatTime(in.Credential.ExpiresAt))
		for _, k := range slices.Sorted(maps.Keys(in.Credential.Attributes)) {
			fmt.Fprintf(w, "  %s = %q\n", k, in.Credential.Attributes[k])
		}
		fmt.Fprintf(w, "sequence:   %d\n", in.Sequence)
		fmt.Fprintf(w, "issued:     %s\n", formatTime(in.IssuedAt))
		fmt.Fprintf(w, "expires:    %s\n", formatTime(in.ExpiresAt))
		fmt.Fprintf(w, "target:     %s\n", in.Target)
		printPayload(w, in)
		fmt.Fprintf(w, "size:       %d bytes\n", len(in.Marshal()))
		if err := in.CheckSignature(); err != nil {
			fmt.Fprintln(w, "signature:  BAD: devices refuse it")
			return errors.New("the signature does not verify: the instruction was altered")
		}
		fmt.Fprintln(w, "signature:  verified with the operator key (the credential is not checked here)")
		return nil
	}
}

// printPayload prints the payload of in by kind.
func printPayload(w io.Writer, in *control.Instruction) {
	switch in.Kind {
	case control.KindConfig, control.KindCommand:
		p, err := control.ParseNamed(in.Payload)
		if err != nil {
			fmt.Fprintf(w, "payload:    %d bytes, malformed: %v\n", len(in.Payload), err)
			return
		}
		fmt.Fprintf(w, "name:       %s\n", p.Name)
		fmt.Fprintf(w, "payload:    %d bytes\n", len(p.Data))
		if in.Kind == control.KindConfig && utf8.Valid(p.Data) {
			for _, line := range strings.Split(strings.TrimSuffix(string(p.Data), "\n"), "\n") {
				fmt.Fprintf(w, "  | %s\n", line)
			}
		}
	case control.KindArtifact:
		m, err := control.ParseManifest(in.Payload)
		if err != nil {
			fmt.Fprintf(w, "payload:    %d bytes, malformed manifest: %v\n", len(in.Payload), err)
			return
		}
		fmt.Fprintf(w, "artifact:   %s, %d bytes, sha256 %x\n", m.Name, m.Size, m.Digest)
		fmt.Fprintf(w, "release:    %s\n", m.Release)
	default:
		fmt.Fprintf(w, "payload:    %d bytes\n", len(in.Payload))
	}
}

// controlSendUsage is the --help text of "ockam control send".
const controlSendUsage = `Usage: ockam control send --socket PATH FILE... | --socket PATH --artifact ARTIFACT FILE

Hands each signed instruction FILE (from 'ockam control sign') to a
gateway's control endpoint: the Unix socket set by control_socket in
inputs.ockam_listener or ockamd's [listener] (docs/PROTOCOL.md, section
17.5). The gateway checks the instruction's form, signature, operator
credential and expiry, keeps it until it expires, and pushes it to every
device it targets that has opted in, now or when it next connects. Each
device answers with an outcome, written as an ockam_control point (see
docs/OPERATIONS.md, "Rolling out a configuration").

Prints one line per FILE: accepted, with the instruction id, or refused,
with the gateway's reason. Exits non-zero if any was refused.

An artifact instruction goes with its artifact's bytes (--artifact, one
instruction FILE): the gateway keeps them with the instruction and sends
them to each device in chunks after it.

Flags:
  --socket PATH        the gateway's control socket (required)
  --artifact ARTIFACT  the artifact of an artifact instruction
`

// controlSend defines "ockam control send".
func controlSend(fs *flag.FlagSet) action {
	socket := fs.String("socket", "", "the gateway's control socket")
	artifact := fs.String("artifact", "", "the artifact of an artifact instruction")
	return func(e *env, args []string) error {
		if *socket == "" {
			return errors.New("--socket is required: the gateway's control_socket")
		}
		if len(args) == 0 {
			return errors.New("name at least one instruction FILE")
		}
		if *artifact != "" && len(args) != 1 {
			return errors.New("--artifact goes with exactly one instruction FILE")
		}
		refused := 0
		for _, path := range args {
			in, err := readParsed(path, maxInstructionFile, control.Parse)
			if err != nil {
				return err
			}
			if (in.Kind == control.KindArtifact) != (*artifact != "") {
				return usagef("%s: an artifact instruction, and only one, goes with --artifact", path)
			}
			status, reason, err := handOver(*socket, in.Marshal(), *artifact)
			if err != nil {
				return withHint(fmt.Errorf("%s: %w", path, err), "is the gateway running with control_socket = \""+*socket+"\"?")
			}
			if status != 0 {
				refused++
				fmt.Fprintf(e.stdout, "%s: refused: %s\n", path, reason)
				continue
			}
			fmt.Fprintf(e.stdout, "%s: accepted: %s\n", path, reason)
		}
		if refused > 0 {
			return fmt.Errorf("the gateway refused %d of %d instructions", refused, len(args))
		}
		return nil
	}
}

// handOver sends one instruction to the control endpoint at socket and
// returns its answer: status 0 accepted, 1 refused, and the reason.
func handOver(socket string, instruction []byte, artifact string) (status byte, reason string, err error) {
	var af *os.File
	var size int64
	if artifact != "" {
		if af, err = os.Open(artifact); err != nil {
			return 0, "", err
		}
		defer af.Close()
		fi, err := af.Stat()
		if err != nil {
			return 0, "", err
		}
		size = fi.Size()
	}
	nc, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer nc.Close()
	if err := nc.SetDeadline(time.Now().Add(time.Minute)); err != nil {
		return 0, "", err
	}
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(instruction)))
	frame = append(frame, instruction...)
	if af != nil {
		frame = binary.BigEndian.AppendUint64(frame, uint64(size))
	}
	if _, err := nc.Write(frame); err != nil {
		return 0, "", err
	}
	if af != nil {
		// the gateway answers early if it refuses: its answer is read below
		buf := make([]byte, 1<<20)
		for {
			n, rerr := af.Read(buf)
			if n > 0 {
				_ = nc.SetDeadline(time.Now().Add(time.Minute))
				if _, err := nc.Write(buf[:n]); err != nil {
					break
				}
			}
			if rerr != nil {
				break
			}
		}
	}
	answer, err := io.ReadAll(io.LimitReader(nc, 1+control.MaxReasonSize+1))
	if err != nil && af != nil && len(answer) > 0 {
		// a gateway that refused an artifact before reading its bytes
		// closed with them unread: the socket reports a reset after the
		// answer
		err = nil
	}
	switch {
	case err != nil:
		return 0, "", err
	case len(answer) == 0:
		return 0, "", errors.New("the gateway closed the connection without an answer")
	case len(answer) > 1+control.MaxReasonSize || answer[0] > 1 || !utf8.Valid(answer[1:]):
		return 0, "", errors.New("the gateway's answer is malformed")
	}
	return answer[0], string(answer[1:]), nil
}
