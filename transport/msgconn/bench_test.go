package msgconn

import (
	"io"
	"net"
	"testing"
)

// BenchmarkStream answers issue 16's question whether the carriers (relay,
// MQTT) should hand Noise messages to the channel directly instead of
// through this byte stream: it moves frames of the channel's largest size
// (65,537 bytes: a 2-byte length and a 65,535-byte Noise message) from a
// writer to a reader through a Conn whose carrier delivers in memory, and
// through the two byte streams the channel uses without a carrier, net.Pipe
// and loopback TCP. What the stream adds over a message carrier is a copy in
// Deliver and one in Read; compare it with ChaCha20-Poly1305 at 1.2-1.9 GB/s
// (docs/BENCHMARKS.md), which every byte also pays.
func BenchmarkStream(b *testing.B) {
	frame := make([]byte, DefaultMaxPayload)
	run := func(b *testing.B, w io.Writer, r io.Reader) {
		done := make(chan error, 1)
		go func() {
			buf := make([]byte, len(frame))
			for {
				if _, err := io.ReadFull(r, buf); err != nil {
					done <- err
					return
				}
			}
		}()
		b.SetBytes(int64(len(frame)))
		b.ResetTimer()
		for b.Loop() {
			if _, err := w.Write(frame); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	}
	b.Run("msgconn", func(b *testing.B) {
		var peer *Conn
		addr := Addr{Net: "bench", Text: "memory"}
		c := New(addr, addr, func(p []byte, _ <-chan struct{}) error {
			if !peer.Deliver(p) {
				return net.ErrClosed
			}
			return nil
		}, Options{MaxBuffered: 1 << 30})
		peer = New(addr, addr, func([]byte, <-chan struct{}) error { return nil }, Options{MaxBuffered: 1 << 30})
		defer c.Close()
		defer peer.Fail(io.EOF)
		run(b, c, peer)
	})
	b.Run("net.Pipe", func(b *testing.B) {
		w, r := net.Pipe()
		defer r.Close()
		defer w.Close()
		run(b, w, r)
	})
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			accepted <- c
		}()
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		r := <-accepted
		defer r.Close()
		defer w.Close()
		run(b, w, r)
	})
}
