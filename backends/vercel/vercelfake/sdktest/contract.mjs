// Drives the vercelfake server with the official @vercel/sandbox SDK and exits non-zero on
// any mismatch. The SDK has no base-URL setting: it takes a `fetch` option (documented
// WithFetchOptions), so requests to its fixed https://vercel.com/api base are re-targeted
// to VERCEL_FAKE_URL here and nothing else is changed.
//
// Env: VERCEL_FAKE_URL (the fake's base, e.g. http://127.0.0.1:1234/api), VERCEL_TOKEN,
// VERCEL_TEAM_ID, VERCEL_PROJECT_ID.
import { Sandbox } from "@vercel/sandbox";

const SDK_BASE = "https://vercel.com/api";
const { VERCEL_FAKE_URL, VERCEL_TOKEN, VERCEL_TEAM_ID, VERCEL_PROJECT_ID } = process.env;
for (const [k, v] of Object.entries({ VERCEL_FAKE_URL, VERCEL_TOKEN, VERCEL_TEAM_ID, VERCEL_PROJECT_ID })) {
  if (!v) {
    console.error(`contract: ${k} is not set`);
    process.exit(2);
  }
}

const fakeFetch = (input, init) => {
  const url = typeof input === "string" ? input : input instanceof URL ? input.toString() : input.url;
  if (!url.startsWith(SDK_BASE)) {
    throw new Error(`contract: SDK called an unexpected URL ${url}`);
  }
  return fetch(VERCEL_FAKE_URL + url.slice(SDK_BASE.length), init);
};

const creds = { token: VERCEL_TOKEN, teamId: VERCEL_TEAM_ID, projectId: VERCEL_PROJECT_ID, fetch: fakeFetch };
let failures = 0;
function check(cond, what, got) {
  if (cond) {
    console.log(`ok   ${what}`);
  } else {
    failures++;
    console.error(`FAIL ${what}: got ${JSON.stringify(got)}`);
  }
}

const name = `contract-${process.pid}-${Date.now()}`;
const sandbox = await Sandbox.create({ ...creds, name, runtime: "node24", timeout: 120_000, ports: [3000] });
try {
  check(sandbox.name === name, "create: sandbox name", sandbox.name);
  check(sandbox.status === "running", "create: status running", sandbox.status);
  check(sandbox.domain(3000).startsWith("https://"), "create: route for port 3000", sandbox.domain(3000));

  // A waited command: exit code and separated output through the NDJSON stream.
  const cmd = await sandbox.runCommand("sh", ["-c", "echo hello; echo oops >&2; exit 3"]);
  check(cmd.exitCode === 3, "runCommand: exit code", cmd.exitCode);
  check((await cmd.stdout()) === "hello\n", "runCommand: stdout", await cmd.stdout());
  check((await cmd.stderr()) === "oops\n", "runCommand: stderr", await cmd.stderr());

  // Env and cwd reach the command.
  const envCmd = await sandbox.runCommand({ cmd: "sh", args: ["-c", 'printf %s "$GREETING"'], env: { GREETING: "hi ✓" } });
  check((await envCmd.stdout()) === "hi ✓", "runCommand: env", await envCmd.stdout());

  // Files: a gzipped tar upload, then a raw read; relative paths land in the session cwd.
  const content = Buffer.from([0, 1, 2, 255, 254, 10, ..."contents ✓\n"].map((c) => (typeof c === "string" ? c.charCodeAt(0) : c)));
  await sandbox.writeFiles([{ path: "contract/hello.bin", content }]);
  const back = await sandbox.readFileToBuffer({ path: "contract/hello.bin" });
  check(back !== null && Buffer.compare(back, content) === 0, "writeFiles/readFileToBuffer: same bytes", back && [...back]);
  const cat = await sandbox.runCommand("cat", ["contract/hello.bin"]);
  check((await cat.stdout()).length > 0 && cat.exitCode === 0, "written file visible to commands", cat.exitCode);
  const missing = await sandbox.readFileToBuffer({ path: "contract/no-such-file" });
  check(missing === null, "readFileToBuffer: missing file is null", missing);

  // A detached command, its log stream, kill and wait.
  const detached = await sandbox.runCommand({ cmd: "sh", args: ["-c", "echo tick; sleep 30"], detached: true });
  check(typeof detached.cmdId === "string" && detached.cmdId.length > 0, "detached: command id", detached.cmdId);
  for await (const log of detached.logs()) {
    check(log.stream === "stdout" && log.data === "tick\n", "detached: first log line", log);
    break;
  }
  await detached.kill("SIGKILL");
  const finished = await detached.wait();
  check(finished.exitCode !== 0, "kill + wait: non-zero exit code", finished.exitCode);

  // Get by name sees the same sandbox.
  const again = await Sandbox.get({ ...creds, name });
  check(again.name === name, "get: same sandbox", again.name);

  await sandbox.stop();
  check(sandbox.status === "stopped", "stop: status stopped", sandbox.status);
} finally {
  await sandbox.delete();
}

let gone = false;
try {
  await Sandbox.get({ ...creds, name });
} catch (err) {
  gone = err?.response?.status === 404;
  if (!gone) console.error(err);
}
check(gone, "delete: get answers 404", gone);

if (failures > 0) {
  console.error(`contract: ${failures} check(s) failed`);
  process.exit(1);
}
console.log("contract: all checks passed");
