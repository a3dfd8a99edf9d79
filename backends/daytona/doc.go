// Package daytona answers "how does moat run sandboxes on Daytona?": the "daytona" backend,
// a hand-written client (net/http, no SDK) for Daytona's platform API and the per-sandbox
// toolbox API, checked against @daytonaio/sdk 0.218.0 (see daytonafake/sdktest).
//
// # Settings ([backends.daytona] in moat.toml; explicit config beats the environment)
//
//	token              DAYTONA_API_KEY, then DAYTONA_JWT_TOKEN   Bearer token; never logged
//	                   (api_key: deprecated alias, logs a warning)
//	api_url            DAYTONA_API_URL (DAYTONA_SERVER_URL)      default https://app.daytona.io/api
//	organization_id    DAYTONA_ORGANIZATION_ID                   only with a JWT
//	target             DAYTONA_TARGET                            region ("us", "eu")
//	snapshot, user, auto_stop_minutes, start_timeout ("2m"), max_attempts (5)
//
// Probe is Unavailable "daytona: no API key configured (set DAYTONA_API_KEY or
// [backends.daytona] token)" without a key, else it lists one sandbox (5 s timeout):
// Unavailable with the provider's message on 401/403/5xx/connection errors, Degraded on 429.
//
// # What maps to what
//
//   - Create: POST /sandbox, then poll GET /sandbox/{id} until "started". Image "" uses the
//     configured (or platform default) snapshot; "snapshot:NAME" starts from a Daytona
//     snapshot; any other image is built declaratively (buildInfo "FROM image"). Env → env,
//     Labels → labels plus moat.managed=true and moat.id=<moat id> (for List), Limits →
//     cpu (ceil vCPUs), memory and disk (ceil GB), Network none → networkBlockAll, TTL →
//     ttlMinutes (Daytona deletes the sandbox then). Workdir is created through the toolbox.
//     A sandbox that fails to start is deleted.
//   - Options (CreateRequest.Options, unknown keys are InvalidArgument): snapshot, image,
//     env_vars, labels, public, ephemeral (autoDeleteInterval 0), auto_stop_interval,
//     auto_archive_interval, auto_delete_interval (minutes), user, volumes [{volume_id,
//     mount_path, subpath}], resources {cpu, memory, disk} (GB), target.
//   - Handle: version 1, state {"id", "toolbox_proxy_url", "api_url"}, never the token;
//     Attach re-reads the sandbox (NotFound when gone or destroyed). api_url is the platform
//     API the sandbox was created on (or listed from): Attach and every later call of the
//     instance use it, with the configured token, even when api_url has changed since (or
//     another process is configured otherwise); a handle without it (written before it
//     was recorded) uses the configured api_url.
//   - Exec: one toolbox session per exec (POST /process/session, async
//     /process/session/{sid}/exec, polling the command and its split logs, then DELETE of
//     the session). The argv, env and workdir travel base64-encoded into a fixed wrapper
//     script, never through a shell; the wrapper base64-encodes stdout and stderr so output is
//     byte-exact (the daemon's line labeler is not) and streams while the command runs (at
//     the poll interval, 10 ms growing to 500 ms). Stdin is read to EOF first and uploaded
//     to /tmp/.moat-exec/<session>/stdin. Cancelling ctx deletes the session: the daemon
//     kills its process group. A missing executable is NotFound. The toolbox returns a
//     command's whole log on every poll, so one Exec returns at most about 96 MiB of output
//     (a 128 MiB base64 log answer); more is ResourceExhausted. The sandbox image needs
//     sh, base64, dd, mkfifo (every Daytona snapshot, busybox and Debian have them).
//   - Files: WriteFile = POST /files/bulk-upload + POST /files/permissions; ReadFile = POST
//     /files/bulk-download (multipart answer); ListDir = GET /files.
//   - Status: started → running, stopped/archived/error → stopped, paused → paused, 404 or
//     destroyed → gone. Destroy = DELETE /sandbox/{id}; already gone is success.
//   - Stopper (stop/start), Snapshotter (POST /sandbox/{id}/snapshot; the image is
//     "snapshot:NAME"), PortExposer (signed preview URL valid for an hour, works for
//     private sandboxes), Lister (label moat.managed=true, cursor pagination), Prober.
//
// Errors keep the provider's message and carry errdefs kinds: 401 Unauthenticated, 403
// PermissionDenied, 404/410 NotFound, 409 Conflict, 429 ResourceExhausted, 400/422
// InvalidArgument, 408/504 DeadlineExceeded, 5xx Unavailable; an HTML or garbage body is
// quoted (64-byte prefix). Retries follow restapi's one policy: idempotent calls retry on
// 429, 5xx and connection errors with exponential backoff and jitter, honouring Retry-After
// up to 2 minutes (a longer one ends the call), bounded by ctx and max_attempts; creates
// and execs retry only on 429 and failed dials.
//
// Not supported: Pauser (Daytona's pause is limited to VM-class sandboxes), PTY, the
// socket.io event stream (the client polls, as the SDK does without it), interactive stdin.
package daytona
