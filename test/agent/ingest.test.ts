import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { Ajv2020 } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'
import mqtt, { type MqttClient } from 'mqtt'
import { startSensorSimulator } from '../../firmware-bridge/simulators/sensor.js'
import {
  decodeJsonObject,
  type IngestCounters,
  MAX_READING_BYTES,
  startReadingIngest,
} from '../../src/agent/ingest.js'
import {
  checkPairRequest,
  createPairGate,
  type PairRequest,
  startPairListener,
} from '../../src/agent/pair.js'
import type { MqttConfig } from '../../src/config/types.js'
import { connectMqtt, mqttTopics } from '../../src/display/mqtt-options.js'
import { openSpool, type Spool } from '../../src/telemetry/spool/spool.js'
import { clientOptions, startBroker, type TestBroker } from '../support/mosquitto.js'

// The schema's own example, read from the contract file so a schema change is noticed here.
const READING_SCHEMA = JSON.parse(
  readFileSync(new URL('../../firmware-bridge/schema/reading.schema.json', import.meta.url), 'utf8'),
) as { examples: unknown[] }

const GOOD = {
  sensor: 'greenhouse-1',
  at: '2026-11-25T10:00:00Z',
  seq: 42,
  values: { t: 21.5, door: 'closed', fan: true },
}
const bytes = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value))

/** Payloads that must be dropped, with the counter each belongs to. */
const BAD_READINGS: [string, Buffer, keyof IngestCounters][] = [
  ['oversized', bytes({ ...GOOD, values: { big: 'x'.repeat(MAX_READING_BYTES) } }), 'oversized'],
  ['not JSON', bytes('temperature=21'), 'malformed'],
  ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 'malformed'],
  ['an array', bytes([GOOD]), 'malformed'],
  ['a number', bytes('42'), 'malformed'],
  ['null', bytes('null'), 'malformed'],
  ['empty', Buffer.alloc(0), 'malformed'],
  // Dropped and acked, never refused by the spool (which would make the broker redeliver it for ever).
  ['an object nested 65 levels deep', bytes(`${'{"a":'.repeat(65)}1${'}'.repeat(65)}`), 'malformed'],
]

/** JSON objects outside the recommended reading shape: spooled as they came (issue 11 #1). */
const OTHER_OBJECTS: unknown[] = [
  { ...GOOD, token: 'x' },
  { at: GOOD.at, values: GOOD.values },
  { ...GOOD, sensor: 7 },
  { ...GOOD, at: '2026-11-25T10:00:00+01:00' },
  { ...GOOD, values: { t: { c: 1 } } },
  { temperature: 21.5, humidity: 48 },
  {},
]

describe('reading payloads', () => {
  test('issue 11 #1: any JSON object decodes, the schema example among them; size cap and UTF-8 JSON still hold', () => {
    for (const value of [READING_SCHEMA.examples[0], ...OTHER_OBJECTS]) {
      assert.deepEqual(decodeJsonObject(bytes(value), MAX_READING_BYTES), { ok: true, value })
    }
    for (const [name, payload, reason] of BAD_READINGS) {
      const checked = decodeJsonObject(payload, MAX_READING_BYTES)
      assert.equal(checked.ok ? 'ok' : checked.reason, reason, name)
    }
  })
})

describe('pair requests', () => {
  const now = Date.parse('2026-11-25T10:00:00Z')
  const request = (nonce: string, at = '2026-11-25T10:00:00Z') => bytes({ request: 'signin', nonce, at })

  test('checkPairRequest follows the schema', () => {
    assert.deepEqual(checkPairRequest(request('b3J0ZWxsby1wYWly')), {
      ok: true,
      request: { request: 'signin', nonce: 'b3J0ZWxsby1wYWly', at: now },
    })
    const bad: [Buffer, string][] = [
      [
        bytes({ request: 'signin', nonce: 'abcdefgh', at: '2026-11-25T10:00:00Z', pad: 'x'.repeat(1100) }),
        'oversized',
      ],
      [bytes('signin'), 'malformed'],
      [bytes({ request: 'signout', nonce: 'abcdefgh', at: '2026-11-25T10:00:00Z' }), 'invalid'],
      [bytes({ request: 'signin', nonce: 'short', at: '2026-11-25T10:00:00Z' }), 'invalid'],
      [bytes({ request: 'signin', nonce: 'has space!', at: '2026-11-25T10:00:00Z' }), 'invalid'],
      [bytes({ request: 'signin', nonce: 'abcdefgh', at: 1764064800 }), 'invalid'],
      [
        bytes({ request: 'signin', nonce: 'abcdefgh', at: '2026-11-25T10:00:00Z', user_code: 'X' }),
        'invalid',
      ],
      [bytes({ request: 'signin', nonce: 'abcdefgh' }), 'invalid'],
      [bytes({ request: 'signin', nonce: 'abcdefgh', at: '2026-11-25T10:00:60Z' }), 'invalid'],
    ]
    for (const [payload, reason] of bad) {
      const d = checkPairRequest(payload)
      assert.equal(d.ok ? 'ok' : d.reason, reason, payload.toString().slice(0, 80))
    }
  })

  test('the gate refuses when pairing is off, replays, stale requests, floods and a running sign-in', () => {
    let t = now
    const off = createPairGate({ allow: false, now: () => t })
    assert.equal(off.check(request('nonce-0001')).ok, false)
    assert.equal(off.counters.disallowed, 1)

    const gate = createPairGate({ allow: true, minIntervalMs: 30_000, maxSkewMs: 600_000, now: () => t })
    assert.equal(gate.check(request('nonce-0001')).ok, true)
    const replay = gate.check(request('nonce-0001'))
    assert.equal(replay.ok ? 'ok' : replay.reason, 'replayed')
    t += 1000
    const flood = gate.check(request('nonce-0002'))
    assert.equal(flood.ok ? 'ok' : flood.reason, 'rate-limited')
    t += 30_000
    const old = gate.check(request('nonce-0003', '2026-11-25T09:00:00Z'))
    assert.equal(old.ok ? 'ok' : old.reason, 'stale')
    const busy = gate.check(request('nonce-0004'), { busy: true })
    assert.equal(busy.ok ? 'ok' : busy.reason, 'busy')
    const retained = gate.check(request('nonce-0005'), { retained: true })
    assert.equal(retained.ok ? 'ok' : retained.reason, 'retained')
    assert.equal(gate.check(request('nonce-0006')).ok, true)
    assert.deepEqual(
      { ...gate.counters },
      {
        received: 7,
        accepted: 2,
        oversized: 0,
        malformed: 0,
        invalid: 0,
        retained: 1,
        disallowed: 0,
        replayed: 1,
        stale: 1,
        'rate-limited': 1,
        busy: 1,
        'signed-in': 0,
      },
    )
  })

  test('the nonce memory is bounded', () => {
    const gate = createPairGate({ allow: true, minIntervalMs: 0, maxNonces: 2, now: () => now })
    for (const n of ['nonce-aaaa', 'nonce-bbbb', 'nonce-cccc']) assert.equal(gate.check(request(n)).ok, true)
    // The oldest was forgotten; the freshness window still bounds how long a replay could work.
    assert.equal(gate.check(request('nonce-aaaa')).ok, true)
    assert.equal(gate.check(request('nonce-cccc')).ok, false)
  })
})

describe('MQTT ingest against a real broker', () => {
  let broker: TestBroker
  let stateDir: string
  let spool: Spool
  let agent: MqttClient
  let publisher: MqttClient
  const deviceId = 'gw-ingest'
  let config: MqttConfig
  const topics = mqttTopics('edgetoken', deviceId)

  before(async () => {
    broker = await startBroker()
    stateDir = await mkdtemp(join(tmpdir(), 'edgetoken-ingest-'))
    spool = await openSpool(stateDir)
    config = { url: broker.url, topicPrefix: 'edgetoken', allowPair: true }
    // The daemon's options: a persistent session under a stable client id.
    agent = await connectMqtt(config, { deviceId, role: 'agent', sessionExpirySeconds: 3600 })
    if (!agent.connected) await new Promise((resolve) => agent.once('connect', resolve))
    publisher = await mqtt.connectAsync(broker.url, clientOptions(broker))
  })
  after(async () => {
    await publisher?.endAsync()
    await agent?.endAsync()
    await spool?.close()
    await broker?.close()
    await rm(stateDir, { recursive: true, force: true })
  })

  async function waitFor(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }

  async function drain(): Promise<unknown[]> {
    const out: unknown[] = []
    for (;;) {
      const batch = await spool.readBatch({ maxRecords: 1000 })
      if (!batch) return out
      out.push(...batch.records.map((r) => JSON.parse(r)))
      await spool.ack(batch)
    }
  }

  test('issue 11 #1: every JSON object on readings is spooled as it came; malformed, oversized and retained ones are counted', async () => {
    // A retained reading is delivered with the retain flag only to a subscriber that comes later.
    await publisher.publishAsync(topics.readings, bytes({ ...GOOD, seq: 43 }), { qos: 1, retain: true })
    const drops: string[] = []
    const ingest = startReadingIngest({
      client: agent,
      topic: topics.readings,
      append: (records) => spool.append(records),
      onDrop: (reason) => drops.push(reason),
    })
    // The broker acknowledged the subscription: what is published from now on reaches the ingest.
    await ingest.ready

    await publisher.publishAsync(topics.readings, bytes(GOOD), { qos: 1 })
    for (const [, payload] of BAD_READINGS) await publisher.publishAsync(topics.readings, payload, { qos: 1 })
    for (const other of OTHER_OBJECTS) await publisher.publishAsync(topics.readings, bytes(other), { qos: 1 })
    await publisher.publishAsync(topics.readings, bytes({ ...GOOD, seq: 44 }), { qos: 0 })
    await publisher.publishAsync(topics.readings, bytes({ ...GOOD, seq: 45 }), { qos: 1 })
    // Another device's readings are not ours.
    await publisher.publishAsync('edgetoken/other/readings', bytes(GOOD), { qos: 1 })
    const total = 1 + BAD_READINGS.length + OTHER_OBJECTS.length + 3
    await waitFor('all messages', () => ingest.counters.received >= total)
    await ingest.idle()

    const expected = { oversized: 0, malformed: 0 }
    for (const [, , reason] of BAD_READINGS) expected[reason as keyof typeof expected] += 1
    assert.deepEqual(
      { ...ingest.counters },
      { received: total, accepted: 3 + OTHER_OBJECTS.length, retained: 1, failed: 0, ...expected },
    )
    assert.equal(drops.length, BAD_READINGS.length + 1)
    assert.deepEqual(await drain(), [GOOD, ...OTHER_OBJECTS, { ...GOOD, seq: 44 }, { ...GOOD, seq: 45 }])
    assert.ok(agent.connected, 'still connected after hostile payloads')
    await ingest.close()
    await publisher.publishAsync(topics.readings, '', { qos: 1, retain: true }) // clear the retained one
  })

  test('readings from the sensor simulator arrive in order', async () => {
    const ingest = startReadingIngest({
      client: agent,
      topic: topics.readings,
      append: (r) => spool.append(r),
    })
    await ingest.ready
    const sensor = await startSensorSimulator({
      url: broker.url,
      deviceId,
      sensor: 'sim-1',
      intervalMs: 5,
      count: 20,
    })
    await sensor.done
    await sensor.close()
    await waitFor('20 readings', () => ingest.counters.accepted >= 20)
    await ingest.close()
    const records = (await drain()) as { sensor: string; seq: number }[]
    assert.deepEqual(
      records.map((r) => r.seq),
      Array.from({ length: 20 }, (_, i) => i),
    )
    assert.ok(records.every((r) => r.sensor === 'sim-1'))
  })

  test('issue 11 #2: mqtt.subscriptions spool each JSON-object message as {topic, received_at, payload} in order; malformed and retained ones are counted, other topics ignored', async () => {
    // Zigbee2MQTT may retain device state: the broker replays it on every subscription.
    await publisher.publishAsync('zigbee2mqtt/kitchen', bytes({ temperature: 19 }), { qos: 1, retain: true })
    const drops: string[] = []
    const ingest = startReadingIngest({
      client: agent,
      topic: topics.readings,
      subscriptions: ['zigbee2mqtt/+', 'tele/+/SENSOR'],
      ownTopics: [topics.login, topics.status, topics.pair],
      append: (r) => spool.append(r),
      onDrop: (reason) => drops.push(reason),
      now: () => Date.parse('2026-11-25T10:00:00.000Z'),
    })
    await ingest.ready
    for (let i = 0; i < 5; i++) {
      await publisher.publishAsync('zigbee2mqtt/kitchen', bytes({ temperature: 20 + i }), { qos: 1 })
    }
    await publisher.publishAsync('tele/plug-1/SENSOR', bytes({ ENERGY: { Power: 12 } }), { qos: 1 })
    await publisher.publishAsync('zigbee2mqtt/kitchen', bytes('online'), { qos: 1 })
    // `+` is one level: zigbee2mqtt/bridge/state is not matched, nor is tele/plug-1/STATE.
    await publisher.publishAsync('zigbee2mqtt/bridge/state', bytes({ state: 'online' }), { qos: 1 })
    await publisher.publishAsync('tele/plug-1/STATE', bytes({ POWER: 'ON' }), { qos: 1 })
    await publisher.publishAsync(topics.readings, bytes(GOOD), { qos: 1 })
    await waitFor('all messages', () => ingest.counters.received >= 9)
    await ingest.idle()
    assert.deepEqual(
      { ...ingest.counters },
      { received: 9, accepted: 7, oversized: 0, malformed: 1, retained: 1, failed: 0 },
    )
    assert.deepEqual(drops.sort(), ['malformed', 'retained'])
    const receivedAt = '2026-11-25T10:00:00.000Z'
    const records = await drain()
    // What the agent spools follows the published record schema.
    const ajv = new Ajv2020({ strict: true })
    addFormats.default(ajv)
    const validate = ajv.compile(
      JSON.parse(
        readFileSync(
          new URL('../../firmware-bridge/schema/subscription-record.schema.json', import.meta.url),
          'utf8',
        ),
      ) as object,
    )
    for (const r of records.slice(0, -1)) assert.equal(validate(r), true, JSON.stringify(validate.errors))
    assert.deepEqual(records, [
      ...[20, 21, 22, 23, 24].map((temperature) => ({
        topic: 'zigbee2mqtt/kitchen',
        received_at: receivedAt,
        payload: { temperature },
      })),
      { topic: 'tele/plug-1/SENSOR', received_at: receivedAt, payload: { ENERGY: { Power: 12 } } },
      GOOD,
    ])
    await ingest.close()
    await publisher.publishAsync('zigbee2mqtt/kitchen', '', { qos: 1, retain: true })
  })

  test('issue 11 #2: a subscription that matches the readings topic is refused (each reading would arrive twice)', () => {
    assert.throws(
      () =>
        startReadingIngest({
          client: agent,
          topic: topics.readings,
          subscriptions: ['edgetoken/+/readings'],
          append: async () => {},
        }),
      { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' },
    )
  })

  test('MQTT 5 §4.4: a reading the spool refused gets no PUBACK; the broker redelivers it and it is spooled once', async () => {
    const errors: unknown[] = []
    let refusals = 0
    const ingest = startReadingIngest({
      client: agent,
      topic: topics.readings,
      append: async (records) => {
        if (refusals++ === 0) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
        await spool.append(records)
      },
      onError: (e) => errors.push(e),
      redeliveryDelayMs: 50,
    })
    await ingest.ready
    const reading = { ...GOOD, seq: 50 }
    await publisher.publishAsync(topics.readings, bytes(reading), { qos: 1 })
    // Only a resumed session makes the broker resend: the ingest reconnects, the reading comes again.
    await waitFor('the redelivered reading on disk', () => ingest.counters.accepted >= 1)
    await ingest.idle()
    assert.deepEqual(
      {
        received: ingest.counters.received,
        failed: ingest.counters.failed,
        accepted: ingest.counters.accepted,
      },
      { received: 2, failed: 1, accepted: 1 },
    )
    assert.equal(errors.length, 1)
    assert.deepEqual(await drain(), [reading], 'spooled once')
    await waitFor('connected again', () => agent.connected)
    await ingest.close()
  })

  test('readings published while the agent is stopped arrive after it restarts (persistent session)', async () => {
    const id = 'gw-session'
    const readingsTopic = mqttTopics('edgetoken', id).readings
    const options = { deviceId: id, role: 'agent', sessionExpirySeconds: 3600 }
    const first = await connectMqtt(config, options)
    const before = startReadingIngest({ client: first, topic: readingsTopic, append: (r) => spool.append(r) })
    await before.ready
    // The daemon stops: it keeps the subscription in the session. A reading that arrives now is
    // neither spooled nor acknowledged, so the broker keeps it too.
    await before.close({ unsubscribe: false })
    const late = new Promise((resolve) => first.once('message', resolve))
    await publisher.publishAsync(readingsTopic, bytes({ ...GOOD, seq: 60 }), { qos: 1 })
    await late
    await first.endAsync()
    for (const seq of [61, 62, 63]) {
      await publisher.publishAsync(readingsTopic, bytes({ ...GOOD, seq }), { qos: 1 })
    }

    // The next run: same client id, the broker delivers what it queued.
    const second = await connectMqtt(config, options)
    const after = startReadingIngest({ client: second, topic: readingsTopic, append: (r) => spool.append(r) })
    try {
      await waitFor('the queued readings', () => after.counters.accepted >= 4)
      await after.idle()
      const records = (await drain()) as { seq: number }[]
      assert.deepEqual(
        records.map((r) => r.seq),
        [60, 61, 62, 63],
      )
    } finally {
      await after.close()
      await second.endAsync()
    }
  })

  test('pair requests: a valid one starts a sign-in once; replays, junk and retained ones do not', async () => {
    const at = new Date().toISOString()
    await publisher.publishAsync(topics.pair, bytes({ request: 'signin', nonce: 'pair-nonce-2', at }), {
      qos: 1,
      retain: true,
    })
    const paired: PairRequest[] = []
    const refused: string[] = []
    const gate = createPairGate({ allow: true, minIntervalMs: 0 })
    const listener = startPairListener({
      client: agent,
      topic: topics.pair,
      gate,
      busy: () => false,
      onPair: (r) => paired.push(r),
      onRefused: (reason) => refused.push(reason),
    })
    await listener.ready
    const good = bytes({ request: 'signin', nonce: 'pair-nonce-1', at })
    await publisher.publishAsync(topics.pair, good, { qos: 1 })
    await publisher.publishAsync(topics.pair, good, { qos: 1 })
    await publisher.publishAsync(topics.pair, bytes('x'.repeat(2000)), { qos: 1 })
    await publisher.publishAsync(topics.pair, bytes({ request: 'signin', nonce: 1234, at }), { qos: 1 })
    await waitFor('five pair messages', () => gate.counters.received >= 5)
    assert.equal(paired.length, 1)
    assert.equal(paired[0]?.nonce, 'pair-nonce-1')
    assert.deepEqual(refused, ['retained', 'replayed', 'oversized', 'invalid'])
    await listener.close()
    await publisher.publishAsync(topics.pair, '', { qos: 1, retain: true })
  })
})
