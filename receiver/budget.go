package receiver

import (
	"bytes"
	"context"
	"sync"
)

// byteBudget bounds the memory that messages emitted and not yet delivered
// pin, per channel (max_undelivered_bytes_per_channel) and per identity
// (max_undelivered_bytes_per_identity), so that one device cannot hold
// max_undelivered_messages × max_received_message_size of the gateway while the
// outputs are slow (docs/SECURITY.md, W14).
//
// A message is counted by SizeEstimate of its payload, before it is parsed:
// a reader waiting for room holds the payload only, never its parsed
// metrics. A message is always let in when its channel and its identity
// hold nothing, so a message over a bound still goes through, alone.
type byteBudget struct {
	perChannel, perIdentity int64

	mu      sync.Mutex
	held    map[string]int64 // bytes held by each identity; absent when 0
	changed chan struct{}    // closed, and replaced, whenever bytes are given back
}

func newByteBudget(perChannel, perIdentity int64) *byteBudget {
	return &byteBudget{
		perChannel:  perChannel,
		perIdentity: perIdentity,
		held:        make(map[string]int64),
		changed:     make(chan struct{}),
	}
}

// acquire takes n bytes for c, whose identity is id. While they do not
// fit it waits, calling stall once first. It returns false without taking
// anything when ctx ends first.
func (b *byteBudget) acquire(ctx context.Context, c *conn, id string, n int64, stall func()) bool {
	for first := true; ; first = false {
		b.mu.Lock()
		chanFull := c.heldBytes > 0 && c.heldBytes+n > b.perChannel
		idFull := b.held[id] > 0 && b.held[id]+n > b.perIdentity
		if !chanFull && !idFull {
			c.heldBytes += n
			b.held[id] += n
			b.mu.Unlock()
			return true
		}
		changed := b.changed
		b.mu.Unlock()
		if first {
			stall()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// release gives back n bytes that acquire took for c.
func (b *byteBudget) release(c *conn, id string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c.heldBytes -= n
	if b.held[id] -= n; b.held[id] <= 0 {
		delete(b.held, id)
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// The weights of SizeEstimate, measured with runtime.ReadMemStats on
// Telegraf v1.39.3's influx parser (4 MiB payloads; TestSizeEstimate):
// 168 bytes of heap per metric for "m v=1", 218 for
// "m,host=a v=1 1700000000000000000", 562 for a line with 3 tags and 4
// fields, and 1.09 bytes per byte for lines of a 60 KB string field. Each
// weight is above what was measured, and perStamped covers the tags the
// listener adds.
const (
	perLine    = 160 // a metric: its struct, name, time and slices
	perPair    = 64  // a tag or a field ("=") and its slice slot
	perStamped = 64  // a stamped tag on each metric
)

// SizeEstimate is the heap that the metrics parsed from payload will pin,
// from its length and its counts of lines and "=", with stamped tags added
// to every line. It counts high, never low, on the line protocol measured
// above.
func SizeEstimate(payload []byte, stamped int) int64 {
	lines := int64(bytes.Count(payload, []byte{'\n'}) + 1)
	pairs := int64(bytes.Count(payload, []byte{'='}))
	n := int64(len(payload))
	return lines*(perLine+perStamped*int64(stamped)) + pairs*perPair + n + n/4
}
