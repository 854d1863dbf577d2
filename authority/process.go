package authority

import (
	"sync"
	"sync/atomic"
)

// Result is the outcome of one request of a batch: its answer, or why it
// was refused.
type Result struct {
	Answer []byte
	Err    error
}

// ProcessRequests answers a batch of enrollment requests (the offline
// flow) with workers goroutines in parallel, so that their store
// transactions are shared. It returns one Result per request, in order,
// and calls progress, if not nil, after each request with the number done
// (from one goroutine at a time).
func ProcessRequests(a Admin, requests [][]byte, workers int, progress func(done int)) []Result {
	results := make([]Result, len(requests))
	workers = max(1, min(workers, len(requests)))
	var next, done atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(requests) {
					return
				}
				answer, err := a.Enroll(requests[i])
				results[i] = Result{Answer: answer, Err: err}
				n := int(done.Add(1))
				if progress != nil {
					mu.Lock()
					progress(n)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return results
}
