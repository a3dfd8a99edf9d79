package httpapi

import (
	"io"
	"sync"
)

// bufPipe is an in-memory pipe whose writer does not wait for the reader until limit bytes
// are pending. The WebSocket read loop writes stdin into it, so the loop keeps reading (and
// notices a client that goes away) even while the command is not reading its input.
type bufPipe struct {
	mu    sync.Mutex
	cond  *sync.Cond
	buf   []byte
	limit int
	wdone bool  // writer closed: readers see EOF (or werr) after the buffer drains
	werr  error // error readers get instead of EOF
	rdone bool  // reader closed: writes fail
}

func newBufPipe(limit int) *bufPipe {
	p := &bufPipe{limit: limit}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.wdone && !p.rdone {
		p.cond.Wait()
	}
	if p.rdone {
		return 0, io.ErrClosedPipe
	}
	if len(p.buf) == 0 {
		if p.werr != nil {
			return 0, p.werr
		}
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	p.cond.Broadcast()
	return n, nil
}

func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) >= p.limit && !p.rdone && !p.wdone {
		p.cond.Wait()
	}
	if p.rdone || p.wdone {
		return 0, io.ErrClosedPipe
	}
	p.buf = append(p.buf, b...)
	p.cond.Broadcast()
	return len(b), nil
}

// input writes WebSocket input: input after eof or after the command ended is
// errInputDone (dropped by the read loop).
func (p *bufPipe) input(b []byte) error {
	if _, err := p.Write(b); err != nil {
		return errInputDone
	}
	return nil
}

// CloseWrite ends the input: readers get EOF (err nil) or err after the pending bytes.
func (p *bufPipe) CloseWrite(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.wdone {
		p.wdone, p.werr = true, err
	}
	p.cond.Broadcast()
}

// CloseRead stops the pipe: pending and future writes fail, reads fail.
func (p *bufPipe) CloseRead() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rdone = true
	p.buf = nil
	p.cond.Broadcast()
}
