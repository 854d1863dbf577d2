package bench

import (
	"net"
	"sync"
	"testing"
	"time"
)

// startDelayProxy listens on a loopback port and forwards each connection to
// target, delaying every chunk it reads by delay in each direction: a link
// with a round trip of 2×delay and no bandwidth limit of its own (chunks
// read meanwhile travel together, as on a long link). It returns the
// proxy's address; it is closed when the benchmark ends.
func startDelayProxy(b testing.TB, target string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(b, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			wg.Add(2)
			go func() { defer wg.Done(); delayCopy(server, client, delay) }()
			go func() { defer wg.Done(); delayCopy(client, server, delay) }()
		}
	}()
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// chunk is what delayCopy read, and when to write it.
type chunk struct {
	data []byte
	due  time.Time
}

// delayCopy copies src to dst, each chunk delay after it was read, and
// then closes dst's write side.
func delayCopy(dst, src net.Conn, delay time.Duration) {
	queue := make(chan chunk, 1<<14)
	go func() {
		defer close(queue)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				queue <- chunk{data: buf[:n], due: time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		time.Sleep(time.Until(c.due))
		if _, err := dst.Write(c.data); err != nil {
			src.Close()
			for range queue { // let the reader end
			}
			return
		}
	}
	if t, ok := dst.(*net.TCPConn); ok {
		_ = t.CloseWrite()
	}
}
