package e2b

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/moatsh/moat/errdefs"
)

func fuzzEnvelopes(msgs ...string) []byte {
	var b []byte
	for i, m := range msgs {
		flags := byte(0)
		if i == len(msgs)-1 && strings.HasPrefix(m, "END") {
			flags, m = flagEndStream, strings.TrimPrefix(m, "END")
		}
		b = append(b, envelope(flags, []byte(m))...)
	}
	return b
}

// FuzzConnectStream feeds arbitrary bytes to the Connect server-stream reader that carries
// envd's process events. It never panics; it yields at most one message per envelope in
// the input; it ends with io.EOF only on an end-of-stream envelope without an error, and
// every other error is io.ErrUnexpectedEOF, an errdefs kind, or (for Connect's own
// unknown/internal/data_loss codes, which have none) a message naming the code.
func FuzzConnectStream(f *testing.F) {
	for _, s := range [][]string{
		{`{"event":{"start":{"pid":7}}}`, `{"event":{"data":{"stdout":"aGkK"}}}`, `{"event":{"end":{"exitCode":3,"exited":true,"status":"exit status 3"}}}`, `END{}`},
		{`{"event":{"keepalive":{}}}`, `END{"error":{"code":"not_found","message":"process not found"}}`},
		{`END{"error":{"code":"internal","message":"boom"}}`},
		{`END{"error":{"code":"unavailable"},"metadata":{"a":["b"]}}`},
		{`{"event":{"data":{"stdout":"not base64!"}}}`},
		{`{"event":{"end":{"exitCode":99999999999}}}`},
		{`END not json`},
		{`{"event":{"start":{"pid":1}}}`}, // no end-of-stream: connection lost
	} {
		f.Add(fuzzEnvelopes(s...))
	}
	f.Add([]byte{flagCompressed, 0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0, 9, '{'})
	f.Fuzz(func(t *testing.T, data []byte) {
		sr := newStreamReader(io.NopCloser(bytes.NewReader(data)), "process.Process/Start")
		for msgs := 0; ; msgs++ {
			var ev processEvent
			err := sr.next(&ev)
			if err == nil {
				if 5*(msgs+1) > len(data) {
					t.Fatalf("%d messages from %d bytes", msgs+1, len(data))
				}
				continue
			}
			switch {
			case err == io.EOF:
				if fl, ok := envelopeFlags(data, msgs); !ok || fl&flagEndStream == 0 {
					t.Fatalf("io.EOF at envelope %d, which is not an end-of-stream envelope", msgs)
				}
			case errors.Is(err, io.ErrUnexpectedEOF):
			case errdefs.KindOf(err) != errdefs.KindUnknown:
			case strings.Contains(err.Error(), "e2b: process.Process/Start: "):
			default:
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
	})
}

// envelopeFlags returns the flags of the i-th envelope of data, walking the framing
// independently of streamReader.
func envelopeFlags(data []byte, i int) (byte, bool) {
	for off := 0; off+5 <= len(data); i-- {
		n := int(uint32(data[off+1])<<24 | uint32(data[off+2])<<16 | uint32(data[off+3])<<8 | uint32(data[off+4]))
		if i == 0 {
			return data[off], off+5+n <= len(data)
		}
		off += 5 + n
		if off < 0 {
			return 0, false
		}
	}
	return 0, false
}
