package testproxy

import (
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func frame(body string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(body))), body...)
}

// echoServer accepts one connection, echoes whatever arrives until the
// client half-closes, then closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	return c
}

func TestForwardFlipAndHalfClose(t *testing.T) {
	p := Start(t, echoServer(t))
	p.SetTamper(Flip(ToTarget, 1, 3)) // byte 3 of frame 1: bit 3 of the second body byte
	c := dial(t, p.Addr())
	sent := slices.Concat(frame("abc"), frame("abc"), frame(""), []byte{0, 9, 'x'}) // the last one cut short
	_, err := c.Write(sent)
	require.NoError(t, err)
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	want := slices.Concat(frame("abc"), frame("a"+string('b'^8)+"c"), frame(""), []byte{0, 9, 'x'})
	require.Equal(t, want, got)

	conns := p.Conns()
	require.Len(t, conns, 1)
	<-conns[0].Done()
	require.Equal(t, [][]byte{frame("abc"), frame("abc"), frame("")}, conns[0].Frames(ToTarget))
}

func TestCutAndDown(t *testing.T) {
	p := Start(t, echoServer(t))
	c := dial(t, p.Addr())
	_, err := c.Write(frame("x"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 3))
	require.NoError(t, err)
	require.Equal(t, 1, p.Cut())
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err)

	p.SetDown(true)
	c = dial(t, p.Addr())
	_, err = c.Read(make([]byte, 1))
	require.Error(t, err, "closed at once while down")
	p.SetDown(false)
	c = dial(t, p.Addr())
	_, err = c.Write(frame("y"))
	require.NoError(t, err)
	_, err = io.ReadFull(c, make([]byte, 3))
	require.NoError(t, err)
}
