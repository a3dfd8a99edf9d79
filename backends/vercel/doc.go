// Package vercel answers "how does moat run a sandbox on Vercel Sandbox?": a hand-written
// client of Vercel's Sandbox REST API (the v2 "named sandboxes + sessions" generation the
// official @vercel/sandbox SDK uses) behind backend.Backend, registered as "vercel".
// Sandboxes are Firecracker microVMs running Amazon Linux 2023 (package manager dnf).
//
// # Settings
//
// [backends.vercel] in moat.toml (see Config for every key):
//
//	token       Vercel access token or OIDC token     env VERCEL_TOKEN, then VERCEL_OIDC_TOKEN
//	team_id     team scope (query teamId)             env VERCEL_TEAM_ID
//	project_id  project sandboxes are created in      env VERCEL_PROJECT_ID
//	runtime     node24 (default) | node22 | node26 | python3.13; anything else is rejected
//	timeout     default lifetime when the spec has no TTL, a duration ("5m"); the
//	            deprecated timeout_ms (milliseconds) is still accepted, with a warning
//	vcpus       default vCPUs (1 or even, <= 8; 2048 MB RAM each)
//	ports       ports exposed on every sandbox
//	region      region (Vercel's default iad1)
//	persistent  create persistent sandboxes (enables Stop/Start)
//	api_url     API base URL (default https://vercel.com/api)  env VERCEL_API_URL
//
// Explicit settings win over the environment. An OIDC token's owner_id and project_id
// claims fill team_id and project_id when those are empty, as the SDK does. The token is
// sent only in the Authorization header and never appears in errors or logs.
//
// # What maps to what
//
//   - Create → POST /v2/sandboxes (runtime) or /v3/sandboxes (image, snapshot). The spec's
//     image picks a runtime (node24, ...), a managed image ("vercel/sandbox/node:24") or a
//     snapshot ("vercel-snapshot:<id>", what Snapshot returns); "" uses the configured
//     runtime. Env → env; TTL → timeout; CPU and memory limits → resources.vcpus (memory
//     is 2048 MB per vCPU, so memory is rounded up to whole vCPUs); network none →
//     networkPolicy deny-all, host → allow-all; the moat id and labels → tags (Vercel
//     allows 5: the moat id plus the first 4 labels by key; the rest are only logged).
//     The sandbox is named "moat-<id>". The workdir is made with mkdir -p.
//   - Create options (JSON, unknown keys rejected): ports, vcpus, region, persistent,
//     allow_domains (outbound network to these domains only), git {url, depth, revision}
//     or tarball (URL) as the sandbox source.
//   - Handle (version 1) holds the sandbox name, its current session id, the project and
//     the API base URL the sandbox was created on (api_url; never the token). Attach and
//     every later call of the instance use that URL, with the configured token, even when
//     api_url has changed since (or another process is configured otherwise); a handle
//     without it (written before it was recorded) uses the configured api_url. List's
//     handles name the URL they were listed from.
//   - Exec → POST /v2/sandboxes/sessions/{id}/cmd with wait and logs: an NDJSON stream of
//     the started command, stdout/stderr chunks and the finished command's exit code.
//     Cancelling ctx kills the command (POST …/cmd/{id}/kill, SIGKILL) before the stream
//     is dropped. Exit code 127 is checked with `command -v` to report a missing
//     executable as NotFound.
//   - Files: WriteFile → gzipped tar upload (fs/write); ReadFile → raw read (fs/read, 404
//     = NotFound); ListDir runs a fixed find/stat script (Vercel has no listing endpoint).
//   - Status → GET the sandbox; Destroy → DELETE it (already gone = success).
//   - Snapshotter → POST …/snapshot (which stops the session), then the sandbox is resumed
//     from that snapshot at once. PortExposer → the sandbox routes' https URLs, adding the
//     port with PATCH when needed. Stopper only for persistent sandboxes (stop, then
//     resume). Lister finds sandboxes tagged moat-id. Prober lists one sandbox.
//   - Errors keep Vercel's message: 401 and 403 with invalidToken → Unauthenticated, 403 →
//     PermissionDenied, 404 → NotFound, 409 → Conflict, 410/sandbox_stopped →
//     FailedPrecondition, 429 → ResourceExhausted, 408 → DeadlineExceeded, 5xx →
//     Unavailable, 400/422 → InvalidArgument (the shared mapping of backends/internal/restapi
//     with Vercel's 410 and 504 on top). Retries follow restapi's one policy: 429 and failed
//     dials for every call, 5xx and other connection errors for idempotent ones, with
//     exponential backoff, jitter and Retry-After (a longer one than 30 s ends the call),
//     bounded by ctx and Client.Policy.MaxAttempts.
//
// # Unsupported
//
// Stdin is not streamed: Vercel's command API has no stdin, so Exec reads Stdin to its end,
// uploads it to a temporary file and redirects the command's input from it. Output chunks
// are JSON text on the wire, so bytes that are not valid UTF-8 do not survive Exec output
// (files do: they travel raw). No pause/resume, no PTY, no PID or disk limits.
//
// The fake server in vercelfake speaks the same wire format and runs commands through a
// local moat backend; its sdktest directory drives it with the official SDK.
package vercel
