// Package apitype answers "what does the moat HTTP API send and receive?": the JSON wire
// types of API v1, shared by the server (httpapi) and the Go client (client). Types the
// library already defines with JSON tags (moattype.Spec, Info, BackendReport, FileInfo) are
// used as they are, so one definition serves both the library and the
// wire.
package apitype

import (
	"encoding/base64"
	"errors"
	"unicode/utf8"

	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/moattype"
)

// Version is the API version prefix of every route.
const Version = "v1"

// Media types of the API beyond application/json.
const (
	MediaNDJSON = "application/x-ndjson"
	MediaTar    = "application/x-tar"
	MediaOctet  = "application/octet-stream"
)

// EncodingBase64 marks a data field that holds base64 because the bytes are not UTF-8.
const EncodingBase64 = "base64"

// Error is every error answer: {"error":{"kind":"not_found","message":"..."}}.
type Error struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the kind (errdefs.Kind) and message of an error.
type ErrorBody struct {
	Kind    errdefs.Kind `json:"kind"`
	Message string       `json:"message"`
	// Reason refines the kind where callers must tell cases apart: "command_not_found" (a
	// not_found exec whose program does not exist, not a missing sandbox).
	Reason string `json:"reason,omitempty"`
}

// ReasonCommandNotFound is ErrorBody.Reason for moattype.ErrCommandNotFound.
const ReasonCommandNotFound = "command_not_found"

// NewErrorBody describes err for the wire.
func NewErrorBody(kind errdefs.Kind, err error) ErrorBody {
	b := ErrorBody{Kind: kind, Message: err.Error()}
	if errors.Is(err, moattype.ErrCommandNotFound) {
		b.Reason = ReasonCommandNotFound
	}
	return b
}

// Err turns a wire error back into an errdefs error of the same kind; a
// command_not_found reason also satisfies errors.Is(err, moattype.ErrCommandNotFound).
func (b ErrorBody) Err(status int) error {
	err := errdefs.FromHTTP(status, b.Kind, b.Message)
	if b.Reason == ReasonCommandNotFound {
		return reasonError{err, moattype.ErrCommandNotFound}
	}
	return err
}

type reasonError struct{ err, reason error }

func (e reasonError) Error() string   { return e.err.Error() }
func (e reasonError) Unwrap() []error { return []error{e.err, e.reason} }

// CreateSandboxRequest is the body of POST /v1/sandboxes.
type CreateSandboxRequest = moattype.Spec

// Sandbox is a sandbox as the API returns it.
type Sandbox = moattype.Info

// SandboxList is the answer of GET /v1/sandboxes.
type SandboxList struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

// ExecRequest is the body of POST /v1/sandboxes/{id}/exec and the first message of the exec
// WebSocket. Exactly one of Cmd and Shell is set.
type ExecRequest struct {
	Cmd   []string          `json:"cmd,omitempty"`
	Shell string            `json:"shell,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	// Workdir is absolute, or relative to the sandbox's workdir.
	Workdir string `json:"workdir,omitempty"`
	// Stdin is the command's whole input (not used by the WebSocket, which streams it).
	Stdin string `json:"stdin,omitempty"`
	// StdinEncoding is "base64" when Stdin is base64 of binary input.
	StdinEncoding string `json:"stdin_encoding,omitempty"`
	// TimeoutMS bounds the command; 0 means no bound beyond the request.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// MaxOutputBytes caps each of stdout and stderr; 0 means the server's default for
	// buffered answers and no cap for streams. The server never exceeds its own limit.
	MaxOutputBytes int64 `json:"max_output_bytes,omitempty"`
}

// ExecResponse is the buffered answer of POST /v1/sandboxes/{id}/exec.
type ExecResponse struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// StdoutEncoding / StderrEncoding are "base64" when the stream is not valid UTF-8 and
	// is sent as base64; "" means the text is as is.
	StdoutEncoding string `json:"stdout_encoding,omitempty"`
	StderrEncoding string `json:"stderr_encoding,omitempty"`
	// Truncated is true when either stream hit the output cap.
	Truncated       bool `json:"truncated"`
	StdoutTruncated bool `json:"stdout_truncated"`
	StderrTruncated bool `json:"stderr_truncated"`
	// OOMKilled is true when the command was killed because the sandbox ran out of memory
	// under its limit (exit code 137), not by a plain SIGKILL.
	OOMKilled  bool  `json:"oom_killed"`
	DurationMS int64 `json:"duration_ms"`
}

// Event types of streaming exec (NDJSON lines, WebSocket text messages) and of the
// terminal's control messages.
const (
	EventStdout = "stdout" // server → client: a chunk of output
	EventStderr = "stderr"
	EventExit   = "exit"   // server → client: the command ended; last event
	EventError  = "error"  // server → client: the command could not run or was cut short; last event
	EventStdin  = "stdin"  // client → server: a chunk of input
	EventEOF    = "eof"    // client → server: no more input
	EventResize = "resize" // client → server (terminal): new size
)

// Event is one streaming message. Which fields are set depends on Type.
type Event struct {
	Type string `json:"type"`
	// Data and Encoding carry a chunk (stdout, stderr, stdin).
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// Exit fields.
	ExitCode        *int  `json:"exit_code,omitempty"`
	StdoutTruncated bool  `json:"stdout_truncated,omitempty"`
	StderrTruncated bool  `json:"stderr_truncated,omitempty"`
	OOMKilled       bool  `json:"oom_killed,omitempty"`
	DurationMS      int64 `json:"duration_ms,omitempty"`
	// Error is set on error events.
	Error *ErrorBody `json:"error,omitempty"`
	// Rows and Cols are set on resize events.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// TerminalRequest is the first message of the terminal WebSocket. After it the client sends
// keystrokes as binary messages and resize/eof events as text; the server sends terminal
// output as binary messages and ends with an exit or error event.
type TerminalRequest struct {
	Cmd     []string          `json:"cmd,omitempty"` // default ["sh"]
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	Rows    uint16            `json:"rows,omitempty"`
	Cols    uint16            `json:"cols,omitempty"`
}

// FileList is the answer of GET /v1/sandboxes/{id}/files?path=DIR&list=1.
type FileList struct {
	Path    string              `json:"path"`
	Entries []moattype.FileInfo `json:"entries"`
}

// TrailerError is the HTTP trailer in which GET /v1/sandboxes/{id}/archive reports an error
// that came after the archive had started: its value is an ErrorBody as JSON. A response
// that carries it is incomplete.
const TrailerError = "Moat-Error"

// ArchiveResult is the answer of PUT /v1/sandboxes/{id}/archive.
type ArchiveResult = moattype.ArchiveResult

// SessionBackend is the body and answer of /v1/sessions/{session}/backend.
type SessionBackend struct {
	Session string `json:"session,omitempty"`
	Backend string `json:"backend"`
}

// Session is the body of PUT /v1/sessions/{session} (the path names the session; an "id"
// in the body must agree) and the answer of GET, PUT and PATCH.
type Session = moattype.Session

// SessionPatch is the body of PATCH /v1/sessions/{session}.
type SessionPatch = moattype.SessionPatch

// LimitsPatch is the "limits" of a SessionPatch.
type LimitsPatch = moattype.LimitsPatch

// SessionList is the answer of GET /v1/sessions.
type SessionList struct {
	Sessions []Session `json:"sessions"`
}

// SessionTeardown is the answer of DELETE /v1/sessions/{session}/sandboxes: 200 with the
// sandboxes destroyed and those that were not, each with its error.
type SessionTeardown = moattype.SessionTeardown

// SandboxFailure is one entry of SessionTeardown.Failed.
type SandboxFailure = moattype.SandboxFailure

// SecretState says whether a write-only setting has a value and where it came from.
type SecretState = moattype.SecretState

// BackendSettings is one backend's settings as GET /v1/settings/backends shows them:
// non-secret values, and only "token_configured" / "from_env" for secrets.
type BackendSettings = moattype.BackendSettings

// BackendSettingsList is the answer of GET /v1/settings/backends.
type BackendSettingsList struct {
	Backends []BackendSettings `json:"backends"`
}

// PutBackendSettings is the body of PUT /v1/settings/backends/{name}: keys to set; a null
// value removes the explicit setting (the environment alias applies again).
type PutBackendSettings map[string]*string

// Health is the answer of /healthz and /readyz.
type Health struct {
	Status string `json:"status"` // "ok", or why not
}

// EncodeBytes returns b as text and "" when it is valid UTF-8, else base64 and "base64".
func EncodeBytes(b []byte) (data, encoding string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return base64.StdEncoding.EncodeToString(b), EncodingBase64
}

// DecodeBytes reverses EncodeBytes. Unknown encodings are InvalidArgument.
func DecodeBytes(data, encoding string) ([]byte, error) {
	switch encoding {
	case "":
		return []byte(data), nil
	case EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, errdefs.InvalidArgumentf("apitype: invalid base64: %v", err)
		}
		return b, nil
	}
	return nil, errdefs.InvalidArgumentf("apitype: unknown encoding %q (want \"\" or \"base64\")", encoding)
}

// SnapshotRequest is the body of POST /v1/sandboxes/{id}/snapshots.
type SnapshotRequest struct {
	Name string `json:"name,omitempty"`
}

// Snapshot is a saved sandbox filesystem: put Image in a spec to start from it.
type Snapshot = moattype.Snapshot

// PortResponse answers POST /v1/sandboxes/{id}/ports/{port}.
type PortResponse struct {
	Port int    `json:"port"`
	URL  string `json:"url"`
}
