package receiver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
	"unicode/utf8"

	"github.com/ockam-addons/telegraf-ockam/control"
)

// The control endpoint (docs/PROTOCOL.md, section 17.5): a Unix socket,
// mode 0600, on which an operator's tool (ockam control send) hands the
// gateway one signed instruction per connection:
//
//	client:  u32 length | instruction [| u64 length | artifact bytes, for an artifact instruction]
//	gateway: u8 status (0 accepted, 1 refused) | reason (UTF-8, at most 1024 bytes), then it closes
//
// The gateway checks what it can before it stores (control.Pending.Add);
// every device checks everything again.
const (
	// EndpointAccepted and EndpointRefused are the status bytes of the
	// endpoint's answer.
	EndpointAccepted = 0
	EndpointRefused  = 1

	// endpointConns bounds the endpoint's connections served at once; more
	// are answered "busy" and closed.
	endpointConns = 4
	// endpointTimeout bounds one exchange on the endpoint.
	endpointTimeout = 30 * time.Second
)

// listenControl makes the control socket at path, mode 0600 from the
// start: it is bound in a new directory of mode 0700 and renamed into
// place, so no other user can connect to it between bind and chmod. A
// stale socket at path (nobody listening) is replaced; anything else there
// is an error.
func listenControl(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if nc, err := net.DialTimeout("unix", path, time.Second); err == nil {
			nc.Close()
			return nil, fmt.Errorf("%s: another process listens on it", path)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".ctl")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // the name moves; Stop removes path
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// serveControl answers the control endpoint's connections until ln is
// closed.
func (r *Receiver) serveControl(ctx context.Context, ln net.Listener) {
	defer r.running.Done()
	sem := make(chan struct{}, endpointConns)
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			if r.endpointLog.allow(time.Now(), time.Minute) {
				r.log.Errorf("Control endpoint: accepting a connection failed: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case sem <- struct{}{}:
		default:
			go func() {
				_ = nc.SetDeadline(time.Now().Add(time.Second))
				writeAnswer(nc, EndpointRefused, "busy: other instructions are being handed over; try again")
				nc.Close()
			}()
			continue
		}
		r.running.Add(1)
		go func() {
			defer r.running.Done()
			defer func() { <-sem }()
			stop := context.AfterFunc(ctx, func() { nc.Close() })
			defer stop()
			r.endpointConn(nc)
		}()
	}
}

// endpointConn takes one instruction and answers.
func (r *Receiver) endpointConn(nc net.Conn) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(endpointTimeout))
	in, err := r.takeInstruction(nc)
	if err != nil {
		if r.endpointLog.allow(time.Now(), time.Minute) {
			r.log.Warnf("Control endpoint: refused an instruction: %v (further refusals are logged at most once a minute)", err)
		}
		writeAnswer(nc, EndpointRefused, err.Error())
		return
	}
	r.log.Infof("Control: instruction %s (%v, operator %s, sequence %d) pending for %s until %s",
		in.ID, in.Kind, in.Operator().Short(), in.Sequence, in.Target, in.ExpiresAt.UTC().Format(time.RFC3339))
	writeAnswer(nc, EndpointAccepted, fmt.Sprintf("instruction %s pending for %s until %s",
		in.ID, in.Target, in.ExpiresAt.UTC().Format(time.RFC3339)))
	r.pushAll()
}

// takeInstruction reads one frame and adds its instruction to the pending
// store.
func (r *Receiver) takeInstruction(nc net.Conn) (*control.Instruction, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(nc, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading the frame: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > control.MaxInstructionSize {
		return nil, fmt.Errorf("%w: a frame of %d bytes (an instruction has at most %d)", control.ErrTooLarge, n, control.MaxInstructionSize)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(nc, b); err != nil {
		return nil, fmt.Errorf("reading the instruction: %w", err)
	}
	if in, err := control.Parse(b); err == nil && in.Kind == control.KindArtifact {
		var size [8]byte
		if _, err := io.ReadFull(nc, size[:]); err != nil {
			return nil, fmt.Errorf("reading the artifact's length: %w", err)
		}
		return r.pending.AddArtifact(b, binary.BigEndian.Uint64(size[:]), &progressReader{nc}, r.now())
	}
	return r.pending.Add(b, r.now())
}

// progressReader reads an artifact from the endpoint's connection,
// extending its deadline as bytes arrive: a large artifact takes longer
// than endpointTimeout, a stalled client does not.
type progressReader struct{ nc net.Conn }

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.nc.Read(b)
	if n > 0 {
		_ = p.nc.SetDeadline(time.Now().Add(endpointTimeout))
	}
	return n, err
}

// writeAnswer writes the endpoint's answer.
func writeAnswer(w io.Writer, status byte, reason string) {
	_, _ = w.Write(append([]byte{status}, cutUTF8(reason, control.MaxReasonSize)...))
}

// cutUTF8 cuts s, valid UTF-8, to at most n bytes at a character boundary.
func cutUTF8(s string, n int) string {
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}
