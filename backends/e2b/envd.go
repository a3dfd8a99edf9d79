package e2b

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moatsh/moat/backends/internal/restapi"
	"github.com/moatsh/moat/errdefs"
)

// envdPort is where envd listens inside every sandbox.
const envdPort = 49983

// Versions of envd that changed the wire (from the JS SDK's envd/versions.ts).
const (
	envdOctetStreamUpload = "0.5.7" // raw application/octet-stream upload body
	envdCloseStdin        = "0.5.2" // process.Process/CloseStdin
	envdDefaultUser       = "0.4.0" // older envd needs an explicit user
)

// envd talks to the daemon inside one sandbox through E2B's edge proxy. The proxy routes by
// the E2b-Sandbox-Id / E2b-Sandbox-Port headers (on sandbox.<domain>, localhost and IP
// hosts) or by the <port>-<id>.<domain> host name; we send both.
type envd struct {
	c           *client
	base        string // no trailing slash
	sandboxID   string
	accessToken string
	user        string
	version     string
}

func (e *envd) setHeaders(h http.Header) {
	h.Set("E2b-Sandbox-Id", e.sandboxID)
	h.Set("E2b-Sandbox-Port", strconv.Itoa(envdPort))
	h.Set("User-Agent", e.c.userAgent)
	if e.accessToken != "" {
		h.Set("X-Access-Token", e.accessToken)
	}
}

// authHeader selects the OS user envd runs things as: Basic base64("<user>:").
func (e *envd) authHeader(h http.Header) {
	if e.user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(e.user+":")))
	}
}

// unary performs one unary Connect call. Idempotent calls retry on unavailable answers.
func (e *envd) unary(ctx context.Context, procedure string, in, out any, idempotent bool) error {
	payload, err := json.Marshal(in)
	if err != nil {
		return errdefs.InvalidArgumentf("e2b: encode %s: %v", procedure, err)
	}
	rc := restapi.Client{
		Name: "e2b", HTTP: e.c.http, Policy: e.c.policy, Secrets: []string{e.accessToken, e.c.apiKey},
		Error: func(resp *http.Response, what string) error {
			return readEnvdError(resp, what, e.accessToken, e.c.apiKey)
		},
		Retryable: envdRetryable,
	}
	resp, err := rc.Do(ctx, restapi.Request{
		What:       procedure,
		Idempotent: idempotent,
		Build: func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/"+procedure, bytes.NewReader(payload))
			if err != nil {
				return nil, errdefs.InvalidArgumentf("e2b: build %s: %v", procedure, err)
			}
			e.setHeaders(req.Header)
			e.authHeader(req.Header)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Connect-Protocol-Version", connectProtocolVersion)
			setConnectTimeout(ctx, req.Header)
			return req, nil
		},
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := decodeJSON(resp.Body, out); err != nil {
		return errdefs.Unavailablef("e2b: %s: %v", procedure, err)
	}
	return nil
}

// envdRetryable is the control plane's rule plus: an idempotent call is retried on any
// Unavailable answer (a Connect "unavailable" code), and never when the edge proxy says
// the sandbox is gone (502: no retry brings it back).
func envdRetryable(status int, idempotent bool, err error) bool {
	if _, gone := err.(*goneError); gone {
		return false
	}
	return retryable(status, idempotent) || (idempotent && errdefs.Is(err, errdefs.KindUnavailable))
}

// setConnectTimeout passes ctx's deadline on as Connect-Timeout-Ms so envd stops the work
// by itself even when we cannot reach it to cancel.
func setConnectTimeout(ctx context.Context, h http.Header) {
	if dl, ok := ctx.Deadline(); ok {
		ms := time.Until(dl).Milliseconds()
		if ms < 1 {
			ms = 1
		}
		h.Set("Connect-Timeout-Ms", strconv.FormatInt(ms, 10))
	}
}

// stream starts a server-streaming call and returns its reader once the answer's headers
// arrived.
func (e *envd) stream(ctx context.Context, procedure string, in any, extra http.Header) (*streamReader, error) {
	payload, err := json.Marshal(in)
	if err != nil {
		return nil, errdefs.InvalidArgumentf("e2b: encode %s: %v", procedure, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.base+"/"+procedure, bytes.NewReader(envelope(0, payload)))
	if err != nil {
		return nil, errdefs.InvalidArgumentf("e2b: build %s: %v", procedure, err)
	}
	e.setHeaders(req.Header)
	e.authHeader(req.Header)
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", connectProtocolVersion)
	for k, vs := range extra {
		req.Header[k] = vs
	}
	resp, err := e.c.http.Do(req)
	if err != nil {
		return nil, restapi.TransportError(ctx, "e2b: "+procedure, err, e.accessToken, e.c.apiKey)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readEnvdError(resp, procedure, e.accessToken, e.c.apiKey)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/connect+json") {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, errdefs.Unavailablef("e2b: %s: unexpected content type %q: %q", procedure, ct, restapi.Prefix(b, quoteLen))
	}
	return newStreamReader(resp.Body, procedure), nil
}

// ---- process.Process ----

type processConfig struct {
	Cmd  string            `json:"cmd"`
	Args []string          `json:"args,omitempty"`
	Envs map[string]string `json:"envs,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
}

type startRequest struct {
	Process processConfig `json:"process"`
	Tag     string        `json:"tag,omitempty"`
	Stdin   bool          `json:"stdin"`
}

// processSelector is a oneof: exactly one of pid or tag.
type processSelector struct {
	Pid uint32 `json:"pid,omitempty"`
	Tag string `json:"tag,omitempty"`
}

// processEvent is the oneof event of StartResponse/ConnectResponse. proto3 JSON leaves out
// zero values, so an exit code of 0 arrives as a missing exitCode.
type processEvent struct {
	Event struct {
		Start *struct {
			Pid uint32 `json:"pid"`
		} `json:"start"`
		Data *struct {
			Stdout []byte `json:"stdout"` // base64 in JSON
			Stderr []byte `json:"stderr"`
			Pty    []byte `json:"pty"`
		} `json:"data"`
		End *struct {
			ExitCode int32   `json:"exitCode"`
			Exited   bool    `json:"exited"`
			Status   string  `json:"status"`
			Error    *string `json:"error"`
		} `json:"end"`
		Keepalive *struct{} `json:"keepalive"`
	} `json:"event"`
}

func (e *envd) sendInput(ctx context.Context, sel processSelector, data []byte) error {
	in := map[string]any{"process": sel, "input": map[string]any{"stdin": data}}
	return e.unary(ctx, "process.Process/SendInput", in, nil, false)
}

func (e *envd) closeStdin(ctx context.Context, sel processSelector) error {
	return e.unary(ctx, "process.Process/CloseStdin", map[string]any{"process": sel}, nil, true)
}

func (e *envd) sendSignal(ctx context.Context, sel processSelector, signal string) error {
	return e.unary(ctx, "process.Process/SendSignal", map[string]any{"process": sel, "signal": signal}, nil, true)
}

// ---- filesystem.Filesystem ----

type entryInfo struct {
	Name          string    `json:"name"`
	Type          string    `json:"type"`
	Path          string    `json:"path"`
	Size          int64     `json:"size"`
	Mode          uint32    `json:"mode"`
	Permissions   string    `json:"permissions"`
	ModifiedTime  time.Time `json:"modifiedTime"`
	SymlinkTarget *string   `json:"symlinkTarget,omitempty"`
}

// UnmarshalJSON accepts int64 sizes both as JSON strings (proto3 JSON) and as numbers.
func (ei *entryInfo) UnmarshalJSON(b []byte) error {
	type plain entryInfo
	var raw struct {
		plain
		Size json.RawMessage `json:"size"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*ei = entryInfo(raw.plain)
	if len(raw.Size) > 0 {
		s := strings.Trim(string(raw.Size), `"`)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("bad size %s", raw.Size)
		}
		ei.Size = n
	}
	return nil
}

func (e *envd) listDir(ctx context.Context, path string) ([]entryInfo, error) {
	var out struct {
		Entries []entryInfo `json:"entries"`
	}
	err := e.unary(ctx, "filesystem.Filesystem/ListDir", map[string]any{"path": path, "depth": 1}, &out, true)
	return out.Entries, err
}

func (e *envd) makeDir(ctx context.Context, path string) error {
	err := e.unary(ctx, "filesystem.Filesystem/MakeDir", map[string]any{"path": path}, nil, true)
	if errdefs.Is(err, errdefs.KindAlreadyExists) {
		return nil // envd answers already_exists for an existing directory
	}
	return err
}

// ---- envd HTTP: /files ----

func (e *envd) filesURL(path string) string {
	q := url.Values{"path": {path}}
	if e.user != "" {
		q.Set("username", e.user)
	}
	return e.base + "/files?" + q.Encode()
}

// upload writes r to path, creating parents. envd ≥ 0.5.7 takes a raw octet-stream body;
// older ones a multipart form with one "file" part, which we stream through a pipe.
func (e *envd) upload(ctx context.Context, path string, r io.Reader) error {
	var body io.Reader
	ct := "application/octet-stream"
	if versionAtLeast(e.version, envdOctetStreamUpload) {
		body = r
	} else {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		ct = mw.FormDataContentType()
		go func() {
			part, err := mw.CreateFormFile("file", path)
			if err == nil {
				_, err = io.Copy(part, r)
			}
			if err == nil {
				err = mw.Close()
			}
			pw.CloseWithError(err)
		}()
		defer pr.Close()
		body = pr
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.filesURL(path), body)
	if err != nil {
		return errdefs.InvalidArgumentf("e2b: build upload: %v", err)
	}
	e.setHeaders(req.Header)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Accept", "application/json")
	resp, err := e.c.http.Do(req)
	if err != nil {
		return restapi.TransportError(ctx, "e2b: upload "+path, err, e.accessToken, e.c.apiKey)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readEnvdError(resp, "upload "+path, e.accessToken, e.c.apiKey)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return nil
}

// download copies the file at path to w.
func (e *envd) download(ctx context.Context, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.filesURL(path), nil)
	if err != nil {
		return errdefs.InvalidArgumentf("e2b: build download: %v", err)
	}
	e.setHeaders(req.Header)
	resp, err := e.c.http.Do(req)
	if err != nil {
		return restapi.TransportError(ctx, "e2b: download "+path, err, e.accessToken, e.c.apiKey)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readEnvdError(resp, "download "+path, e.accessToken, e.c.apiKey)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		if ctx.Err() != nil {
			return errdefs.Wrap(kindOfCtx(ctx.Err()), fmt.Errorf("e2b: download %s: %w", path, ctx.Err()))
		}
		return errdefs.Unavailablef("e2b: download %s: %v", path, err)
	}
	return nil
}

// versionAtLeast compares dotted numeric versions ("0.5.7"); an unparsable version counts
// as new, like the SDK's debug fallback "99.99.99".
func versionAtLeast(have, want string) bool {
	hp, wp := strings.Split(strings.TrimPrefix(have, "v"), "."), strings.Split(want, ".")
	for i := range wp {
		w, _ := strconv.Atoi(wp[i])
		if i >= len(hp) {
			return w == 0
		}
		h, err := strconv.Atoi(strings.SplitN(hp[i], "-", 2)[0])
		if err != nil {
			return true
		}
		if h != w {
			return h > w
		}
	}
	return true
}

func itoa(n int) string { return strconv.Itoa(n) }
