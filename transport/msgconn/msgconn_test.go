package msgconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// pipe returns two Conns whose Sends Deliver to each other, closing the
// peer's reads with io.EOF when one end closes, as a carrier does. Its
// carrier pushes back: a Send waits while the peer holds window bytes
// unread (or until the deadline, or the sender's Close), which the
// conformance suite's write-timeout tests need.
func pipe(opts Options) (a, b *Conn) {
	const window = 64 << 10
	var pa, pb *Conn
	addr := Addr{Net: "test", Text: "pipe"}
	optsA, optsB := opts, opts
	optsA.OnClose = func() { pb.Fail(io.EOF) }
	optsB.OnClose = func() { pa.Fail(io.EOF) }
	sender := func(to **Conn) Send {
		return func(p []byte, abort <-chan struct{}) error {
			for (*to).Buffered()+len(p) > window {
				select {
				case <-abort:
					return errors.New("aborted")
				case <-time.After(time.Millisecond):
				}
			}
			if !(*to).Deliver(p) {
				return net.ErrClosed
			}
			return nil
		}
	}
	pa = New(addr, addr, sender(&pb), optsA)
	pb = New(addr, addr, sender(&pa), optsB)
	return pa, pb
}

// TestConnConformance runs x/net's net.Conn conformance suite: reads and
// writes, deadlines in the past, present and future, Close during blocked
// calls, concurrent methods.
func TestConnConformance(t *testing.T) {
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		a, b := pipe(Options{})
		return a, b, func() { a.Close(); b.Close() }, nil
	})
}

func TestWriteSplitsAtMaxPayload(t *testing.T) {
	var sizes []int
	c := New(Addr{}, Addr{}, func(p []byte, _ <-chan struct{}) error {
		sizes = append(sizes, len(p))
		return nil
	}, Options{MaxPayload: 4})
	n, err := c.Write([]byte("0123456789"))
	if err != nil || n != 10 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if want := []int{4, 4, 2}; !equalInts(sizes, want) {
		t.Fatalf("messages of %v bytes, want %v", sizes, want)
	}
}

func TestDeliverBeyondMaxBufferedFailsTheConn(t *testing.T) {
	c := New(Addr{}, Addr{}, func([]byte, <-chan struct{}) error { return nil }, Options{MaxBuffered: 8})
	if !c.Deliver([]byte("12345")) {
		t.Fatal("first Deliver refused")
	}
	if c.Deliver([]byte("6789")) {
		t.Fatal("Deliver past MaxBuffered accepted")
	}
	got := make([]byte, 16)
	n, err := c.Read(got)
	if err != nil || string(got[:n]) != "12345" {
		t.Fatalf("Read = %q, %v; want the bytes delivered before the overflow", got[:n], err)
	}
	if _, err := c.Read(got); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("Read after the overflow: %v, want ErrBufferFull", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("Write after the overflow: %v, want ErrBufferFull", err)
	}
}

func TestFailDrainsThenReturnsTheError(t *testing.T) {
	c := New(Addr{}, Addr{}, func([]byte, <-chan struct{}) error { return nil }, Options{})
	c.Deliver([]byte("ab"))
	c.Deliver([]byte("cd"))
	gone := errors.New("relay gone")
	c.Fail(gone)
	got, err := io.ReadAll(c)
	if !errors.Is(err, gone) || !bytes.Equal(got, []byte("abcd")) {
		t.Fatalf("ReadAll = %q, %v; want abcd then the carrier's error", got, err)
	}
}

func TestWriteHonoursAPastDeadlineBeforeSending(t *testing.T) {
	sent := 0
	c := New(Addr{}, Addr{}, func([]byte, <-chan struct{}) error { sent++; return nil }, Options{})
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %v, want a deadline error", err)
	}
	if sent != 0 {
		t.Fatalf("%d messages sent past the deadline", sent)
	}
}

func TestOnCloseRunsOnce(t *testing.T) {
	calls := 0
	c := New(Addr{}, Addr{}, func([]byte, <-chan struct{}) error { return nil }, Options{OnClose: func() { calls++ }})
	c.Fail(io.EOF)
	c.Close()
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	if calls != 1 {
		t.Fatalf("OnClose ran %d times", calls)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestBudgetIsShared: sessions of one carrier buffer at most the budget
// together; the session whose bytes do not fit fails with ErrBudgetFull,
// the others keep theirs, and bytes read or dropped at Close return to
// the budget.
func TestBudgetIsShared(t *testing.T) {
	b := NewBudget(10)
	nop := func([]byte, <-chan struct{}) error { return nil }
	c1 := New(Addr{}, Addr{}, nop, Options{Budget: b})
	c2 := New(Addr{}, Addr{}, nop, Options{Budget: b})
	if !c1.Deliver([]byte("123456")) || !c2.Deliver([]byte("abc")) {
		t.Fatal("deliveries within the budget refused")
	}
	if c2.Deliver([]byte("de")) {
		t.Fatal("a delivery beyond the budget accepted")
	}
	got := make([]byte, 8)
	if n, err := c2.Read(got); err != nil || string(got[:n]) != "abc" {
		t.Fatalf("Read = %q, %v", got[:n], err)
	}
	if _, err := c2.Read(got); !errors.Is(err, ErrBudgetFull) {
		t.Fatalf("c2 after the overflow: %v, want ErrBudgetFull", err)
	}
	if used := b.Used(); used != 6 {
		t.Fatalf("budget used %d, want 6 (c1's unread bytes)", used)
	}
	if n, _ := c1.Read(got[:2]); n != 2 || b.Used() != 4 {
		t.Fatalf("read 2 of c1: budget used %d, want 4", b.Used())
	}
	c1.Close()
	c2.Close()
	if used := b.Used(); used != 0 {
		t.Fatalf("budget used %d after Close, want 0", used)
	}
	c3 := New(Addr{}, Addr{}, nop, Options{Budget: b})
	if !c3.Deliver([]byte("0123456789")) {
		t.Fatal("the budget freed by Close is not usable again")
	}
}
