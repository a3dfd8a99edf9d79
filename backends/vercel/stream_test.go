package vercel

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
)

// endless yields prefix and then 'a' forever, failing once more than limit bytes were read:
// a client that keeps reading past its line bound would buffer it all.
type endless struct {
	prefix string
	n      int
	limit  int
}

var errReadTooFar = errors.New("read past the line bound")

func (e *endless) Read(p []byte) (int, error) {
	if e.n >= e.limit {
		return 0, errReadTooFar
	}
	n := 0
	for n < len(p) && e.n < e.limit {
		if e.n < len(e.prefix) {
			p[n] = e.prefix[e.n]
		} else {
			p[n] = 'a'
		}
		n++
		e.n++
	}
	return n, nil
}

func TestCommandStreamLineIsBounded(t *testing.T) {
	r := &endless{prefix: `{"stream":"stdout","data":"`, limit: 2 * maxStreamLine}
	_, err := readCommandStream(r, make(chan string, 1), io.Discard, io.Discard)
	if errors.Is(err, errReadTooFar) || !errdefs.Is(err, errdefs.KindUnavailable) || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("endless line: %v; want Unavailable, line too long", err)
	}
	if r.n > maxStreamLine+128<<10 {
		t.Errorf("read %d bytes of one line; bound is %d", r.n, maxStreamLine)
	}
}

func TestCommandStreamTruncated(t *testing.T) {
	for name, body := range map[string]string{
		"no final record":  `{"command":{"id":"c1"}}` + "\n" + `{"stream":"stdout","data":"hi"}` + "\n",
		"cut mid-frame":    `{"command":{"id":"c1"}}` + "\n" + `{"command":{"id":"c1","exitCo`,
		"empty":            ``,
		"final without rc": `{"command":{"id":"c1"}}` + "\n" + `{"command":{"id":"c1"}}` + "\n",
	} {
		code, err := readCommandStream(strings.NewReader(body), make(chan string, 1), io.Discard, io.Discard)
		if !errdefs.Is(err, errdefs.KindUnavailable) {
			t.Errorf("%s: code %d, err %v; want Unavailable", name, code, err)
		}
	}
	code, err := readCommandStream(strings.NewReader(`{"command":{"id":"c1"}}`+"\n"+`{"command":{"id":"c1","exitCode":3}}`), make(chan string, 1), io.Discard, io.Discard)
	if err != nil || code != 3 {
		t.Errorf("final record without a newline: %d %v; want 3", code, err)
	}
}
