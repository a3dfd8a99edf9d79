package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func fuzzFrames(frames ...any) []byte {
	var b bytes.Buffer
	w := NewWriter(&b)
	for i := 0; i+1 < len(frames); i += 2 {
		_ = w.Write(frames[i].(Type), []byte(frames[i+1].(string)))
	}
	return b.Bytes()
}

// FuzzReader decodes arbitrary bytes as a frame stream, as both ends of the agent protocol
// do with what the other sent. Each frame read is a known type within MaxPayload, and
// writing the frames again gives back exactly the bytes consumed; a stream ends in io.EOF
// only on a frame boundary, otherwise in io.ErrUnexpectedEOF or an ErrProtocol error.
// Every payload decodes into its message type without panicking, failures as ErrProtocol.
func FuzzReader(f *testing.F) {
	f.Add(fuzzFrames(Hello, `{"versions":[1]}`, Exec, `{"argv":["sh","-c","echo hi"],"env":["A=1"],"stdin":true}`,
		Stdin, "data", StdinClose, "", Stdout, "out", Stderr, "err", Exit, `{"code":3}`))
	f.Add(fuzzFrames(Hello, `{"version":1,"agent":"moat-agent","ops":["exec","read_file"]}`, Started, `{"pid":42}`, StdinAck, "\x00\x00\x01\x00"))
	f.Add(fuzzFrames(ReadFile, `{"path":"/etc/passwd"}`, WriteFile, `{"path":"/x","mode":420}`, Data, "abc", DataEnd, "", Done, ""))
	f.Add(fuzzFrames(Error, `{"kind":"not_found","message":"no"}`, Kill, ""))
	f.Add([]byte{byte(Exec), 0xff, 0xff, 0xff, 0xff})        // over MaxPayload
	f.Add([]byte{0x7f, 0, 0, 0, 0})                          // unknown type
	f.Add([]byte{byte(Stdout), 0, 0, 0, 10, 'a', 'b'})       // cut inside a payload
	f.Add([]byte{byte(Stdout), 0, 0})                        // cut inside a header
	f.Add(fuzzFrames(Exec, `{"argv":null,"env":{"bad":1}}`)) // wrong JSON shapes
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		var again bytes.Buffer
		w := NewWriter(&again)
		for {
			typ, p, err := r.Next()
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					if !bytes.Equal(again.Bytes(), data) {
						t.Fatalf("io.EOF after %d of %d bytes: a clean end must be on a frame boundary", again.Len(), len(data))
					}
				case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, ErrProtocol):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if _, ok := typeNames[typ]; !ok || len(p) > MaxPayload {
				t.Fatalf("frame %v of %d bytes accepted", typ, len(p))
			}
			if err := w.Write(typ, p); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, again.Bytes()) {
				t.Fatalf("re-encoded frames are not the bytes read")
			}
			decodeAll(t, typ, p)
		}
	})
}

func decodeAll(t *testing.T, typ Type, p []byte) {
	for _, v := range []any{&ClientHello{}, &ServerHello{}, &ExecRequest{}, &StartedMsg{}, &ExitMsg{}, &ErrorMsg{}, &FileRequest{}} {
		if err := Decode(typ, p, v); err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("Decode error %v does not wrap ErrProtocol", err)
		}
	}
	n, err := ParseAck(p)
	switch {
	case err != nil && !errors.Is(err, ErrProtocol):
		t.Fatalf("ParseAck error %v does not wrap ErrProtocol", err)
	case err == nil && (len(p) != 4 || !bytes.Equal(Ack(n), p) || uint32(n) != binary.BigEndian.Uint32(p)):
		t.Fatalf("ParseAck(%x) = %d does not round-trip", p, n)
	}
	var sh ServerHello
	if Decode(typ, p, &sh) == nil {
		_ = sh.Has(OpExec)
		_ = Choose([]int{sh.Version}, Versions)
	}
}
