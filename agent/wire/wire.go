// Package wire answers "what bytes do moat and moat-agent exchange?": the frame codec and
// message types of the moat-agent protocol (docs/agent-protocol.md), shared by the host
// client (package agent) and the in-sandbox server (internal/agentd). It imports only the
// standard library so that moat-agent stays small and static.
package wire

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Version is the newest protocol version this package speaks; Versions lists all of them.
const Version = 1

// Versions are the protocol versions this build speaks, oldest first.
var Versions = []int{1}

// Limits of the protocol.
const (
	MaxPayload  = 4 << 20   // largest frame payload a receiver accepts
	ChunkSize   = 32 << 10  // largest data payload a sender produces
	StdinWindow = 256 << 10 // unacknowledged stdin bytes a client may have in flight
	headerSize  = 5
)

// Type is a frame type.
type Type uint8

// Frame types.
const (
	Hello      Type = 0x01
	Exec       Type = 0x02
	Started    Type = 0x03
	Stdin      Type = 0x04
	StdinClose Type = 0x05
	Stdout     Type = 0x06
	Stderr     Type = 0x07
	Exit       Type = 0x08
	Error      Type = 0x09
	Kill       Type = 0x0a
	StdinAck   Type = 0x0b
	ReadFile   Type = 0x10
	WriteFile  Type = 0x11
	Data       Type = 0x12
	DataEnd    Type = 0x13
	Done       Type = 0x14
)

// Operations a server lists in its HELLO; a client sends only those.
const (
	OpExec      = "exec"
	OpReadFile  = "read_file"
	OpWriteFile = "write_file"
)

var typeNames = map[Type]string{
	Hello: "HELLO", Exec: "EXEC", Started: "STARTED", Stdin: "STDIN", StdinClose: "STDIN_CLOSE",
	Stdout: "STDOUT", Stderr: "STDERR", Exit: "EXIT", Error: "ERROR", Kill: "KILL",
	StdinAck: "STDIN_ACK", ReadFile: "READ_FILE", WriteFile: "WRITE_FILE", Data: "DATA",
	DataEnd: "DATA_END", Done: "DONE",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// ErrProtocol is wrapped by every error about a malformed frame.
var ErrProtocol = errors.New("agent protocol error")

// ClientHello is the client's HELLO.
type ClientHello struct {
	Versions []int `json:"versions"`
}

// ServerHello is the server's HELLO.
type ServerHello struct {
	Version int    `json:"version"`
	Agent   string `json:"agent"`
	// Ops lists the operations the agent serves (OpExec, ...); an agent that sends none
	// serves only exec.
	Ops []string `json:"ops,omitempty"`
}

// Has reports whether the server offers op.
func (h ServerHello) Has(op string) bool {
	if len(h.Ops) == 0 {
		return op == OpExec
	}
	for _, o := range h.Ops {
		if o == op {
			return true
		}
	}
	return false
}

// FileRequest is the READ_FILE and WRITE_FILE payload.
type FileRequest struct {
	Path string `json:"path"`
	// Mode holds the Unix permission and setuid/setgid/sticky bits of a written file.
	Mode uint32 `json:"mode,omitempty"`
}

// ExecRequest is the EXEC payload.
type ExecRequest struct {
	Argv    []string `json:"argv"`
	Env     []string `json:"env,omitempty"`
	Workdir string   `json:"workdir,omitempty"`
	Stdin   bool     `json:"stdin,omitempty"`
}

// StartedMsg is the STARTED payload.
type StartedMsg struct {
	PID int `json:"pid"`
}

// ExitMsg is the EXIT payload.
type ExitMsg struct {
	Code int `json:"code"`
	// OOMKilled is true when the process died of SIGKILL while the OOM killer's count in
	// the agent's memory cgroup went up (an OOM kill, not a plain kill -9). Absent: false.
	OOMKilled bool `json:"oom_killed,omitempty"`
}

// Error kinds sent in ERROR; the values are errdefs kind names.
const (
	KindNotFound           = "not_found"
	KindPermissionDenied   = "permission_denied"
	KindInvalidArgument    = "invalid_argument"
	KindUnavailable        = "unavailable"
	KindFailedPrecondition = "failed_precondition"
)

// ErrorMsg is the ERROR payload.
type ErrorMsg struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Reader reads frames. It is not safe for concurrent use.
type Reader struct {
	r   *bufio.Reader
	hdr [headerSize]byte
	buf []byte
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Next reads one frame. The payload is valid until the next call. A clean end of stream
// before a header is io.EOF; a stream cut inside a frame is io.ErrUnexpectedEOF.
func (r *Reader) Next() (Type, []byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return 0, nil, err
	}
	t := Type(r.hdr[0])
	n := binary.BigEndian.Uint32(r.hdr[1:])
	if _, ok := typeNames[t]; !ok {
		return 0, nil, fmt.Errorf("%w: unknown frame %v", ErrProtocol, t)
	}
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w: %v frame of %d bytes exceeds %d", ErrProtocol, t, n, MaxPayload)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return t, p, nil
}

// Writer writes whole frames; it is safe for concurrent use (frames never interleave).
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer on w. Each frame is one Write call on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends one frame.
func (w *Writer) Write(t Type, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: %v payload of %d bytes exceeds %d", ErrProtocol, t, len(payload), MaxPayload)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf[:0], byte(t), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(w.buf[1:], uint32(len(payload)))
	w.buf = append(w.buf, payload...)
	_, err := w.w.Write(w.buf)
	if cap(w.buf) > 2*ChunkSize+headerSize {
		w.buf = nil // do not keep a large EXEC payload around
	}
	return err
}

// WriteJSON sends a frame with v as its JSON payload.
func (w *Writer) WriteJSON(t Type, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.Write(t, b)
}

// Decode unmarshals a JSON payload, wrapping failures in ErrProtocol.
func Decode(t Type, p []byte, v any) error {
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("%w: bad %v payload: %v", ErrProtocol, t, err)
	}
	return nil
}

// Ack encodes a STDIN_ACK payload.
func Ack(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

// ParseAck decodes a STDIN_ACK payload.
func ParseAck(p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("%w: STDIN_ACK payload of %d bytes", ErrProtocol, len(p))
	}
	return int(binary.BigEndian.Uint32(p)), nil
}

// Choose returns the highest version in both lists, or 0.
func Choose(theirs, ours []int) int {
	best := 0
	for _, a := range theirs {
		for _, b := range ours {
			if a == b && a > best {
				best = a
			}
		}
	}
	return best
}
