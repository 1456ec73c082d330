/**
 * Issue 16: secret hygiene end to end. The CLI runs its representative flows with `--debug` (stack
 * traces and the daemon's per-event lines on) against the real test IdP (oidc-provider), mosquitto
 * with a subscriber recording every message on every topic, and the reference API: login (approved
 * by the headless user, relayed over MQTT), token, token --force-refresh, token --json, status,
 * send, upload (with one 401 that forces a refresh), run (a reading uploaded and a renewal), logout,
 * and token after logout (an error path). Then every secret the IdP's own records say it issued
 * (access tokens, refresh tokens, id_tokens, device codes) is looked for in every stdout and
 * stderr, every MQTT topic and payload, and every byte of every file under the device's
 * directories (state, home, config). The only place a secret may appear is the stdout of `token`,
 * which exists to print the access token it printed.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import mqtt from 'mqtt'
import { startTestApi, type TestApi } from '../support/api.js'
import { type CliResult, collect, newTestDevice, spawnCli, type TestDevice } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'
import { type Recorder, startRecorder } from '../support/mqtt-recorder.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000

/** One CLI run's output, and the secret its stdout is meant to carry (the printed access token). */
interface Captured {
  what: string
  result: CliResult
  printed?: string
}

/** The ways a secret could leak: whole, or (for a JWT) its signature, or an opaque token's start. */
function fragments(secret: string): string[] {
  const parts = secret.split('.')
  if (parts.length === 3) {
    // A JWT's header and payload are shared or guessable; its signature is what is secret.
    return [secret, parts[2] as string].filter((f) => f.length >= 16)
  }
  return [secret, secret.slice(0, 24)].filter((f) => f.length >= 16)
}

function walkFiles(dir: string): string[] {
  const out: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...walkFiles(path))
    else if (entry.isFile()) out.push(path)
  }
  return out
}

/** Runs the CLI with `--debug` and keeps what it printed. */
async function cli(
  captured: Captured[],
  device: TestDevice,
  args: readonly string[],
  options: { stdin?: string } = {},
): Promise<CliResult> {
  const child = spawnCli([...args, '--debug'], { env: device.env })
  const result = await collect(child, { timeoutMs: TIMEOUT_MS, stdin: options.stdin })
  captured.push({ what: args.join(' '), result })
  return result
}

/** Reads NDJSON events from a running child's stdout as they arrive. */
function eventsOf(child: ReturnType<typeof spawnCli>): Record<string, unknown>[] {
  const events: Record<string, unknown>[] = []
  let buffered = ''
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString('utf8')
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim()) events.push(JSON.parse(line) as Record<string, unknown>)
    }
  })
  return events
}

async function until(
  predicate: () => boolean,
  what: string,
  timeoutMs: number,
  context = () => '',
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('issue 16: secret hygiene end to end (--debug)', { timeout: 180_000 }, () => {
  let idp: TestIdp
  let api: TestApi
  let broker: TestBroker
  let recorder: Recorder
  let root: string

  before(async () => {
    // 12 s access tokens: the daemon renews within a few seconds.
    idp = await startTestIdp({ accessTokenTtlSeconds: 12, interval: 1 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    broker = await startBroker()
    // Every topic: the relay's, the daemon's status, readings, and anything else published.
    recorder = await startRecorder(broker, '#', broker.kind === 'mosquitto' ? { protocolVersion: 5 } : {})
    root = mkdtempSync(join(tmpdir(), 'edgetoken-hygiene-'))
  })
  after(async () => {
    await recorder?.close()
    await broker?.close()
    await api?.close()
    await idp?.close()
    if (root) rmSync(root, { recursive: true, force: true })
  })

  test('issue 16: no issued token, refresh token, id_token or device code in any output, MQTT message or file', async () => {
    const device = newTestDevice(root, {
      issuer: idp.issuer,
      scopes: SCOPES,
      extra: {
        EDGETOKEN_MQTT_URL: broker.url,
        EDGETOKEN_TELEMETRY_ENDPOINT: api.url,
        EDGETOKEN_TELEMETRY_LINGER_MS: '100',
      },
    })
    const deviceId = device.env.EDGETOKEN_DEVICE_ID
    const captured: Captured[] = []

    // login, relayed to the companion display over MQTT.
    const login = spawnCli(['login', '--json', '--display', 'console,qr,mqtt', '--debug'], {
      env: device.env,
    })
    const loginEvents = eventsOf(login)
    const loginDone = collect(login, { timeoutMs: TIMEOUT_MS })
    await until(() => loginEvents.length > 0, 'the device_code event', 30_000)
    await approveDevice(idp.issuer, String(loginEvents[0]?.user_code))
    const loggedIn = await loginDone
    captured.push({ what: 'login', result: loggedIn })
    assert.equal(loggedIn.code, 0, loggedIn.stderr)

    const token = await cli(captured, device, ['token'])
    assert.equal(token.code, 0, token.stderr)
    ;(captured.at(-1) as Captured).printed = token.stdout.trim()
    const forced = await cli(captured, device, ['token', '--force-refresh'])
    assert.equal(forced.code, 0, forced.stderr)
    ;(captured.at(-1) as Captured).printed = forced.stdout.trim()
    assert.notEqual(forced.stdout, token.stdout, 'a forced refresh prints a new token')
    const json = await cli(captured, device, ['token', '--json'])
    assert.equal(json.code, 0, json.stderr)
    ;(captured.at(-1) as Captured).printed = String(
      (JSON.parse(json.stdout) as { access_token: string }).access_token,
    )
    const status = await cli(captured, device, ['status', '--json'])
    assert.equal(status.code, 0, status.stderr)

    const records = Array.from({ length: 5 }, (_, i) => JSON.stringify({ sensor: 's1', seq: i })).join('\n')
    const sent = await cli(captured, device, ['send'], { stdin: `${records}\n` })
    assert.equal(sent.code, 0, sent.stderr)
    // One stray 401: the uploader refreshes once and sends again.
    await api.setMode('unauthorized-once')
    const refreshesBefore = idp.refreshes
    const upload = await cli(captured, device, ['upload'])
    assert.equal(upload.code, 0, upload.stderr)
    assert.ok(idp.refreshes > refreshesBefore, 'the 401 made the uploader refresh')

    // The daemon: a reading over MQTT uploaded, and a renewal of the 12 s token.
    const run = spawnCli(['run', '--json', '--debug'], { env: device.env })
    const runEvents = eventsOf(run)
    const runDone = collect(run, { timeoutMs: TIMEOUT_MS })
    let runStderr = ''
    run.stderr?.on('data', (d: Buffer) => {
      runStderr += d.toString('utf8')
    })
    try {
      await until(
        () => runEvents.some((e) => e.event === 'ready'),
        'the daemon ready',
        30_000,
        () => runStderr,
      )
      const delivered = api.receiver.batches.length
      const sensor = await mqtt.connectAsync(broker.url, clientOptions(broker))
      await sensor.publishAsync(`edgetoken/${deviceId}/readings`, JSON.stringify({ sensor: 's2', t: 21.5 }), {
        qos: 1,
      })
      await sensor.endAsync()
      await until(
        () => api.receiver.batches.length > delivered,
        'the reading at the API',
        30_000,
        () => runStderr,
      )
      await until(
        () => runEvents.some((e) => e.event === 'renewed'),
        'a renewal',
        30_000,
        () => runStderr,
      )
    } finally {
      run.kill('SIGTERM')
    }
    const ran = await runDone
    captured.push({ what: 'run', result: ran })
    assert.equal(ran.code, 0, ran.stderr)
    assert.match(ran.stderr, /renewed the access token/, '--debug turned the per-event lines on')

    const logout = await cli(captured, device, ['logout'])
    assert.equal(logout.code, 0, logout.stderr)
    // An error path with --debug (stack traces allowed): signed out, so sign-in is required.
    const afterLogout = await cli(captured, device, ['token'])
    assert.equal(afterLogout.code, 3, afterLogout.stderr)
    await recorder.settle()

    // The IdP's own records: what it issued during these flows.
    const { accessTokens, refreshTokens, idTokens, deviceCodes } = idp.issued
    assert.ok(
      deviceCodes.length >= 1 &&
        refreshTokens.length >= 3 &&
        accessTokens.length >= 3 &&
        idTokens.length >= 1,
    )
    const secrets = [
      ...accessTokens.map((s) => ({ kind: 'access token', s })),
      ...refreshTokens.map((s) => ({ kind: 'refresh token', s })),
      ...idTokens.map((s) => ({ kind: 'id_token', s })),
      ...deviceCodes.map((s) => ({ kind: 'device code', s })),
    ]
    const leaks: string[] = []
    const scan = (where: string, haystack: string | Buffer, allowed?: string) => {
      for (const { kind, s } of secrets) {
        for (const fragment of fragments(s)) {
          if (allowed !== undefined && (allowed === s || allowed.includes(fragment))) continue
          if (haystack.includes(fragment)) leaks.push(`${kind} in ${where}`)
        }
      }
    }
    // The scan itself: a planted refresh token, or the start of one, is found. Each plant is
    // checked on its own: a whole token also contains its start, so it matches twice.
    scan('a planted whole token', `x${refreshTokens[0]}y`)
    scan('a planted token start', `…${(refreshTokens[0] as string).slice(0, 24)}…`)
    assert.deepEqual(
      [...new Set(leaks)],
      ['refresh token in a planted whole token', 'refresh token in a planted token start'],
      'the scan finds a planted secret, whole or its start',
    )
    leaks.length = 0
    for (const { what, result, printed } of captured) {
      assert.ok(
        result.stdout.length + result.stderr.length > 0 || what === 'logout',
        `${what} printed nothing`,
      )
      if (printed !== undefined) {
        // `token` prints its access token and nothing else on stdout.
        assert.ok(accessTokens.includes(printed), `${what} printed an access token the IdP issued`)
        assert.equal(result.stdout.includes(printed), true)
        scan(`the stdout of ${what}`, result.stdout.split(printed).join(''))
      } else {
        scan(`the stdout of ${what}`, result.stdout)
      }
      scan(`the stderr of ${what}`, result.stderr)
    }
    assert.ok(recorder.messages.length > 0, 'the recorder saw the relay and the daemon')
    for (const m of recorder.messages)
      scan(`the MQTT message on ${m.topic}`, Buffer.concat([Buffer.from(m.topic), m.payload]))
    const deviceDir = dirname(device.stateDir)
    const files = walkFiles(deviceDir)
    assert.ok(
      files.some((f) => f.startsWith(device.stateDir)),
      'the state directory holds files',
    )
    for (const file of files) {
      if (statSync(file).size > 64 * 1024 * 1024) continue
      scan(`the file ${file.slice(deviceDir.length + 1)}`, readFileSync(file))
    }
    assert.deepEqual([...new Set(leaks)], [], 'secrets leaked')
  })
})
