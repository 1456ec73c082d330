/**
 * Issue 14 (2), the MQTT relay part of a resumed sign-in: after a `login` is killed, the next one
 * resumes its pending device code and the relay republishes the pending message, even when the
 * broker lost the retained one (a restart without persistence). The CLI as a child process, the
 * real test IdP (oidc-provider) and a real broker (mosquitto; aedes where it is not installed).
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import mqtt from 'mqtt'
import { type CliResult, collect, newTestDevice, spawnCli } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'
import { type RecordedMessage, startRecorder } from '../support/mqtt-recorder.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-resume-relay-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000

interface Running {
  child: ChildProcess
  done: Promise<CliResult>
  /** The first NDJSON event on stdout. */
  first: Promise<Record<string, unknown>>
}

/** Every login started, killed when its test ends so a failed assertion leaves no child behind. */
const started = new Set<ChildProcess>()
after(() => {
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
})

function startLogin(env: Record<string, string>): Running {
  const child = spawnCli(['login', '--json', '--display', 'mqtt'], { env })
  started.add(child)
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = ''
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString('utf8')
      const newline = buffered.indexOf('\n')
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>)
    })
    child.once('close', () => reject(new Error('login exited before its first event')))
  })
  first.catch(() => {})
  const done = collect(child, { timeoutMs: TIMEOUT_MS })
  done.catch(() => {})
  return { child, done, first }
}

/** What a display that subscribes now finds retained on `topic` (nothing: undefined). */
async function retainedOn(broker: TestBroker, topic: string): Promise<RecordedMessage | undefined> {
  const late = await startRecorder(broker, topic)
  try {
    await late.settle()
    const retained = late.messages.filter((m) => m.retain)
    assert.ok(retained.length <= 1, 'at most one retained message per topic')
    return retained[0]
  } finally {
    await late.close()
  }
}

/** Polls a late subscriber until `topic` holds a retained message (the relay publishes it async). */
async function waitRetained(broker: TestBroker, topic: string): Promise<RecordedMessage> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const m = await retainedOn(broker, topic)
    if (m !== undefined && m.payload.length > 0) return m
    if (Date.now() > deadline) assert.fail(`nothing retained on ${topic}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

function assertNoSecrets(idp: TestIdp, messages: readonly RecordedMessage[]): void {
  assert.ok(idp.issued.deviceCodes.length > 0, 'a device code was issued')
  for (const m of messages) {
    for (const secret of [
      ...idp.issued.deviceCodes,
      ...idp.issued.accessTokens,
      ...idp.issued.refreshTokens,
    ]) {
      assert.ok(!m.payload.includes(secret), `a secret was published on ${m.topic}`)
    }
  }
}

describe('issue 14: a resumed login on the MQTT relay', () => {
  test('issue 14: a resumed login republishes the pending code on the relay after a kill -9 and a lost retained message; one device authorization', async (t) => {
    const idp = await startTestIdp({ interval: 1 })
    t.after(() => idp.close())
    const broker = await startBroker()
    t.after(() => broker.close())
    const { env } = newTestDevice(root, {
      issuer: idp.issuer,
      scopes: SCOPES,
      extra: { EDGETOKEN_MQTT_URL: broker.url },
    })
    const topic = `edgetoken/${env.EDGETOKEN_DEVICE_ID}/login`
    const rec = await startRecorder(broker, topic)
    t.after(() => rec.close())
    const authorizations = idp.deviceAuthorizations

    // 1. A login shows its code on the relay, then dies without a chance to clean up.
    const first = startLogin(env)
    const shown = await first.first
    assert.equal(shown.event, 'device_code')
    assert.equal(shown.resumed, undefined)
    const firstPending = await waitRetained(broker, topic)
    assert.equal(JSON.parse(firstPending.payload.toString()).user_code, shown.user_code)
    first.child.kill('SIGKILL')
    await first.done

    // 2. The broker loses the retained message (what a restart of a broker without persistence
    //    does): clear it as a zero-length retained publish.
    const publisher = await mqtt.connectAsync(broker.url, clientOptions(broker))
    await publisher.publishAsync(topic, '', { qos: 1, retain: true })
    await publisher.endAsync()
    assert.equal(await retainedOn(broker, topic), undefined, 'the retained pending message is gone')
    const before = rec.messages.length

    // 3. The next login resumes the code and puts it back on the relay.
    const second = startLogin(env)
    const again = await second.first
    assert.equal(again.event, 'device_code')
    assert.equal(again.resumed, true)
    assert.equal(again.user_code, shown.user_code, 'the same user code')
    assert.equal(again.expires_at, shown.expires_at, 'the same expiry')
    const republished = await rec.waitFor(
      (m) => rec.messages.indexOf(m) >= before && m.payload.length > 0,
      20_000,
    )
    const body = JSON.parse(republished.payload.toString()) as Record<string, unknown>
    assert.equal(body.state, 'pending')
    assert.equal(body.user_code, shown.user_code)
    assert.equal(body.expires_at, shown.expires_at)
    const retained = await waitRetained(broker, topic)
    assert.deepEqual(
      JSON.parse(retained.payload.toString()),
      body,
      'a display that subscribes late finds the pending code retained',
    )

    await approveDevice(idp.issuer, String(again.user_code))
    const result = await second.done
    assert.equal(result.code, 0, result.stderr)
    const approved = await rec.waitFor(
      (m) => rec.messages.indexOf(m) >= before && m.payload.toString() === '{"state":"approved"}',
    )
    await rec.waitFor(
      (m) => rec.messages.indexOf(m) > rec.messages.indexOf(approved) && m.payload.length === 0,
    )
    assert.equal(await retainedOn(broker, topic), undefined, 'the retained topic is cleared')

    assertNoSecrets(idp, rec.messages)
    assert.equal(
      idp.deviceAuthorizations,
      authorizations + 1,
      'one device authorization request reached the IdP',
    )
  })
})
