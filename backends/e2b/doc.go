// Package e2b answers "how does moat run sandboxes on E2B?": a backend that drives E2B's
// control-plane REST API and the envd daemon inside each sandbox (Connect RPC with the JSON
// codec, plus envd's /files HTTP endpoints) with a hand-written client; no SDK.
//
// # Settings ([backends.e2b] in moat.toml)
//
//	token        E2B API key, sent as X-API-Key          env E2B_API_KEY
//	domain       E2B domain (default e2b.app)            env E2B_DOMAIN
//	api_url      control-plane URL (https://api.<domain>) env E2B_API_URL
//	sandbox_url  envd base URL override                  env E2B_SANDBOX_URL
//	template     default template (default "base")
//	timeout      default sandbox lifetime, a duration ("5m")
//	user         OS user for commands and files ("root")
//	metadata     extra E2B metadata on every sandbox
//	envs         extra environment for every sandbox
//	max_attempts attempts for retryable calls (4)
//	request_timeout  bound of a control-plane call, a duration ("60s")
//
// Explicit settings win over the environment aliases. Deprecated forms, still accepted
// with a warning: max_retries (the same attempt count as max_attempts), and a bare number
// of seconds for timeout and request_timeout.
//
// # Mapping
//
//   - Create: POST /v2/sandboxes. Image (or option "template") → templateID; TTL → timeout
//     (seconds, else the configured timeout); labels and metadata → metadata (plus moat.managed
//     and moat.id, which List filters on); env → envVars; network "host" →
//     allow_internet_access true, otherwise false. The workdir is created with envd MakeDir.
//     Limits are not sent: CPU, memory and disk come from the E2B template.
//   - Create options (JSON, unknown keys rejected): template, metadata, auto_pause,
//     auto_resume.
//   - Attach: GET /sandboxes/{id} (fetches the envd access token again; the handle holds no
//     secret). Status: the same call; 404 → gone.
//   - Handle (version 1): sandbox id, timeout and the endpoint the sandbox was created on
//     (or listed from): api_url, sandbox_url ("" = envd derived from the domain) and domain.
//     Attach and every later call of the instance (control plane and envd) use that
//     endpoint, with the configured key, even when the configuration has changed since (or
//     another process is configured otherwise); a handle without api_url (written before it
//     was recorded) uses the configured endpoint.
//   - Exec: envd process.Process/Start (a server stream of start, data and end events). The
//     command runs under a fixed /bin/sh wrapper so a missing executable is errdefs
//     NotFound rather than exit 127. Stdin goes through SendInput and CloseStdin. When ctx
//     ends the process is killed with SendSignal(SIGKILL): envd does not kill a process
//     whose stream was dropped. A signalled process returns 128+signal.
//   - Files: POST/GET /files?path=&username= (octet-stream upload on envd ≥ 0.5.7, multipart
//     before), then chmod through Exec for the mode; ListDir via filesystem.Filesystem/ListDir.
//   - Destroy: DELETE /sandboxes/{id}; 404 is success.
//   - Pause/Resume (Pauser): POST /sandboxes/{id}/pause; POST /v2/sandboxes/{id}/connect.
//   - Snapshot (Snapshotter): POST /sandboxes/{id}/snapshots; the snapshotID is a template
//     id, so it is the Image for later creates.
//   - ExposePort (PortExposer): https://<port>-<sandboxID>.<domain>, no I/O.
//   - List (Lister): GET /v2/sandboxes?metadata=moat.managed%3Dtrue&state=running,paused,
//     following X-Next-Token.
//   - Probe: GET /v2/sandboxes?limit=1 with a 5 s timeout.
//
// Errors keep E2B's message and map 400/422 → InvalidArgument, 401 → Unauthenticated, 403 →
// PermissionDenied, 404/410 → NotFound, 408 → DeadlineExceeded, 409 → Conflict, 413/429/507
// → ResourceExhausted, 501 → Unsupported, other 5xx → Unavailable (backends/internal/restapi's
// mapping with E2B's 501, 504 and 507 on top). Retries follow restapi's one policy:
// idempotent calls retry 429/5xx (not 501)/connection errors with exponential backoff and
// jitter, honouring Retry-After up to 2 minutes (a longer one ends the call), bounded by
// ctx and max_attempts; create retries only 429 and failed dials. The edge proxy's 502 on envd calls
// is confirmed with the control plane: a sandbox the API no longer knows is NotFound.
//
// Unsupported: Stopper (E2B has pause, not stop), PTY exec, deleting snapshots, per-sandbox CPU and
// memory limits.
package e2b
