// Drives daytonafake with the official Daytona TypeScript SDK (@daytonaio/sdk). Exits
// non-zero on the first mismatch. Env: DAYTONA_API_URL (the fake's URL + "/api"),
// DAYTONA_API_KEY.
import { Daytona, DaytonaNotFoundError } from '@daytonaio/sdk'

function check(cond, what, got) {
  if (!cond) {
    console.error(`contract: FAIL ${what}: got ${JSON.stringify(got)}`)
    process.exit(1)
  }
  console.log(`contract: ok ${what}`)
}

const apiUrl = process.env.DAYTONA_API_URL
const apiKey = process.env.DAYTONA_API_KEY
if (!apiUrl || !apiKey) {
  console.error('contract: DAYTONA_API_URL and DAYTONA_API_KEY must be set')
  process.exit(2)
}

const daytona = new Daytona({ apiKey, apiUrl, target: 'us' })
const tag = Math.random().toString(36).slice(2, 10)

const sandbox = await daytona.create(
  { language: 'python', envVars: { CONTRACT_VAR: 'from-env' }, labels: { suite: 'contract' } },
  { timeout: 60 },
)
check(sandbox.state === 'started', 'create waits until started', sandbox.state)
check(sandbox.labels.suite === 'contract', 'labels round-trip', sandbox.labels)

const r = await sandbox.process.executeCommand('echo hello-$CONTRACT_VAR')
check(r.exitCode === 0 && r.result === 'hello-from-env\n', 'executeCommand output and exit code', r)

const bad = await sandbox.process.executeCommand('sh -c "echo to-stderr >&2; exit 3"')
check(bad.exitCode === 3 && bad.result === 'to-stderr\n', 'executeCommand exit code and merged stderr', bad)

await sandbox.process.createSession('contract-' + tag)
const sr = await sandbox.process.executeSessionCommand('contract-' + tag, { command: 'echo out; echo err >&2' })
check(sr.exitCode === 0 && sr.stdout === 'out\n' && sr.stderr === 'err\n', 'session exec splits stdout/stderr', sr)
await sandbox.process.deleteSession('contract-' + tag)

const dir = `/tmp/sdk-contract-${tag}`
const payload = Buffer.from(`contract data é ${tag}\n\u0000binary`)
await sandbox.fs.uploadFile(payload, `${dir}/nested/file.txt`)
const back = await sandbox.fs.downloadFile(`${dir}/nested/file.txt`)
check(Buffer.compare(Buffer.from(back), payload) === 0, 'upload then download returns the bytes', back.toString())

const listed = await sandbox.fs.listFiles(`${dir}/nested`)
check(listed.length === 1 && listed[0].name === 'file.txt' && listed[0].size === payload.length, 'listFiles', listed)

let missing = null
try {
  await sandbox.fs.downloadFile(`${dir}/no-such-file`)
} catch (e) {
  missing = e
}
check(missing !== null, 'download of a missing file fails', String(missing))
await sandbox.fs.deleteFile(dir, true)

const again = await daytona.get(sandbox.id)
check(again.id === sandbox.id && again.state === 'started', 'get by id', again.state)

await sandbox.delete()
let gone = null
try {
  await daytona.get(sandbox.id)
} catch (e) {
  gone = e
}
check(gone instanceof DaytonaNotFoundError, 'get after delete is DaytonaNotFoundError', String(gone))

console.log('contract: all ok')
process.exit(0)
