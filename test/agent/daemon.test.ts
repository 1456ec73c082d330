/**
 * `edgetoken run` as a child process against the real test IdP, the reference API and mosquitto:
 * readings from the sensor simulator reach the API, renewals happen with short-lived tokens, the
 * API going down and up loses nothing, readings published while it is stopped arrive after its
 * restart, a dead sign-in is announced and a pair request recovers it, SIGTERM exits 0 promptly.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { startSensorSimulator } from '../../firmware-bridge/simulators/sensor.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'
import { startRecorder } from '../support/mqtt-recorder.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url))

interface Cli {
  child: ChildProcess
  events: Record<string, unknown>[]
  stderr: () => string
  waitForEvent(pred: (e: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<void>
  exit: Promise<number | null>
}

function startCli(args: string[], env: NodeJS.ProcessEnv, stdin?: string): Cli {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  })
  child.stdin?.end(stdin)
  const events: Record<string, unknown>[] = []
  let buffered = ''
  let err = ''
  child.stdout?.on('data', (d) => {
    buffered += d
    let nl = buffered.indexOf('\n')
    while (nl >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (line.trim()) events.push(JSON.parse(line) as Record<string, unknown>)
      nl = buffered.indexOf('\n')
    }
  })
  child.stderr?.on('data', (d) => {
    err += d
  })
  const exit = once(child, 'exit').then(([code]) => code as number | null)
  return {
    child,
    events,
    stderr: () => err,
    exit,
    async waitForEvent(pred, what, timeoutMs = 30_000) {
      await waitUntil(
        () => events.some(pred),
        what,
        timeoutMs,
        () => `stderr:\n${err}`,
      )
    },
  }
}

async function waitUntil(
  predicate: () => boolean,
  what: string,
  timeoutMs = 30_000,
  context: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function recordsAt(api: TestApi): { sensor: string; seq: number }[] {
  return api.receiver.batches.flatMap((b) => b.records as { sensor: string; seq: number }[])
}

describe('edgetoken run (daemon)', { timeout: 180_000 }, () => {
  let idp: TestIdp
  let api: TestApi
  let broker: TestBroker
  let dir: string
  const children: ChildProcess[] = []

  before(async () => {
    // Short-lived access tokens so renewals happen within the test.
    idp = await startTestIdp({ accessTokenTtlSeconds: 12, interval: 1 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    broker = await startBroker()
    dir = await mkdtemp(join(tmpdir(), 'edgetoken-daemon-'))
    await writeFile(join(dir, 'key'), randomBytes(32), { mode: 0o600 })
  })
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL')
    await broker?.close()
    await api?.close()
    await idp?.close()
    await rm(dir, { recursive: true, force: true })
  })

  async function setup(name: string, deviceId: string) {
    const stateDir = join(dir, name)
    const configFile = join(dir, `${name}.json`)
    await writeFile(
      configFile,
      JSON.stringify({
        authority: idp.issuer,
        clientId: idp.publicClientId,
        scopes: ['openid', 'offline_access', idp.apiScope],
        deviceId,
        stateDir,
        keyFile: join(dir, 'key'),
        mqtt: { url: broker.url, allowPair: true },
        telemetry: { endpoint: api.url, lingerMs: 100 },
      }),
    )
    return { EDGETOKEN_CONFIG: configFile, EDGETOKEN_STATE_DIR: '', NOTIFY_SOCKET: '' }
  }

  async function login(env: NodeJS.ProcessEnv): Promise<void> {
    const cli = startCli(['login', '--json', '--display', 'none'], env)
    children.push(cli.child)
    await cli.waitForEvent((e) => e.event === 'device_code', 'device_code')
    const code = cli.events.find((e) => e.event === 'device_code')?.user_code
    await approveDevice(idp.issuer, String(code))
    assert.equal(await cli.exit, 0, cli.stderr())
  }

  /** The payloads a display that subscribes now finds retained on a topic. */
  async function retainedOn(topic: string): Promise<string[]> {
    const rec = await startRecorder(broker, topic)
    try {
      await rec.settle()
      return rec.messages.filter((m) => m.retain).map((m) => m.payload.toString())
    } finally {
      await rec.close()
    }
  }

  async function waitForRetained(topic: string, pred: (payloads: string[]) => boolean, what: string) {
    const deadline = Date.now() + 15_000
    for (;;) {
      const retained = await retainedOn(topic)
      if (pred(retained)) return retained
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${what}; retained: ${JSON.stringify(retained)}`)
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  function assertNoSecrets(cli: Cli): void {
    const out = JSON.stringify(cli.events) + cli.stderr()
    for (const secret of [
      ...idp.issued.accessTokens,
      ...idp.issued.refreshTokens,
      ...idp.issued.deviceCodes,
    ]) {
      assert.ok(!out.includes(secret), 'no token or device code in the daemon output')
    }
  }

  test('readings reach the API, tokens are renewed, an API outage and a restart lose nothing, SIGTERM exits 0', async () => {
    const env = await setup('main', 'gw-daemon')
    await login(env)
    const refreshesBefore = idp.refreshes

    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    const sensor = await startSensorSimulator({
      url: broker.url,
      deviceId: 'gw-daemon',
      sensor: 'greenhouse-1',
      intervalMs: 20,
      count: 20,
    })
    await sensor.done
    await sensor.close()
    await waitUntil(() => recordsAt(api).length >= 20, '20 records at the API', 30_000, daemon.stderr)

    // A 12 s token is renewed 3-6 s after it was obtained.
    await daemon.waitForEvent((e) => e.event === 'renewed', 'a renewal', 30_000)
    assert.ok(idp.refreshes > refreshesBefore, 'the IdP saw a refresh_token grant')

    const stderrBefore = daemon.stderr().length
    await api.setMode('down')
    const second = await startSensorSimulator({
      url: broker.url,
      deviceId: 'gw-daemon',
      sensor: 'greenhouse-1',
      intervalMs: 20,
      count: 10,
      startSeq: 20,
    })
    await second.done
    await second.close()
    // The uploader meets the outage (its first failed attempt is logged) and backs off.
    await waitUntil(
      () => /upload of \S+ failed/.test(daemon.stderr().slice(stderrBefore)),
      'the uploader meeting the outage',
      30_000,
      daemon.stderr,
    )
    await api.setMode('up')
    await waitUntil(() => recordsAt(api).length >= 30, '30 records after the outage', 60_000, daemon.stderr)
    const seqs = recordsAt(api).map((r) => r.seq)
    assert.deepEqual(
      seqs,
      Array.from({ length: 30 }, (_, i) => i),
      'every reading once, in order',
    )
    assert.ok(api.receiver.batches.every((b) => b.deviceId === 'gw-daemon'))

    const startedStop = Date.now()
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assert.ok(Date.now() - startedStop < 12_000, 'stopped within the shutdown bound')
    assert.ok(daemon.events.some((e) => e.event === 'stopped'))
    assertNoSecrets(daemon)

    // Stopped (an update, a reboot): the broker keeps the agent's session and queues the readings
    // published meanwhile (QoS 1); the next run spools and uploads them.
    const whileStopped = await startSensorSimulator({
      url: broker.url,
      deviceId: 'gw-daemon',
      sensor: 'greenhouse-1',
      intervalMs: 5,
      count: 5,
      startSeq: 30,
    })
    await whileStopped.done
    await whileStopped.close()
    const restarted = startCli(['run', '--json'], env)
    children.push(restarted.child)
    await waitUntil(
      () => recordsAt(api).length >= 35,
      '35 records after the restart',
      30_000,
      restarted.stderr,
    )
    assert.deepEqual(
      recordsAt(api).map((r) => r.seq),
      Array.from({ length: 35 }, (_, i) => i),
      'the readings published while stopped arrived, once, in order',
    )
    restarted.child.kill('SIGTERM')
    assert.equal(await restarted.exit, 0, restarted.stderr())
  })

  test('`send` and `upload` next to the running daemon: upload exits 0 and every record arrives once', async () => {
    const env = await setup('beside', 'gw-beside')
    await login(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')
    const mine = () =>
      api.receiver.batches
        .filter((b) => b.deviceId === 'gw-beside')
        .flatMap((b) => b.records as { seq: number }[])
    const send = async (from: number) => {
      const records = Array.from({ length: 50 }, (_, i) => JSON.stringify({ seq: from + i }))
      const cli = startCli(['send', '--json'], env, `${records.join('\n')}\n`)
      assert.equal(await cli.exit, 0, cli.stderr())
    }
    // The daemon delivers these itself (its idle check finds them), taking the upload lock...
    await send(0)
    await waitUntil(() => mine().length >= 50, 'the daemon delivering 50 records', 30_000, daemon.stderr)
    // ...and gives it up once the spool is empty: `upload` delivers the next ones and exits 0.
    await send(50)
    const upload = startCli(['upload', '--json'], env)
    assert.equal(await upload.exit, 0, upload.stderr())
    assert.equal(upload.events.find((e) => e.event === 'uploaded')?.pending, 0)
    assert.equal(mine().length, 100)
    assert.deepEqual(
      mine().map((r) => r.seq),
      Array.from({ length: 100 }, (_, i) => i),
      'every record once, in order',
    )
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
  })

  test('not signed in: sign-in required is announced, readings are spooled, a pair request signs in', async () => {
    const env = await setup('pair', 'gw-pair')
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'signin_required', 'signin_required')
    assert.match(daemon.stderr(), /sign-in required/)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    const sensor = await startSensorSimulator({
      url: broker.url,
      deviceId: 'gw-pair',
      sensor: 'p',
      intervalMs: 10,
      count: 5,
    })
    await sensor.done
    await sensor.close()

    // The companion display asks for a sign-in; the agent starts a device flow.
    const userCodesBefore = idp.issued.userCodes.length
    const display = await mqtt.connectAsync(broker.url, clientOptions(broker))
    await display.publishAsync(
      'edgetoken/gw-pair/pair',
      JSON.stringify({
        request: 'signin',
        nonce: randomBytes(12).toString('base64url'),
        at: new Date().toISOString(),
      }),
      { qos: 1 },
    )
    await display.endAsync()
    await waitUntil(
      () => idp.issued.userCodes.length > userCodesBefore,
      'a device flow',
      30_000,
      daemon.stderr,
    )
    const userCode = idp.issued.userCodes.at(-1)
    await approveDevice(idp.issuer, String(userCode))
    await daemon.waitForEvent((e) => e.event === 'signed_in', 'signed_in', 30_000)
    // The sign-in ran the login code path with its own MQTT relay: the daemon is still `online`.
    await waitForRetained('edgetoken/gw-pair/status', (p) => p.length > 0, 'the retained status')
    assert.deepEqual(await retainedOn('edgetoken/gw-pair/status'), ['online'])

    await waitUntil(
      () =>
        api.receiver.batches.filter((b) => b.deviceId === 'gw-pair').flatMap((b) => b.records).length >= 5,
      'the spooled readings at the API',
      30_000,
      daemon.stderr,
    )
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assertNoSecrets(daemon)
  })

  test('systemd: READY=1, STATUS=, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM', async () => {
    const env = await setup('notify', 'gw-notify')
    // A stand-in for systemd-notify(1): appends its arguments to the "socket" path.
    const bin = join(dir, 'bin')
    await mkdir(bin, { recursive: true })
    await writeFile(join(bin, 'systemd-notify'), '#!/bin/sh\necho "$*" >> "$NOTIFY_SOCKET"\n', {
      mode: 0o755,
    })
    const notifyLog = join(dir, 'notify.log')
    const daemon = startCli(['run', '--json'], {
      ...env,
      NOTIFY_SOCKET: notifyLog,
      WATCHDOG_USEC: '1000000',
      PATH: `${bin}:${process.env.PATH ?? ''}`,
    })
    children.push(daemon.child)
    const logged = async () => readFile(notifyLog, 'utf8').catch(() => '')
    let text = ''
    const deadline = Date.now() + 30_000
    while (!/READY=1/.test(text) || (text.match(/WATCHDOG=1/g) ?? []).length < 2) {
      if (Date.now() > deadline) throw new Error(`no READY/WATCHDOG: ${text}\n${daemon.stderr()}`)
      await new Promise((r) => setTimeout(r, 100))
      text = await logged()
    }
    assert.match(text, /STATUS=sign-in required/)
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    const stopDeadline = Date.now() + 10_000
    while (!/STOPPING=1/.test(text)) {
      if (Date.now() > stopDeadline) throw new Error(`no STOPPING=1: ${text}`)
      await new Promise((r) => setTimeout(r, 100))
      text = await logged()
    }
  })

  test('a dead refresh token: announced, readings kept, and a separate login resumes uploads', async () => {
    const env = await setup('dead', 'gw-dead')
    await login(env)
    const daemon = startCli(['run', '--json'], env)
    children.push(daemon.child)
    await daemon.waitForEvent((e) => e.event === 'ready', 'ready')

    // Revoke every refresh token the IdP issued: the next silent renewal gets invalid_grant.
    for (const token of idp.issued.refreshTokens) {
      await fetch(new URL('/token/revocation', idp.issuer), {
        method: 'POST',
        body: new URLSearchParams({ client_id: idp.publicClientId, token, token_type_hint: 'refresh_token' }),
      })
    }
    const revokedAt = Date.now()
    await daemon.waitForEvent((e) => e.event === 'signin_required', 'signin_required', 30_000)
    assert.match(daemon.stderr(), /warning: sign-in required/)

    // The companion display learns it too: a retained notice on the login topic (issue 6).
    const [notice] = await waitForRetained(
      'edgetoken/gw-dead/login',
      (p) => p.length === 1,
      'the retained signin_required notice',
    )
    const body = JSON.parse(notice ?? '{}') as Record<string, unknown>
    assert.deepEqual(Object.keys(body).sort(), ['pair', 'since', 'state'])
    assert.equal(body.state, 'signin_required')
    assert.equal(body.pair, true, 'mqtt.allowPair is true and the daemon can sign in')
    assert.match(String(body.since), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    const since = Date.parse(String(body.since))
    assert.ok(since >= revokedAt - 1000 && since <= Date.now(), `since ${body.since} is when it was noticed`)
    for (const secret of [
      ...idp.issued.refreshTokens,
      ...idp.issued.accessTokens,
      ...idp.issued.deviceCodes,
    ]) {
      assert.ok(!notice?.includes(secret), 'no token or device code on the login topic')
    }

    const sensor = await startSensorSimulator({
      url: broker.url,
      deviceId: 'gw-dead',
      sensor: 'd',
      intervalMs: 10,
      count: 5,
    })
    await sensor.done
    await sensor.close()
    await login(env)
    await daemon.waitForEvent((e) => e.event === 'signed_in', 'signed_in after a separate login', 30_000)
    await waitForRetained(
      'edgetoken/gw-dead/login',
      (p) => p.length === 0,
      'the notice cleared after the login',
    )
    await waitUntil(
      () =>
        api.receiver.batches.filter((b) => b.deviceId === 'gw-dead').flatMap((b) => b.records).length >= 5,
      'the readings spooled while signed out',
      30_000,
      daemon.stderr,
    )
    daemon.child.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())
    assertNoSecrets(daemon)
  })
})
