// Command unchecked plays a modified device for scripts/demo.sh: it sends one
// batch to a listener with whatever credential it is given, skipping the
// checks outputs.ockam makes on its own credential, and reports whether the
// listener acknowledged it.
//
// Usage: unchecked -address HOST:PORT -vault DIR -credential FILE -authority FILE
//
// Exit codes: 0 the listener acknowledged the batch, 1 it refused it, 2 any
// other failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/ockam-addons/telegraf-ockam/e2e"
)

func main() {
	var u e2e.Unchecked
	address := flag.String("address", "", "host:port of the listener")
	flag.StringVar(&u.Vault, "vault", "", "vault directory of the identity")
	flag.StringVar(&u.Credential, "credential", "", "credential file to present")
	flag.StringVar(&u.Authority, "authority", "", "identity file of the authority the listener's credential must come from")
	flag.Parse()
	u.Passphrase = os.Getenv("OCKAM_VAULT_PASSPHRASE")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	line := fmt.Sprintf("cpu,cpu=cpu-total usage_idle=99.9 %d\n", time.Now().UnixNano())
	err := u.Send(ctx, *address, []byte(line))
	switch {
	case err == nil:
		fmt.Println("unchecked: the listener acknowledged the batch")
	case errors.Is(err, e2e.ErrNoAck):
		fmt.Printf("unchecked: refused: %v\n", err)
		os.Exit(1)
	default:
		fmt.Fprintf(os.Stderr, "unchecked: error: %v\n", err)
		os.Exit(2)
	}
}
