package vercel

import "encoding/json"

// Wire types of the Vercel Sandbox REST API (v2 "named sandboxes + sessions"), with the
// field names the official @vercel/sandbox SDK validates (src/api-client/validators.ts).
// Timestamps are epoch milliseconds. Only the fields moat reads are declared; the decoder
// ignores the rest.

// Session is one boot of a sandbox; commands and files hang off it.
type Session struct {
	ID        string `json:"id"`
	Memory    int    `json:"memory"`
	VCPUs     int    `json:"vcpus"`
	Region    string `json:"region"`
	Runtime   string `json:"runtime,omitempty"`
	Timeout   int64  `json:"timeout"`
	Status    string `json:"status"`
	CreatedAt int64  `json:"createdAt"`
	UpdatedAt int64  `json:"updatedAt"`
	Cwd       string `json:"cwd"`
}

// Sandbox is a named, possibly persistent sandbox.
type Sandbox struct {
	Name              string            `json:"name"`
	Persistent        bool              `json:"persistent"`
	Region            string            `json:"region,omitempty"`
	VCPUs             int               `json:"vcpus,omitempty"`
	Memory            int               `json:"memory,omitempty"`
	Runtime           string            `json:"runtime,omitempty"`
	Image             string            `json:"image,omitempty"`
	Timeout           int64             `json:"timeout,omitempty"`
	CreatedAt         int64             `json:"createdAt"`
	UpdatedAt         int64             `json:"updatedAt"`
	CurrentSessionID  string            `json:"currentSessionId"`
	CurrentSnapshotID string            `json:"currentSnapshotId,omitempty"`
	Status            string            `json:"status"`
	Cwd               string            `json:"cwd,omitempty"`
	Tags              map[string]string `json:"tags,omitempty"`
}

// Route maps an exposed port to its public URL.
type Route struct {
	URL       string `json:"url"`
	Subdomain string `json:"subdomain"`
	Port      int    `json:"port"`
}

// SandboxAndSession is the answer to create and get-sandbox.
type SandboxAndSession struct {
	Sandbox Sandbox `json:"sandbox"`
	Session Session `json:"session"`
	Routes  []Route `json:"routes"`
	Resumed bool    `json:"resumed,omitempty"`
}

// UpdateSandboxResponse is the answer to PATCH and DELETE of a sandbox.
type UpdateSandboxResponse struct {
	Sandbox Sandbox `json:"sandbox"`
	Routes  []Route `json:"routes,omitempty"`
}

// Pagination is the cursor pagination of list answers; Next is null on the last page.
type Pagination struct {
	Count int     `json:"count"`
	Next  *string `json:"next"`
}

// SandboxList is the answer to GET /v2/sandboxes.
type SandboxList struct {
	Sandboxes  []Sandbox  `json:"sandboxes"`
	Pagination Pagination `json:"pagination"`
}

// Command is one command started in a session. ExitCode is null while it runs.
type Command struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Args       []string `json:"args"`
	Cwd        string   `json:"cwd"`
	SessionID  string   `json:"sessionId"`
	ExitCode   *int     `json:"exitCode"`
	DurationMs *int64   `json:"durationMs,omitempty"`
	StartedAt  int64    `json:"startedAt"`
}

// CommandResponse wraps a Command.
type CommandResponse struct {
	Command Command `json:"command"`
}

// RunCommandRequest is the body of POST …/cmd.
type RunCommandRequest struct {
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Cwd     string            `json:"cwd,omitempty"`
	Env     map[string]string `json:"env"`
	Sudo    bool              `json:"sudo"`
	Wait    bool              `json:"wait,omitempty"`
	Logs    bool              `json:"logs,omitempty"`
	Timeout int64             `json:"timeout,omitempty"`
}

// Snapshot is a saved session filesystem.
type Snapshot struct {
	ID              string `json:"id"`
	SourceSessionID string `json:"sourceSessionId"`
	Region          string `json:"region"`
	Status          string `json:"status"`
	SizeBytes       int64  `json:"sizeBytes"`
	ExpiresAt       int64  `json:"expiresAt,omitempty"`
	CreatedAt       int64  `json:"createdAt"`
	UpdatedAt       int64  `json:"updatedAt"`
}

// CreateSnapshotResponse is the answer to POST …/snapshot (the session ends stopped).
type CreateSnapshotResponse struct {
	Snapshot Snapshot `json:"snapshot"`
	Session  Session  `json:"session"`
}

// StopSessionResponse is the answer to POST …/stop.
type StopSessionResponse struct {
	Session Session  `json:"session"`
	Sandbox *Sandbox `json:"sandbox,omitempty"`
}

// Resources are the create-time resources; memory follows vcpus (2048 MB each).
type Resources struct {
	VCPUs int `json:"vcpus"`
}

// Source is where a new sandbox's filesystem comes from.
type Source struct {
	Type       string `json:"type"` // "git", "tarball" or "snapshot"
	URL        string `json:"url,omitempty"`
	Depth      int    `json:"depth,omitempty"`
	Revision   string `json:"revision,omitempty"`
	SnapshotID string `json:"snapshotId,omitempty"`
}

// NetworkPolicy is the request form of a network policy: a mode, or an allow list.
type NetworkPolicy struct {
	Mode  string   `json:"mode,omitempty"` // "allow-all" or "deny-all"
	Allow []string `json:"allow,omitempty"`
}

// CreateSandboxRequest is the body of POST /v3/sandboxes (image) or /v2/sandboxes (runtime).
type CreateSandboxRequest struct {
	ProjectID     string            `json:"projectId"`
	Name          string            `json:"name,omitempty"`
	Ports         []int             `json:"ports"`
	Source        *Source           `json:"source,omitempty"`
	Timeout       int64             `json:"timeout,omitempty"`
	Resources     *Resources        `json:"resources,omitempty"`
	Runtime       string            `json:"runtime,omitempty"`
	Image         string            `json:"image,omitempty"`
	Persistent    *bool             `json:"persistent,omitempty"`
	NetworkPolicy *NetworkPolicy    `json:"networkPolicy,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
	Region        string            `json:"region,omitempty"`
}

// ReadFileRequest is the body of POST …/fs/read.
type ReadFileRequest struct {
	Path string `json:"path"`
	Cwd  string `json:"cwd,omitempty"`
}

// ErrorBody is the error envelope every endpoint answers with.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		// InvalidToken is set by Vercel's API gateway on a 403 for a token it does not know.
		InvalidToken bool `json:"invalidToken,omitempty"`
	} `json:"error"`
}

// LogLine is one line of an NDJSON command stream: either a log chunk (Stream set) or a
// command record (Command set, exitCode non-null on the final line).
type LogLine struct {
	Command *Command        `json:"command,omitempty"`
	Stream  string          `json:"stream,omitempty"` // "stdout", "stderr" or "error"
	Data    json.RawMessage `json:"data,omitempty"`
}
