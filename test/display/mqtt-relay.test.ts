import assert from 'node:assert/strict'
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { MqttConfig } from '../../src/config/types.js'
import { createMqttRelay, pendingPayload, signinRequiredPayload } from '../../src/display/mqtt-relay.js'
import type { DisplayFlow } from '../../src/display/types.js'
import { freePort, startBroker, type TestBroker } from '../support/mosquitto.js'
import { type RecordedMessage, startRecorder } from '../support/mqtt-recorder.js'

const DEVICE = 'gw-test'
const LOGIN = `edgetoken/${DEVICE}/login`
const STATUS = `edgetoken/${DEVICE}/status`

function flow(secondsLeft = 600): DisplayFlow {
  return {
    userCode: 'WDJB-MJHT',
    verificationUri: 'http://127.0.0.1:4000/device',
    verificationUriComplete: 'http://127.0.0.1:4000/device?user_code=WDJB-MJHT',
    expiresAt: Date.now() + secondsLeft * 1000,
  }
}

function configFor(broker: TestBroker, extra: Partial<MqttConfig> = {}): MqttConfig {
  return {
    url: broker.url,
    topicPrefix: 'edgetoken',
    allowPair: false,
    ...(broker.username ? { username: broker.username, password: broker.password } : {}),
    ...(broker.tls
      ? { caFile: broker.tls.caFile, certFile: broker.tls.clientCertFile, keyFile: broker.tls.clientKeyFile }
      : {}),
    ...extra,
  }
}

const isPending = (m: RecordedMessage) =>
  m.topic === LOGIN && m.payload.length > 0 && /pending/.test(m.payload.toString())

const isSignin = (m: RecordedMessage) =>
  m.topic === LOGIN && m.payload.length > 0 && /signin_required/.test(m.payload.toString())

/**
 * What a late subscriber finds retained on the login topic (a display that starts now). A message
 * that arrives live (published while subscribing, e.g. on a relay's first connect) does not count:
 * subscribe again.
 */
/** Polls until `predicate` holds (an explicit event, not a fixed wait). */
async function until(what: string, predicate: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

/**
 * A TCP proxy in front of the broker: `down()` cuts every connection and refuses new ones (counting
 * the attempts), `up()` forwards again. A network outage that, unlike a restart of the test broker
 * (which runs without persistence), leaves the retained messages on the broker.
 */
async function startProxy(target: number) {
  const sockets = new Set<Socket>()
  let forwarding = true
  let refused = 0
  const track = (s: Socket) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
    s.on('error', () => s.destroy())
  }
  const server: Server = createServer((downstream) => {
    track(downstream)
    if (!forwarding) {
      refused += 1
      downstream.destroy()
      return
    }
    const upstream = tcpConnect(target, '127.0.0.1')
    track(upstream)
    upstream.once('close', () => downstream.destroy())
    downstream.once('close', () => upstream.destroy())
    downstream.pipe(upstream).pipe(downstream)
  })
  const port = await freePort()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    url: `mqtt://127.0.0.1:${port}`,
    /** Connection attempts refused while down. */
    refused: () => refused,
    down() {
      forwarding = false
      for (const s of sockets) s.destroy()
    },
    up() {
      forwarding = true
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

async function retainedLogin(broker: TestBroker, pred: (m: RecordedMessage) => boolean) {
  for (let attempt = 0; ; attempt++) {
    const late = await startRecorder(broker, LOGIN)
    try {
      const m = await late.waitFor(pred)
      if (!m.retain && attempt < 5) continue
      assert.equal(m.retain, true)
      assert.equal(m.qos, 1)
      return m
    } finally {
      await late.close()
    }
  }
}

/** Asserts nothing is retained on the login topic (a late subscriber's view, once settled). */
async function assertLoginTopicEmpty(broker: TestBroker) {
  const late = await startRecorder(broker, LOGIN)
  try {
    await late.settle()
    assert.deepEqual(
      late.messages.map((m) => m.payload.toString()),
      [],
      'a late subscriber sees nothing',
    )
  } finally {
    await late.close()
  }
}

for (const version of [4, 5] as const) {
  describe(`MQTT relay (MQTT ${version === 4 ? '3.1.1' : '5'})`, () => {
    test('pending (retained, QoS 1), then the end state, then the retained message cleared', async (t) => {
      const broker = await startBroker()
      t.after(() => broker.close())
      if (version === 5 && broker.kind === 'aedes') return t.skip('aedes speaks MQTT 3.1.1 only')
      const warnings: string[] = []
      const relay = createMqttRelay({
        config: configFor(broker, { protocolVersion: version }),
        deviceId: DEVICE,
        onWarning: (w) => warnings.push(w),
      })
      t.after(() => relay.close())
      const rec = await startRecorder(broker, `edgetoken/${DEVICE}/#`, { protocolVersion: version })
      t.after(() => rec.close())
      const shown = flow(600)
      await relay.show(shown)
      await rec.waitFor(isPending)

      // A subscriber that comes after the publish gets it as a retained message.
      const retained = await startRecorder(broker, `edgetoken/${DEVICE}/#`, { protocolVersion: version })
      t.after(() => retained.close())
      const pending = await retained.waitFor(isPending)
      assert.equal(pending.retain, true)
      assert.equal(pending.qos, 1)
      assert.deepEqual(JSON.parse(pending.payload.toString()), {
        state: 'pending',
        user_code: 'WDJB-MJHT',
        verification_uri: 'http://127.0.0.1:4000/device',
        verification_uri_complete: 'http://127.0.0.1:4000/device?user_code=WDJB-MJHT',
        expires_at: new Date(shown.expiresAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      })
      if (version === 5) {
        const expiry = pending.properties?.messageExpiryInterval ?? 0
        assert.ok(expiry > 580 && expiry <= 600, `message expiry ${expiry} is the seconds left`)
      }
      const online = await retained.waitFor((m) => m.topic === STATUS)
      assert.equal(online.payload.toString(), 'online')
      assert.equal(online.retain, true)

      await relay.end('approved')
      const endState = await rec.waitFor(
        (m) => m.topic === LOGIN && m.payload.toString() === '{"state":"approved"}',
      )
      const cleared = await rec.waitFor((m) => m.topic === LOGIN && m.payload.length === 0)
      assert.equal(endState.qos, 1)
      assert.ok(rec.messages.indexOf(endState) < rec.messages.indexOf(cleared), 'end state before the clear')
      await assertLoginTopicEmpty(broker)

      await relay.close()
      const offline = await rec.waitFor((m) => m.topic === STATUS && m.payload.toString() === 'offline')
      assert.equal(offline.qos, 1)
      assert.deepEqual(warnings, [])
    })
  })
}

describe('MQTT relay', () => {
  test('the pending payload carries only the displayable fields', () => {
    const text = pendingPayload({ ...flow(), message: 'Open the page' })
    assert.deepEqual(Object.keys(JSON.parse(text)), [
      'state',
      'user_code',
      'verification_uri',
      'verification_uri_complete',
      'expires_at',
      'message',
    ])
    const minimal = JSON.parse(pendingPayload({ userCode: 'A', verificationUri: 'https://x', expiresAt: 0 }))
    assert.deepEqual(Object.keys(minimal), ['state', 'user_code', 'verification_uri', 'expires_at'])
  })

  test('the signin_required payload: state, since (UTC, seconds) and pair only', () => {
    const since = Date.parse('2026-11-25T09:30:05.678Z')
    assert.equal(
      signinRequiredPayload({ since, pair: true }),
      '{"state":"signin_required","since":"2026-11-25T09:30:05Z","pair":true}',
    )
    const extra = { since, pair: false, refreshToken: 'rt' } as { since: number; pair: boolean }
    assert.deepEqual(Object.keys(JSON.parse(signinRequiredPayload(extra))), ['state', 'since', 'pair'])
  })

  test('sign-in required: retained notice, replaced by a pending code, back after a failed flow, cleared after approval', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const warnings: string[] = []
    const relay = createMqttRelay({
      config: configFor(broker),
      deviceId: DEVICE,
      onWarning: (w) => warnings.push(w),
    })
    t.after(() => relay.close())
    const rec = await startRecorder(broker, LOGIN)
    t.after(() => rec.close())
    const since = Date.now() - 5000
    await relay.announceSigninRequired({ since, pair: true })
    const notice = await retainedLogin(broker, isSignin)
    assert.deepEqual(JSON.parse(notice.payload.toString()), {
      state: 'signin_required',
      since: new Date(since).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      pair: true,
    })

    // A device flow starts: its pending code replaces the notice.
    await relay.show(flow())
    await rec.waitFor(isPending)
    await retainedLogin(broker, isPending)

    // Denied: end state, clear, then the notice again (still signed out).
    const before = rec.messages.length
    await relay.end('denied')
    await rec.waitFor((m) => rec.messages.indexOf(m) >= before && isSignin(m))
    assert.deepEqual(
      rec.messages.slice(before).map((m) => m.payload.toString().replace(/"since":"[^"]+"/, '')),
      ['{"state":"denied"}', '', '{"state":"signin_required",,"pair":true}'],
    )
    await retainedLogin(broker, isSignin)

    // A second flow is approved: end state, clear, and nothing retained afterwards.
    await relay.show(flow())
    await retainedLogin(broker, isPending)
    await relay.end('approved')
    await rec.waitFor((m) => m.payload.toString() === '{"state":"approved"}')
    await assertLoginTopicEmpty(broker)
    assert.deepEqual(warnings, [])
  })

  test('sign-in required: clearSigninRequired and close() remove the notice; suspend leaves the topic alone', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const relay = createMqttRelay({ config: configFor(broker), deviceId: DEVICE, onWarning: () => {} })
    t.after(() => relay.close())
    await relay.announceSigninRequired({ since: Date.now(), pair: false })
    const notice = await retainedLogin(broker, isSignin)
    assert.equal(JSON.parse(notice.payload.toString()).pair, false)
    await relay.clearSigninRequired()
    await assertLoginTopicEmpty(broker)

    // Suspended (a flow elsewhere takes over): nothing published, a later clear still clears.
    await relay.announceSigninRequired({ since: Date.now(), pair: true })
    await retainedLogin(broker, isSignin)
    relay.suspendSigninRequired()
    await retainedLogin(broker, isSignin)
    await relay.clearSigninRequired()
    await assertLoginTopicEmpty(broker)

    await relay.announceSigninRequired({ since: Date.now(), pair: true })
    await retainedLogin(broker, isSignin)
    await relay.close()
    await assertLoginTopicEmpty(broker)
  })

  test('sign-in required: re-published after a broker restart', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const relay = createMqttRelay({
      config: configFor(broker),
      deviceId: DEVICE,
      onWarning: () => {},
      reconnectBaseMs: 200,
    })
    t.after(() => relay.close())
    await relay.announceSigninRequired({ since: Date.now(), pair: true })
    await retainedLogin(broker, isSignin)
    await broker.restart()
    const again = await startRecorder(broker, LOGIN)
    t.after(() => again.close())
    await again.waitFor(isSignin, 20_000)
  })

  for (const state of ['denied', 'expired', 'cancelled'] as const) {
    test(`end state ${state}`, async (t) => {
      const broker = await startBroker()
      t.after(() => broker.close())
      const relay = createMqttRelay({ config: configFor(broker), deviceId: DEVICE, onWarning: () => {} })
      t.after(() => relay.close())
      const rec = await startRecorder(broker, LOGIN)
      t.after(() => rec.close())
      await relay.show(flow())
      await rec.waitFor(isPending)
      await relay.end(state)
      await rec.waitFor((m) => m.payload.toString() === JSON.stringify({ state }))
      await rec.waitFor((m) => m.payload.length === 0)
      await assertLoginTopicEmpty(broker)
    })
  }

  test('broker restart during a pending login: the pending message is back after reconnect', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const relay = createMqttRelay({
      config: configFor(broker),
      deviceId: DEVICE,
      onWarning: () => {},
      reconnectBaseMs: 200,
    })
    t.after(() => relay.close())
    const first = await startRecorder(broker, LOGIN)
    await relay.show(flow())
    await first.waitFor(isPending)
    await first.close()

    // mosquitto runs without persistence: the restart forgets the retained message.
    await broker.restart()
    const empty = await startRecorder(broker, LOGIN)
    const again = await empty.waitFor(isPending, 20_000)
    assert.equal(JSON.parse(again.payload.toString()).user_code, 'WDJB-MJHT')
    await empty.close()

    await relay.end('approved')
    await assertLoginTopicEmpty(broker)
  })

  test('sign-in required cleared while the broker is unreachable: cleared once it is back', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const proxy = await startProxy(broker.port)
    t.after(() => proxy.close())
    const relay = createMqttRelay({
      config: { ...configFor(broker), url: proxy.url },
      deviceId: DEVICE,
      onWarning: () => {},
      reconnectBaseMs: 100,
      publishTimeoutMs: 500,
    })
    t.after(() => relay.close())
    await relay.announceSigninRequired({ since: Date.now(), pair: false })
    await retainedLogin(broker, isSignin)
    proxy.down()
    await until('a reconnect attempt', () => proxy.refused() > 0)
    // Signed in again (a login next to the daemon) while the relay cannot reach the broker.
    await relay.clearSigninRequired()
    await retainedLogin(broker, isSignin)
    proxy.up()
    // Polled: the clear follows the reconnect, whose timing is mqtt.js's.
    for (let i = 0; ; i++) {
      const late = await startRecorder(broker, LOGIN)
      await late.settle()
      const left = late.messages.length
      await late.close()
      if (left === 0) break
      assert.ok(i < 100, 'the retained notice is still there 10 s after the broker came back')
      await sleep(100)
    }
  })

  test('connection lost at end(): once it is back, the end state is published and the retained code cleared', async (t) => {
    const broker = await startBroker()
    t.after(() => broker.close())
    const proxy = await startProxy(broker.port)
    t.after(() => proxy.close())
    const warnings: string[] = []
    const relay = createMqttRelay({
      config: { ...configFor(broker), url: proxy.url },
      deviceId: DEVICE,
      onWarning: (w) => warnings.push(w),
      reconnectBaseMs: 100,
      // Generous: the test waits for events, not for this bound.
      publishTimeoutMs: 30_000,
    })
    t.after(() => relay.close())
    const rec = await startRecorder(broker, LOGIN)
    t.after(() => rec.close())
    await relay.show(flow())
    await retainedLogin(broker, isPending)

    // The relay's connection drops; it is known to be down once it tries to reconnect.
    proxy.down()
    await until('a reconnect attempt', () => proxy.refused() > 0)
    const before = rec.messages.length
    const ended = relay.end('approved')
    proxy.up()
    await ended
    await rec.waitFor(
      (m) => rec.messages.indexOf(m) >= before && m.payload.toString() === '{"state":"approved"}',
    )
    // The broker kept the pending code through the outage; a display that subscribes now finds nothing.
    await assertLoginTopicEmpty(broker)
    await relay.close()
    assert.deepEqual(warnings, [])
  })

  test('TLS + username/password + client certificate', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    const config = configFor(broker)
    assert.ok(config.url.startsWith('mqtts://') && config.password && config.caFile)
    const warnings: string[] = []
    const relay = createMqttRelay({ config, deviceId: DEVICE, onWarning: (w) => warnings.push(w) })
    t.after(() => relay.close())
    const rec = await startRecorder(broker, LOGIN)
    t.after(() => rec.close())
    await relay.show(flow())
    await rec.waitFor(isPending)
    const retained = await startRecorder(broker, LOGIN)
    t.after(() => retained.close())
    assert.equal((await retained.waitFor(isPending)).retain, true)
    await relay.end('expired')
    await rec.waitFor((m) => m.payload.toString() === '{"state":"expired"}')
    await rec.waitFor((m) => m.payload.length === 0)
    assert.deepEqual(warnings, [])
  })

  test('wrong password: one warning, the flow goes on', async (t) => {
    const broker = await startBroker({ tls: true })
    t.after(() => broker.close())
    const warnings: string[] = []
    const relay = createMqttRelay({
      config: configFor(broker, { password: 'wrong-password' }),
      deviceId: DEVICE,
      onWarning: (w) => warnings.push(w),
      connectTimeoutMs: 1000,
    })
    await relay.show(flow())
    await until('the warning', () => warnings.length > 0)
    await relay.end('approved')
    await relay.close()
    assert.equal(warnings.length, 1, warnings.join(' | '))
    assert.match(
      warnings[0] ?? '',
      /MQTT broker mqtts:\/\/127\.0\.0\.1:\d+: .*; the code is shown on the console only/,
    )
    assert.doesNotMatch(warnings[0] ?? '', /wrong-password/)
  })

  test('unreachable broker: show does not block, one warning, end and close return', async () => {
    const port = await freePort()
    const warnings: string[] = []
    const relay = createMqttRelay({
      config: { url: `mqtt://127.0.0.1:${port}`, topicPrefix: 'edgetoken', allowPair: false },
      deviceId: DEVICE,
      onWarning: (w) => warnings.push(w),
      connectTimeoutMs: 1000,
      reconnectBaseMs: 100,
    })
    // The broker never comes: a show (or end) that waited for it would never return.
    await relay.show(flow())
    await until('the warning', () => warnings.length > 0)
    await relay.end('approved')
    await relay.close()
    assert.equal(warnings.length, 1, warnings.join(' | '))
    assert.match(warnings[0] ?? '', /127\.0\.0\.1/)
  })

  test('a broker that refuses MQTT 5 gets 3.1.1 (aedes)', async (t) => {
    const previous = process.env.EDGETOKEN_TEST_BROKER
    process.env.EDGETOKEN_TEST_BROKER = 'aedes'
    let broker: TestBroker
    try {
      broker = await startBroker()
    } finally {
      if (previous === undefined) delete process.env.EDGETOKEN_TEST_BROKER
      else process.env.EDGETOKEN_TEST_BROKER = previous
    }
    t.after(() => broker.close())
    assert.equal(broker.kind, 'aedes')
    const warnings: string[] = []
    const relay = createMqttRelay({
      config: configFor(broker),
      deviceId: DEVICE,
      onWarning: (w) => warnings.push(w),
    })
    t.after(() => relay.close())
    const rec = await startRecorder(broker, LOGIN)
    t.after(() => rec.close())
    await relay.show(flow())
    await rec.waitFor(isPending)
    await relay.end('approved')
    await rec.waitFor((m) => m.payload.length === 0)
    assert.deepEqual(warnings, [])
  })
})
