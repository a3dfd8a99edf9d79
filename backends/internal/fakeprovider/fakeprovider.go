// Package fakeprovider answers "what do the hosted-provider fakes (vercelfake, daytonafake,
// e2bfake) have in common?": the injected faults (a status with Retry-After, a custom body,
// a delay; for the next requests, optionally only under a path), request counters, the
// bearer-token check, JSON answers, and the bookkeeping of a sandbox table (remove one as
// if the provider deleted it, empty it on Close, list its ids). Each fake keeps its own
// wire format: routes, error envelopes and authentication answers.
package fakeprovider

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Fault is an injected misbehaviour for the next Count requests (whose path starts with
// PathPrefix, when set).
type Fault struct {
	// Count is how many requests get the fault; <= 0 means 1.
	Count int
	// PathPrefix limits the fault to requests whose URL path starts with it.
	PathPrefix string
	// Status, when non-zero, answers with this status instead of serving the request: with
	// Body (of ContentType) when set, else with the provider's own error envelope.
	Status      int
	RetryAfter  string // Retry-After header value, if any
	Body        string
	ContentType string
	// Delay is waited (bounded by the request's context) before serving or failing.
	Delay time.Duration
}

// Faults is a queue of injected faults. The zero value is empty and ready; it is safe for
// concurrent use.
type Faults struct {
	mu sync.Mutex
	q  []*Fault
}

// Inject queues f.
func (fs *Faults) Inject(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	fs.mu.Lock()
	fs.q = append(fs.q, &f)
	fs.mu.Unlock()
}

// Take pops one use of the first queued fault that applies to path.
func (fs *Faults) Take(path string) (Fault, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.q {
		if f.PathPrefix != "" && !strings.HasPrefix(path, f.PathPrefix) {
			continue
		}
		f.Count--
		if f.Count <= 0 {
			fs.q = append(fs.q[:i], fs.q[i+1:]...)
		}
		return *f, true
	}
	return Fault{}, false
}

// Apply acts out f on one request: it waits f.Delay (or until the request's context ends)
// and, for a non-zero Status, answers with it: Retry-After when set, then f.Body (of
// f.ContentType, default defaultCT) or, without a Body, envelope(w, r, status), the
// provider's error answer. It reports whether the request is done (answered, or gone);
// false means: serve it normally.
func Apply(w http.ResponseWriter, r *http.Request, f Fault, defaultCT string, envelope func(w http.ResponseWriter, r *http.Request, status int)) (done bool) {
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-r.Context().Done():
			t.Stop()
			return true
		case <-t.C:
		}
	}
	if f.Status == 0 {
		return false
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Body == "" {
		envelope(w, r, f.Status)
		return true
	}
	ct := f.ContentType
	if ct == "" {
		ct = defaultCT
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(f.Status)
	_, _ = w.Write([]byte(f.Body))
	return true
}

// Counter counts requests, in all and by "METHOD /path" (path without query). The zero
// value is ready; it is safe for concurrent use.
type Counter struct {
	mu    sync.Mutex
	total int
	by    map[string]int
}

// Count records r.
func (c *Counter) Count(r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.by == nil {
		c.by = map[string]int{}
	}
	c.total++
	c.by[r.Method+" "+r.URL.Path]++
}

// Total returns how many requests were counted.
func (c *Counter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Of returns how many requests "METHOD /path" were counted.
func (c *Counter) Of(methodPath string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[methodPath]
}

// Bearer returns the token of an "Authorization: Bearer <token>" header; ok is false when
// there is none or it is empty.
func Bearer(r *http.Request) (token string, ok bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok, ok && tok != ""
}

// WriteJSON answers status with v as JSON (a 500 when v does not marshal).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// Remove deletes m[id] under mu and returns what was there: the sandbox a fake's Vanish
// then tears down outside the lock.
func Remove[V any](mu *sync.Mutex, m map[string]V, id string) (V, bool) {
	mu.Lock()
	defer mu.Unlock()
	v, ok := m[id]
	delete(m, id)
	return v, ok
}

// TakeAll empties *m under mu and returns what it held: the sandboxes a fake's Close then
// tears down outside the lock.
func TakeAll[V any](mu *sync.Mutex, m *map[string]V) map[string]V {
	mu.Lock()
	defer mu.Unlock()
	all := *m
	*m = map[string]V{}
	return all
}

// Keys returns m's keys, sorted, read under mu.
func Keys[V any](mu *sync.Mutex, m map[string]V) []string {
	mu.Lock()
	defer mu.Unlock()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
