// Package syncbuf answers "where does a test collect output that several goroutines
// write?": Buffer, a bytes.Buffer safe for concurrent use that can wait for text.
package syncbuf

import (
	"bytes"
	"regexp"
	"sync"
	"testing"
	"time"
)

// Buffer is a concurrency-safe output buffer that can wait for text. The zero value is
// empty and ready to use.
type Buffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	notify chan struct{} // closed and replaced by each Write
}

// New returns an empty Buffer.
func New() *Buffer { return &Buffer{} }

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	if b.notify != nil {
		close(b.notify)
		b.notify = nil
	}
	return n, err
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Bytes returns a copy of everything written so far.
func (b *Buffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}

// WaitFor waits until the output matches re (searching from byte offset from) and returns
// the first match (its first group, when re has one) and the offset after it, or fails t
// after timeout.
func (b *Buffer) WaitFor(t testing.TB, re *regexp.Regexp, from int, timeout time.Duration) (string, int) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		b.mu.Lock()
		if b.notify == nil {
			b.notify = make(chan struct{})
		}
		ch := b.notify
		b.mu.Unlock()
		if m, end, ok := b.find(re, from); ok {
			return m, end
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("output never matched %q; output so far: %q", re, b.String())
			return "", 0
		}
	}
}

// WaitForText waits until the output contains s, or fails t after timeout.
func (b *Buffer) WaitForText(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	b.WaitFor(t, regexp.MustCompile(regexp.QuoteMeta(s)), 0, timeout)
}

func (b *Buffer) find(re *regexp.Regexp, from int) (string, int, bool) {
	s := b.String()
	if from > len(s) {
		from = len(s)
	}
	loc := re.FindStringSubmatchIndex(s[from:])
	if loc == nil {
		return "", 0, false
	}
	m := s[from+loc[0] : from+loc[1]]
	if len(loc) >= 4 && loc[2] >= 0 {
		m = s[from+loc[2] : from+loc[3]]
	}
	return m, from + loc[1], true
}
