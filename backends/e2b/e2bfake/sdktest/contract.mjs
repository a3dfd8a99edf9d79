// Contract test: the official e2b JS SDK, pointed at the e2bfake server, must be able to
// create a sandbox, run commands, move files and kill the sandbox. Run by TestOfficialSDK
// with E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL set to the fake; exits non-zero on any
// mismatch.
import { Sandbox, CommandExitError } from 'e2b'

for (const k of ['E2B_API_KEY', 'E2B_API_URL', 'E2B_SANDBOX_URL']) {
  if (!process.env[k]) {
    console.error(`contract: ${k} is not set`)
    process.exit(2)
  }
}

let failures = 0
function check(cond, what, got) {
  if (cond) {
    console.log(`ok   ${what}`)
  } else {
    failures++
    console.error(`FAIL ${what}: got ${JSON.stringify(got)}`)
  }
}

const sbx = await Sandbox.create({ timeoutMs: 120_000, metadata: { suite: 'sdk-contract' } })
check(typeof sbx.sandboxId === 'string' && sbx.sandboxId.length > 0, 'create returns a sandbox id', sbx.sandboxId)

try {
  const r = await sbx.commands.run('echo hello; echo oops >&2; printf "%s" "$FOO"', { envs: { FOO: 'bar' } })
  check(r.exitCode === 0, 'command exit code 0', r.exitCode)
  check(r.stdout === 'hello\nbar', 'command stdout', r.stdout)
  check(r.stderr === 'oops\n', 'command stderr', r.stderr)

  const streamed = []
  await sbx.commands.run('printf a; printf b >&2', { onStdout: (d) => streamed.push(`out:${d}`), onStderr: (d) => streamed.push(`err:${d}`) })
  check(streamed.includes('out:a') && streamed.includes('err:b'), 'output callbacks', streamed)

  try {
    await sbx.commands.run('echo failing >&2; exit 3')
    check(false, 'non-zero exit throws CommandExitError', 'no error')
  } catch (e) {
    check(e instanceof CommandExitError && e.exitCode === 3 && e.stderr === 'failing\n', 'non-zero exit throws CommandExitError', { name: e.name, exitCode: e.exitCode, stderr: e.stderr, message: e.message })
  }

  const bg = await sbx.commands.run('sleep 30', { background: true })
  check(typeof bg.pid === 'number' && bg.pid > 0, 'background command has a pid', bg.pid)
  const killed = await bg.kill()
  check(killed === true, 'kill a background command', killed)
  try {
    await bg.wait()
    check(false, 'killed command does not exit 0', 'exit 0')
  } catch (e) {
    check(e instanceof CommandExitError, 'killed command ends with CommandExitError', { name: e.name, message: e.message })
  }

  const withStdin = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(withStdin.pid, 'fed through stdin')
  await sbx.commands.closeStdin(withStdin.pid)
  const catted = await withStdin.wait()
  check(catted.stdout === 'fed through stdin', 'stdin round trip', catted.stdout)

  const info = await sbx.files.write('/tmp/sdk-contract/dir/hello.txt', 'hi there ✓')
  check(info.path === '/tmp/sdk-contract/dir/hello.txt' && info.name === 'hello.txt', 'write returns entry info', info)
  const back = await sbx.files.read('/tmp/sdk-contract/dir/hello.txt')
  check(back === 'hi there ✓', 'read back text', back)
  const bytes = new Uint8Array([0, 1, 2, 255, 254])
  await sbx.files.write('/tmp/sdk-contract/bin', bytes.buffer)
  const bin = await sbx.files.read('/tmp/sdk-contract/bin', { format: 'bytes' })
  check(Buffer.from(bin).equals(Buffer.from(bytes)), 'binary round trip', Array.from(bin))

  const entries = await sbx.files.list('/tmp/sdk-contract')
  const names = entries.map((e) => `${e.name}:${e.type}`).sort()
  check(JSON.stringify(names) === JSON.stringify(['bin:file', 'dir:dir']), 'list directory', names)
  check(await sbx.files.exists('/tmp/sdk-contract/dir/hello.txt'), 'exists', false)
  check(!(await sbx.files.exists('/tmp/sdk-contract/nope')), 'not exists', true)
  try {
    await sbx.files.read('/tmp/sdk-contract/nope')
    check(false, 'reading a missing file fails', 'no error')
  } catch (e) {
    check(e.name === 'FileNotFoundError', 'reading a missing file is FileNotFoundError (404)', { name: e.name, message: e.message })
  }

  const got = await Sandbox.getInfo(sbx.sandboxId)
  check(got.state === 'running' && got.metadata.suite === 'sdk-contract', 'getInfo', got)
  const same = await Sandbox.connect(sbx.sandboxId)
  const r2 = await same.commands.run('echo reconnected')
  check(r2.stdout === 'reconnected\n', 'connect by id and run', r2.stdout)

  const page = await Sandbox.list({ query: { metadata: { suite: 'sdk-contract' } } }).nextItems()
  check(page.some((s) => s.sandboxId === sbx.sandboxId), 'list by metadata', page.map((s) => s.sandboxId))
} finally {
  const killed = await sbx.kill()
  check(killed === undefined || killed === true || killed === false, 'kill', killed)
}
check((await Sandbox.kill(sbx.sandboxId)) === false, 'killing again reports not found', true)
try {
  await sbx.commands.run('true')
  check(false, 'commands on a killed sandbox fail', 'no error')
} catch (e) {
  check(true, `commands on a killed sandbox fail (${e.name})`, e.name)
}

if (failures > 0) {
  console.error(`${failures} check(s) failed`)
  process.exit(1)
}
console.log('contract: all checks passed')
