package httpapi

import (
	"bufio"
	"errors"
	"net"
	"net/http"
)

// Hijack hands the connection to a WebSocket.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("httpapi: connection cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, rw, err
}
