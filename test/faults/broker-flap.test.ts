/**
 * Issue 16: the MQTT link flapping (a relay in front of the real mosquitto cuts every connection
 * every 2-3 s, test/support/tcp-flapper.ts) during a `login --display mqtt` and during the daemon's
 * ingest, against the real test IdP and API.
 *
 * - login: the relay republishes the retained pending code after every reconnect, ends with the
 *   `approved` message and leaves the topic cleared.
 * - ingest: a publisher that retries (mqtt.js, QoS 1, reconnecting, through the same flapping link)
 *   sends N readings; all N reach the API. MQTT QoS 1 is at-least-once: a reading whose PUBACK
 *   was cut may come again and be spooled again; that is counted and bounded, and a batch
 *   re-sent after a cut upload is kept once by its batch id.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import mqtt from 'mqtt'
import { startTestApi, type TestApi } from '../support/api.js'
import { newTestDevice, seedSignIn, spawnCli } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { startBroker, type TestBroker } from '../support/mosquitto.js'
import { startRecorder } from '../support/mqtt-recorder.js'
import { startTcpFlapper } from '../support/tcp-flapper.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const root = mkdtempSync(join(tmpdir(), 'edgetoken-broker-flap-'))
after(() => rmSync(root, { recursive: true, force: true }))

interface Child {
  events: Record<string, unknown>[]
  stderr: () => string
  exit: Promise<number | null>
  kill: (signal: NodeJS.Signals) => void
}

/** The CLI as a child whose stdout is NDJSON. */
function start(args: string[], env: Record<string, string>): Child {
  const child = spawnCli(args, { env })
  child.stdin?.end()
  const events: Record<string, unknown>[] = []
  let buffered = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => {
    buffered += d.toString('utf8')
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl).trim()
      buffered = buffered.slice(nl + 1)
      if (line) events.push(JSON.parse(line) as Record<string, unknown>)
    }
  })
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString('utf8')
  })
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { events, stderr: () => err, exit, kill: (s) => child.kill(s) }
}

async function waitUntil(what: string, predicate: () => boolean, timeoutMs: number, context = () => '') {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('issue 16: the broker flapping every 2-3 s', { timeout: 150_000 }, () => {
  let idp: TestIdp
  let api: TestApi
  let broker: TestBroker
  const children: Child[] = []
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 600, interval: 1 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    broker = await startBroker()
  })
  after(async () => {
    for (const c of children) c.kill('SIGKILL')
    await broker?.close()
    await api?.close()
    await idp?.close()
  })

  test('during login --display mqtt: the pending code is republished after each cut, then approved and cleared', async (t) => {
    const link = await startTcpFlapper({ targetPort: broker.port })
    t.after(() => link.close())
    const deviceId = `gw-flap-login-${randomBytes(3).toString('hex')}`
    const device = newTestDevice(root, {
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      extra: { EDGETOKEN_DEVICE_ID: deviceId, EDGETOKEN_MQTT_URL: link.url },
    })
    const topic = `edgetoken/${deviceId}/login`
    const seen = await startRecorder(broker, topic)
    t.after(() => seen.close())

    const login = start(['login', '--json', '--display', 'mqtt'], device.env)
    children.push(login)
    await waitUntil(
      'device_code',
      () => login.events.some((e) => e.event === 'device_code'),
      30_000,
      login.stderr,
    )
    const userCode = String(login.events.find((e) => e.event === 'device_code')?.user_code)
    const pending = () =>
      seen.messages.filter(
        (m) => m.payload.length > 0 && JSON.parse(m.payload.toString()).state === 'pending',
      )
    await waitUntil('the pending code on the relay', () => pending().length >= 1, 15_000, login.stderr)

    link.startFlapping()
    await waitUntil(
      'two cuts and a republished code',
      () => link.cuts() >= 2 && pending().length >= 2,
      20_000,
      () => `cuts ${link.cuts()}, pending ${pending().length}\n${login.stderr()}`,
    )
    for (const m of pending()) assert.equal(JSON.parse(m.payload.toString()).user_code, userCode)

    await approveDevice(idp.issuer, userCode)
    assert.equal(await login.exit, 0, login.stderr())
    link.stopFlapping()
    assert.ok(login.events.some((e) => e.event === 'signed_in'))
    await seen.waitFor(
      (m) => m.payload.length > 0 && JSON.parse(m.payload.toString()).state === 'approved',
      10_000,
    )
    // A display that subscribes now finds nothing retained: the code was cleared.
    const late = await startRecorder(broker, topic)
    try {
      await late.settle()
      assert.deepEqual(
        late.messages.filter((m) => m.retain).map((m) => m.payload.toString()),
        [],
        'no retained code left on the topic',
      )
    } finally {
      await late.close()
    }
    assert.ok(
      !JSON.stringify(seen.messages.map((m) => m.payload.toString())).includes(
        idp.issued.deviceCodes.at(-1) ?? '\0',
      ),
    )
  })

  test('during daemon ingest: every QoS 1 reading from a retrying publisher reaches the API; batches kept once by batch id', async (t) => {
    const link = await startTcpFlapper({ targetPort: broker.port })
    t.after(() => link.close())
    const deviceId = `gw-flap-ingest-${randomBytes(3).toString('hex')}`
    const device = newTestDevice(root, {
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      extra: { EDGETOKEN_DEVICE_ID: deviceId, EDGETOKEN_MQTT_URL: link.url },
    })
    const configFile = join(root, `${deviceId}.json`)
    writeFileSync(configFile, JSON.stringify({ telemetry: { endpoint: api.url, lingerMs: 100 } }))
    const env = { ...device.env, EDGETOKEN_CONFIG: configFile }
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: device.stateDir,
      env,
    })

    const daemon = start(['run', '--json'], env)
    children.push(daemon)
    await waitUntil('ready', () => daemon.events.some((e) => e.event === 'ready'), 30_000, daemon.stderr)
    link.startFlapping()

    // A sensor that retries: QoS 1 through the same flapping link, reconnecting after 200 ms,
    // its unacknowledged publishes kept and sent again (mqtt.js resends them on reconnect).
    const N = 250
    const sensor = await mqtt.connectAsync(link.url, {
      clientId: `sensor-${deviceId}`,
      clean: false,
      reconnectPeriod: 200,
      connectTimeout: 5000,
      protocolVersion: 4,
    })
    t.after(() => sensor.end(true))
    const acked: Promise<unknown>[] = []
    for (let n = 0; n < N; n++) {
      acked.push(
        sensor.publishAsync(`edgetoken/${deviceId}/readings`, JSON.stringify({ sensor: 'flap-1', n }), {
          qos: 1,
        }),
      )
      await new Promise((r) => setTimeout(r, 40))
    }
    await Promise.all(acked)
    const cutsDuringPublish = link.cuts()
    assert.ok(cutsDuringPublish >= 2, `the link was cut ${cutsDuringPublish} times while publishing`)

    const received = () =>
      api.receiver.batches
        .filter((b) => b.deviceId === deviceId)
        .flatMap((b) => b.records.map((r) => (r as { n: number }).n))
    await waitUntil(
      'every reading at the API',
      () => new Set(received()).size >= N,
      60_000,
      () => `at the API: ${new Set(received()).size}/${N}\n${daemon.stderr()}`,
    )
    link.stopFlapping()
    daemon.kill('SIGTERM')
    assert.equal(await daemon.exit, 0, daemon.stderr())

    const got = received()
    assert.deepEqual(
      [...new Set(got)].sort((a, b) => a - b),
      Array.from({ length: N }, (_, i) => i),
      'nothing lost',
    )
    // At-least-once: only a reading whose acknowledgement a cut swallowed may come twice.
    const duplicates = got.length - new Set(got).size
    t.diagnostic(`${link.cuts()} cuts, ${N} readings, ${duplicates} redelivered by MQTT`)
    assert.ok(duplicates <= 2 * link.cuts(), `${duplicates} duplicates for ${link.cuts()} cuts`)
    const batchIds = api.receiver.batches.filter((b) => b.deviceId === deviceId).map((b) => b.batchId)
    assert.equal(new Set(batchIds).size, batchIds.length, 'each batch kept once')
  })
})
