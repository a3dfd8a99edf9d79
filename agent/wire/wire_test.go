package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := bytes.Repeat([]byte{0xff}, MaxPayload)
	_ = w.WriteJSON(Exec, ExecRequest{Argv: []string{"a", "b"}, Stdin: true})
	_ = w.Write(Stdout, []byte("\x00\x01"))
	_ = w.Write(Stdin, big)
	_ = w.Write(StdinAck, Ack(70000))
	r := NewReader(&buf)
	typ, p, err := r.Next()
	var req ExecRequest
	if err != nil || typ != Exec || Decode(typ, p, &req) != nil || len(req.Argv) != 2 || !req.Stdin {
		t.Fatalf("exec frame: %v %q %v", typ, p, err)
	}
	if typ, p, err := r.Next(); err != nil || typ != Stdout || string(p) != "\x00\x01" {
		t.Fatalf("stdout frame: %v %q %v", typ, p, err)
	}
	if typ, p, err := r.Next(); err != nil || typ != Stdin || !bytes.Equal(p, big) {
		t.Fatalf("max frame: %v %d %v", typ, len(p), err)
	}
	if typ, p, err := r.Next(); err != nil || typ != StdinAck {
		t.Fatalf("ack frame: %v %v", typ, err)
	} else if n, err := ParseAck(p); n != 70000 || err != nil {
		t.Fatalf("ack = %d, %v", n, err)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if err := w.Write(Stdin, make([]byte, MaxPayload+1)); !errors.Is(err, ErrProtocol) {
		t.Errorf("oversized write: %v", err)
	}
}

func TestBadFrames(t *testing.T) {
	hdr := func(typ byte, n uint32) []byte {
		b := []byte{typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], n)
		return b
	}
	for name, in := range map[string][]byte{
		"oversized": hdr(byte(Stdout), MaxPayload+1),
		"huge":      hdr(byte(Stdout), 0xffffffff),
		"unknown":   hdr(0x7f, 1),
		"zero type": hdr(0, 0),
	} {
		if _, _, err := NewReader(bytes.NewReader(in)).Next(); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want ErrProtocol", name, err)
		}
	}
	if _, _, err := NewReader(bytes.NewReader(append(hdr(byte(Stdout), 10), 1, 2))).Next(); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated: %v", err)
	}
	if _, err := ParseAck([]byte{1}); !errors.Is(err, ErrProtocol) {
		t.Errorf("short ack: %v", err)
	}
	if Choose([]int{1, 2, 3}, []int{2, 3, 4}) != 3 || Choose([]int{9}, Versions) != 0 {
		t.Error("Choose")
	}
}
