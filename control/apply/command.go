package apply

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/ockam-addons/telegraf-ockam/control"
)

// Handler is a program to run: Program (a path, or a name looked up in the
// PATH of the device's process) with Args, never through a shell.
type Handler struct {
	Program string
	Args    []string
}

// maxOutput bounds what a handler's output adds to a failure's reason.
const maxOutput = 512

// DefaultCommandTimeout bounds a handler's run.
const DefaultCommandTimeout = time.Minute

// Commands applies command instructions: the payload names an action, and
// the Handler configured for that name runs with the payload's argument
// on its standard input and these variables in its environment (and no
// other): OCKAM_INSTRUCTION_ID, OCKAM_OPERATOR, OCKAM_SEQUENCE, OCKAM_COMMAND.
// A name without a handler is refused (RefusedInvalidPayload).
type Commands struct {
	Handlers map[string]Handler
	Timeout  time.Duration // zero: DefaultCommandTimeout
}

// Apply runs the handler of a command instruction; a handler that exits
// with a status other than 0, or runs past Timeout, failed.
func (c *Commands) Apply(ctx context.Context, in *control.Instruction) error {
	p, err := control.ParseNamed(in.Payload)
	if err != nil {
		return payloadError(err)
	}
	h, ok := c.Handlers[p.Name]
	if !ok {
		return refuse(control.RefusedInvalidPayload, fmt.Errorf("no handler for command %q", p.Name))
	}
	env := []string{
		"OCKAM_INSTRUCTION_ID=" + in.ID.String(),
		"OCKAM_OPERATOR=" + in.Operator().String(),
		"OCKAM_SEQUENCE=" + strconv.FormatUint(in.Sequence, 10),
		"OCKAM_COMMAND=" + p.Name,
	}
	return run(ctx, h, c.Timeout, env, p.Data)
}

// run runs h with stdin and env, within timeout.
func run(ctx context.Context, h Handler, timeout time.Duration, env []string, stdin []byte, extra ...string) error {
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.Program, append(append([]string(nil), h.Args...), extra...)...)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s ran past %v", h.Program, timeout)
	}
	if err != nil {
		return fmt.Errorf("%s: %v: %q", h.Program, err, out.String())
	}
	return nil
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

// Write keeps what fits and reports everything written.
func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
