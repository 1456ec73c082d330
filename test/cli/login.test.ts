/**
 * `edgetoken login` end to end: the CLI as a child process against the real test IdP, with the
 * user's side played by the headless user, and the MQTT relay against a real broker.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type CliResult, collect, newTestDevice, runCli, spawnCli } from '../support/cli.js'
import { approveDevice, denyDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { freePort, startBroker } from '../support/mosquitto.js'
import { startRecorder } from '../support/mqtt-recorder.js'
import { closeServer, listen } from '../support/net.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-cli-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000

function deviceEnv(issuer: string, extra: Record<string, string> = {}): Record<string, string> {
  return newTestDevice(root, { issuer, scopes: SCOPES, extra }).env
}

interface Running {
  child: ChildProcess
  done: Promise<CliResult>
  /** The first NDJSON event on stdout. */
  first: Promise<Record<string, unknown>>
}

function startLogin(args: readonly string[], env: Record<string, string>): Running {
  const child = spawnCli(['login', ...args], { env })
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = ''
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString('utf8')
      const newline = buffered.indexOf('\n')
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>)
    })
    child.once('close', () => reject(new Error('login exited before its first event')))
  })
  // collect() attaches its own listeners; both see every chunk.
  const done = collect(child, { timeoutMs: TIMEOUT_MS })
  first.catch(() => {})
  return { child, done, first }
}

function events(result: CliResult): Record<string, unknown>[] {
  const lines = result.stdout.split('\n').filter((l) => l.length > 0)
  // --json: stdout carries only NDJSON.
  return lines.map((line) => {
    try {
      return JSON.parse(line) as Record<string, unknown>
    } catch {
      throw new Error(`stdout line is not JSON: ${line}\nstderr: ${result.stderr}`)
    }
  })
}

function assertNoSecrets(idp: TestIdp, text: string) {
  const { deviceCodes, accessTokens, refreshTokens, idTokens } = idp.issued
  for (const secret of [...deviceCodes, ...accessTokens, ...refreshTokens, ...idTokens]) {
    assert.ok(!text.includes(secret), 'a secret leaked into the output')
  }
}

describe('edgetoken login', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1 })
  })
  after(() => idp.close())

  test('approve: device_code event, then signed_in; exit 0; the token command finds the tokens', async () => {
    const env = deviceEnv(idp.issuer)
    const run = startLogin(['--json', '--display', 'console,qr'], env)
    const first = await run.first
    assert.equal(first.event, 'device_code')
    assert.equal(typeof first.user_code, 'string')
    assert.match(String(first.verification_uri), /^http:\/\/127\.0\.0\.1:\d+\/device$/)
    assert.match(String(first.expires_at), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    assert.deepEqual(
      Object.keys(first).filter(
        (k) =>
          !['event', 'user_code', 'verification_uri', 'verification_uri_complete', 'expires_at'].includes(k),
      ),
      [],
    )
    await approveDevice(idp.issuer, String(first.user_code), { login: 'alice' })
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
    const all = events(result)
    assert.equal(all.length, 2)
    assert.deepEqual(all[1], { event: 'signed_in', account: { id: 'alice', username: 'alice' } })
    // Human text and the QR code went to stderr.
    assert.ok(result.stderr.includes(String(first.user_code)), 'the code is printed as text on stderr')
    assert.match(result.stderr, /[▀▄█]/)
    assert.match(result.stderr, /Signed in/)
    assertNoSecrets(idp, result.stdout + result.stderr)

    const token = await runCli(['token'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(token.code, 0, token.stderr)
    assert.ok(
      idp.issued.accessTokens.includes(token.stdout.trim()),
      'token prints the access token from the login',
    )
  })

  test('without --json the human text goes to stdout; --display none shows nothing', async () => {
    const env = deviceEnv(idp.issuer)
    const child = spawnCli(['login', '--display', 'console'], { env })
    let out = ''
    const code = new Promise<string>((resolve) => {
      child.stdout?.on('data', (b: Buffer) => {
        out += b.toString('utf8')
        const m = /enter the code:\s+(\S+)/.exec(out)
        if (m?.[1]) resolve(m[1])
      })
    })
    const done = collect(child, { timeoutMs: TIMEOUT_MS })
    await approveDevice(idp.issuer, await code)
    const result = await done
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /Signed in as device-user\./)
    assert.doesNotMatch(result.stdout, /^\{/m)
    // biome-ignore lint/suspicious/noControlCharactersInRegex: no ANSI when piped
    assert.doesNotMatch(result.stdout, /\u001b\[/)

    const silent = startLogin(['--json', '--display', 'none'], deviceEnv(idp.issuer))
    await approveDevice(idp.issuer, String((await silent.first).user_code))
    const r = await silent.done
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '')
  })

  for (const at of ['consent', 'confirm'] as const) {
    test(`deny at ${at}: exit 4, error code denied`, async () => {
      const run = startLogin(['--json', '--display', 'none'], deviceEnv(idp.issuer))
      await denyDevice(idp.issuer, String((await run.first).user_code), at)
      const result = await run.done
      assert.equal(result.code, 4, result.stderr)
      const last = events(result).at(-1)
      assert.equal(last?.event, 'error')
      assert.equal(last?.code, 'denied')
    })
  }

  test('SIGINT: exit 4, error code cancelled', async () => {
    const run = startLogin(['--json', '--display', 'console'], deviceEnv(idp.issuer))
    await run.first
    run.child.kill('SIGINT')
    const result = await run.done
    assert.equal(result.code, 4, result.stderr)
    const last = events(result).at(-1)
    assert.equal(last?.event, 'error')
    assert.equal(last?.code, 'cancelled')
    assert.match(result.stderr, /Sign-in cancelled/)
  })

  test('--timeout-seconds: exit 4, error code expired', async () => {
    const result = await runCli(['login', '--json', '--display', 'none', '--timeout-seconds', '2'], {
      env: deviceEnv(idp.issuer),
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 4, result.stderr)
    const last = events(result).at(-1)
    assert.equal(last?.code, 'expired')
    assert.match(String(last?.message), /no approval within 2 seconds/)
  })

  test('approved, but the tokens cannot be saved: the displays say the sign-in failed, not cancelled', async () => {
    const env = deviceEnv(idp.issuer)
    const run = startLogin(['--json', '--display', 'console'], env)
    const first = await run.first
    // The store opened fine (and may already hold the pending sign-in, kept for a resume); now its
    // file's place is taken by a directory: the save fails.
    const storeFile = join(env.EDGETOKEN_STATE_DIR ?? '', 'tokens.store')
    rmSync(storeFile, { force: true })
    mkdirSync(storeFile)
    await approveDevice(idp.issuer, String(first.user_code))
    const result = await run.done
    // The store's place is unusable (EISDIR): exit 6, not a denial, expiry or cancellation (4).
    assert.equal(result.code, 6, result.stderr)
    assert.equal(events(result).at(-1)?.event, 'error')
    assert.equal(events(result).at(-1)?.code, 'store')
    assert.match(result.stderr, /Sign-in failed \(.+\)\./)
    assert.doesNotMatch(result.stderr, /cancelled/i)
  })

  test('http authority to a non-loopback host: exit 2, code config', async () => {
    const result = await runCli(['login', '--json'], {
      env: deviceEnv('http://idp.example.com'),
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 2)
    const all = events(result)
    assert.equal(all.length, 1)
    assert.equal(all[0]?.code, 'config')
    assert.match(
      String(all[0]?.message),
      /^config: EDGETOKEN_AUTHORITY must be an https:\/\/ URL \(http:\/\/ only for loopback hosts\)$/,
    )
  })

  test('missing client id: exit 2 naming the key', async () => {
    const env = deviceEnv(idp.issuer)
    const result = await runCli(['login', '--json'], {
      env: { ...env, EDGETOKEN_CLIENT_ID: '' },
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 2)
    assert.match(result.stderr, /clientId is not set/)
  })
})

describe('edgetoken login: expiry and hostile IdPs', () => {
  test('the code expires (short TTL): exit 4, error code expired', async (t) => {
    const idp = await startTestIdp({ interval: 1, deviceCodeTtlSeconds: 3 })
    t.after(() => idp.close())
    const result = await runCli(['login', '--json', '--display', 'console'], {
      env: deviceEnv(idp.issuer),
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 4, result.stderr)
    const last = events(result).at(-1)
    assert.equal(last?.event, 'error')
    assert.equal(last?.code, 'expired')
    assert.match(result.stderr, /The code expired/)
  })

  test('an HTML page at discovery: exit 5', async (t) => {
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end('<html><body>Welcome to the hotel Wi-Fi</body></html>')
    })
    const port = await listen(server)
    t.after(() => closeServer(server))
    const result = await runCli(['login', '--json'], {
      env: deviceEnv(`http://127.0.0.1:${port}`),
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 5, result.stderr)
    assert.equal(events(result).at(-1)?.code, 'unavailable')
  })

  test('an unreachable IdP: exit 5', async () => {
    const port = await freePort()
    const result = await runCli(['login', '--json'], {
      env: deviceEnv(`http://127.0.0.1:${port}`),
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 5, result.stderr)
  })
})

describe('edgetoken login --display mqtt', () => {
  test('the relay publishes pending, then approved, then clears; never the device code; the status topic is left alone', async (t) => {
    const idp = await startTestIdp({ interval: 1 })
    t.after(() => idp.close())
    const broker = await startBroker()
    t.after(() => broker.close())
    const env = deviceEnv(idp.issuer, { EDGETOKEN_MQTT_URL: broker.url })
    const topic = `edgetoken/${env.EDGETOKEN_DEVICE_ID}/#`
    const rec = await startRecorder(broker, topic, broker.kind === 'mosquitto' ? { protocolVersion: 5 } : {})
    t.after(() => rec.close())

    const run = startLogin(['--json', '--display', 'mqtt'], env)
    const first = await run.first
    const pending = await rec.waitFor((m) => m.topic.endsWith('/login') && m.payload.length > 0)
    const body = JSON.parse(pending.payload.toString()) as Record<string, unknown>
    assert.equal(body.state, 'pending')
    assert.equal(body.user_code, first.user_code)
    assert.equal(body.expires_at, first.expires_at)
    await approveDevice(idp.issuer, String(first.user_code))
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
    await rec.waitFor((m) => m.payload.toString() === '{"state":"approved"}')
    await rec.waitFor((m) => m.topic.endsWith('/login') && m.payload.length === 0)
    // The status topic belongs to the daemon (retained online, last will offline): a one-shot
    // login that set it would report a running agent as gone.
    await rec.settle()
    assert.deepEqual(
      rec.messages.filter((m) => m.topic.endsWith('/status')).map((m) => m.payload.toString()),
      [],
      'login publishes nothing on the status topic',
    )
    assert.equal(result.stderr.includes('warning'), false, result.stderr)

    assert.ok(idp.issued.deviceCodes.length > 0, 'a device code was issued')
    for (const m of rec.messages) {
      for (const secret of [
        ...idp.issued.deviceCodes,
        ...idp.issued.accessTokens,
        ...idp.issued.refreshTokens,
      ]) {
        assert.ok(!m.payload.includes(secret), `a secret was published on ${m.topic}`)
      }
    }
    // A late subscriber sees nothing on the login topic.
    const late = await startRecorder(broker, `edgetoken/${env.EDGETOKEN_DEVICE_ID}/login`)
    t.after(() => late.close())
    await late.settle()
    assert.equal(late.messages.length, 0)
  })

  test('an unreachable broker: login still works, with one warning', async (t) => {
    const idp = await startTestIdp({ interval: 1 })
    t.after(() => idp.close())
    const port = await freePort()
    const env = deviceEnv(idp.issuer, { EDGETOKEN_MQTT_URL: `mqtt://127.0.0.1:${port}` })
    const run = startLogin(['--json'], env)
    const first = await run.first
    await approveDevice(idp.issuer, String(first.user_code))
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
    const warnings = result.stderr.split('\n').filter((l) => l.includes('warning'))
    assert.equal(warnings.length, 1, result.stderr)
    assert.match(warnings[0] ?? '', /MQTT broker mqtt:\/\/127\.0\.0\.1:\d+/)
    assert.ok(result.stderr.includes(String(first.user_code)), 'the console still shows the code')
  })
})
