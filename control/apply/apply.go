// Package apply carries out verified control instructions on a device
// (docs/PROTOCOL.md, section 17.3): a ConfigDir writes Telegraf
// configuration fragments, Commands runs named actions, Artifacts stages
// software artifacts from their chunks. Each acts only on an instruction
// that a control.Verifier accepted.
package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/ockam-addons/telegraf-ockam/control"
)

// Applier applies verified instructions of one kind. Apply returns a
// *control.RefusalError when it refuses the payload (nothing was applied),
// any other error when applying failed (the outcome "failed"), nil when
// the instruction is applied.
type Applier interface {
	Apply(ctx context.Context, in *control.Instruction) error
}

var (
	_ Applier = (*ConfigDir)(nil)
	_ Applier = (*Commands)(nil)
)

// Apply runs the applier of in's kind. A kind without an applier is
// refused as RefusedUnknownKind: a device applies only the kinds it is set
// up for. Artifacts are staged by Artifacts.Begin, not here.
func Apply(ctx context.Context, appliers map[control.Kind]Applier, in *control.Instruction) error {
	a, ok := appliers[in.Kind]
	if !ok || a == nil {
		return &control.RefusalError{Code: control.RefusedUnknownKind,
			Err: fmt.Errorf("this device applies no %v instructions", in.Kind)}
	}
	return a.Apply(ctx, in)
}

// refuse returns a *control.RefusalError.
func refuse(code control.RefusalCode, err error) error {
	return &control.RefusalError{Code: code, Err: err}
}

// payloadError maps a payload parse error: malformed names are refusals.
func payloadError(err error) error {
	if errors.Is(err, control.ErrMalformed) {
		return refuse(control.RefusedInvalidPayload, err)
	}
	return err
}
