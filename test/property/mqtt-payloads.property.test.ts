/**
 * Issue 16: property-based tests over the MQTT payload parsers: readings and `mqtt.subscriptions`
 * messages (`decodeJsonObject`, 16 KiB cap, 64 levels) and pair requests (`checkPairRequest`, 1 KiB
 * cap, and the pair gate's policy). A payload is any bytes a device on the broker can publish:
 * each one is accepted as something the spool will take, or dropped with a reason; never a throw,
 * and a payload over the cap is never parsed.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { decodeJsonObject, MAX_READING_BYTES } from '../../src/agent/ingest.js'
import { checkPairRequest, createPairGate, MAX_PAIR_BYTES, type PairRefusal } from '../../src/agent/pair.js'
import { isObject } from '../../src/lib/validate.js'
import { jsonTooDeep, MAX_JSON_DEPTH } from '../../src/telemetry/json-depth.js'
import { MAX_RECORD_BYTES } from '../../src/telemetry/spool/record-format.js'
import { edgyJsonValue, forAll, mutatedObject, spyJsonParse } from '../support/property.js'

const utf8 = (text: string) => new Uint8Array(Buffer.from(text, 'utf8'))

/** Nesting around the 64-level cap, and far beyond it. */
const nested = fc
  .tuple(
    fc.oneof(fc.integer({ min: 60, max: 68 }), fc.integer({ min: 69, max: 20_000 })),
    fc.boolean(),
    fc.boolean(),
  )
  .map(([depth, objects, closed]) => {
    const open = objects ? '{"a":'.repeat(depth - 1) : '['.repeat(depth - 1)
    const close = objects ? '}'.repeat(depth - 1) : ']'.repeat(depth - 1)
    // The outermost level is always an object (a reading); strings with brackets must not count.
    return utf8(`{"s":"[[[{{{","v":${open}1${closed ? close : ''}}`)
  })

/** Bytes a publisher can send: JSON objects and values, near-JSON, binary, invalid UTF-8, deep and big. */
const payloads = fc.oneof(
  { arbitrary: fc.object({ maxDepth: 3 }).map((o) => utf8(JSON.stringify(o))), weight: 6 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => utf8(JSON.stringify(v))), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 300 }), weight: 2 },
  {
    // A valid object with one byte replaced: often invalid UTF-8 or broken JSON.
    arbitrary: fc
      .tuple(fc.object({ maxDepth: 2 }), fc.nat(), fc.integer({ min: 0, max: 255 }))
      .map(([o, at, byte]) => {
        const bytes = utf8(JSON.stringify(o))
        bytes[at % bytes.length] = byte
        return bytes
      }),
    weight: 2,
  },
  { arbitrary: nested, weight: 2 },
  {
    arbitrary: fc.integer({ min: MAX_READING_BYTES - 8, max: MAX_READING_BYTES + 4096 }).map((n) => {
      const filler = 'x'.repeat(Math.max(0, n - 8))
      return utf8(`{"x":"${filler}"}`)
    }),
    weight: 1,
  },
  {
    arbitrary: fc.constantFrom(utf8(''), utf8('\ufeff{}'), utf8('{} {}'), utf8('{"a":1}\n'), utf8('null')),
    weight: 1,
  },
)

/** What the spool's append demands of a record (segment-log.ts): serialisable, within 64 levels and 1 MiB. */
function assertSpoolable(record: Record<string, unknown>): void {
  const text = Buffer.from(JSON.stringify(record), 'utf8')
  assert.ok(!jsonTooDeep(text, MAX_JSON_DEPTH), 'accepted, but the spool would refuse it (too deep)')
  assert.ok(text.length <= MAX_RECORD_BYTES)
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
const NOW = Date.parse('2026-11-25T10:00:00Z')
const nonces = fc.stringMatching(/^[A-Za-z0-9_-]{8,64}$/)
const pairRequests = mutatedObject(
  {
    request: fc.constant('signin'),
    nonce: nonces,
    at: fc.integer({ min: -900_000, max: 900_000 }).map((d) => iso(NOW + d)),
  },
  {
    request: fc.constantFrom('signout', 'SIGNIN', ''),
    nonce: fc.constantFrom('short', 'x'.repeat(65), 'has space!', 'ünïcode1'),
    at: fc.constantFrom(
      '2026-02-30T10:00:00Z',
      '2026-11-25T10:00:60Z',
      '2026-11-25T24:00:00Z',
      '2026-11-25T10:00:00+01:00',
      '2026-11-25',
      `${'9'.repeat(40)}`,
    ),
  },
)
const pairPayloads = fc.oneof(
  { arbitrary: pairRequests.map((o) => utf8(JSON.stringify(o))), weight: 8 },
  { arbitrary: payloads, weight: 2 },
  {
    arbitrary: fc.integer({ min: 0, max: 64 }).map((n) =>
      utf8(
        JSON.stringify({
          request: 'signin',
          nonce: 'abcdefgh',
          at: iso(NOW),
          pad: 'x'.repeat(MAX_PAIR_BYTES - 60 + n),
        }),
      ),
    ),
    weight: 1,
  },
)

describe('issue 16: property tests over MQTT payloads', () => {
  for (const [what, depth] of [
    ['readings', MAX_JSON_DEPTH],
    ['subscriptions', MAX_JSON_DEPTH - 1],
  ] as const) {
    test(`${what}: a payload is spooled as a JSON object the spool accepts, or dropped; over 16 KiB never parsed`, async (t) => {
      const spy = spyJsonParse()
      t.after(() => spy.restore())
      await forAll(
        t,
        `MQTT ${what} payload`,
        payloads,
        (payload) => {
          spy.reset()
          const result = decodeJsonObject(payload, MAX_READING_BYTES, depth)
          if (payload.byteLength > MAX_READING_BYTES) {
            assert.deepEqual(result.ok ? 'ok' : result.reason, 'oversized')
            assert.equal(spy.lengths.length, 0, 'an oversized payload was parsed')
            return 'oversized'
          }
          if (!result.ok) {
            assert.ok(result.reason === 'malformed', `unexpected reason ${result.reason}`)
            return result.reason
          }
          assert.ok(isObject(result.value))
          // A subscription's message sits one level down in its spooled record.
          const record =
            what === 'readings'
              ? result.value
              : { topic: 'zigbee2mqtt/x', received_at: iso(NOW), payload: result.value }
          assertSpoolable(record)
          return 'accepted'
        },
        { numRuns: 4000 },
      )
    })
  }

  test('pair requests: a payload is a valid request per pair.schema.json or refused with a reason; over 1 KiB never parsed', async (t) => {
    const spy = spyJsonParse()
    t.after(() => spy.restore())
    await forAll(
      t,
      'MQTT pair payload',
      pairPayloads,
      (payload) => {
        spy.reset()
        const decision = checkPairRequest(payload)
        if (payload.byteLength > MAX_PAIR_BYTES) {
          assert.equal(decision.ok ? 'ok' : decision.reason, 'oversized')
          assert.equal(spy.lengths.length, 0, 'an oversized pair request was parsed')
        }
        if (!decision.ok) return decision.reason
        assert.equal(decision.request.request, 'signin')
        assert.match(decision.request.nonce, /^[A-Za-z0-9_-]{8,64}$/)
        assert.ok(Number.isFinite(decision.request.at))
        return 'accepted'
      },
      { numRuns: 3000 },
    )
  })

  test('pair gate: any sequence of requests keeps its counters exact, never accepts a nonce twice or faster than the rate limit', async (t) => {
    const MIN_INTERVAL_MS = 30_000
    const rarely = fc.oneof(
      { arbitrary: fc.constant(false), weight: 5 },
      { arbitrary: fc.constant(true), weight: 1 },
    )
    const step = fc.record({
      payload: fc.oneof(
        { arbitrary: pairPayloads, weight: 4 },
        { arbitrary: fc.constant('replay' as const), weight: 1 },
      ),
      advanceMs: fc.integer({ min: 0, max: 60_000 }),
      busy: rarely,
      retained: rarely,
      signedIn: rarely,
    })
    await forAll(
      t,
      'MQTT pair gate (sequences)',
      fc.tuple(
        fc.oneof(fc.constant(true), fc.constant(true), fc.boolean()),
        fc.array(step, { maxLength: 25 }),
      ),
      ([allow, steps]) => {
        let clock = NOW - 300_000
        const gate = createPairGate({ allow, minIntervalMs: MIN_INTERVAL_MS, now: () => clock })
        const acceptedNonces = new Set<string>()
        let lastAccepted = Number.NEGATIVE_INFINITY
        let last: Uint8Array = utf8('{}')
        for (const s of steps) {
          clock += s.advanceMs
          const payload = s.payload === 'replay' ? last : s.payload
          last = payload
          const decision = gate.check(payload, { busy: s.busy, retained: s.retained, signedIn: s.signedIn })
          if (!decision.ok) continue
          assert.ok(allow && !s.busy && !s.retained && !s.signedIn)
          assert.ok(!acceptedNonces.has(decision.request.nonce), 'a nonce was accepted twice')
          assert.ok(clock - lastAccepted >= MIN_INTERVAL_MS, 'accepted faster than the rate limit')
          assert.ok(Math.abs(clock - decision.request.at) <= 600_000, 'a stale request was accepted')
          acceptedNonces.add(decision.request.nonce)
          lastAccepted = clock
        }
        const { received, accepted, ...refused } = gate.counters
        const refusals = Object.values(refused as Record<PairRefusal, number>).reduce((a, b) => a + b, 0)
        assert.equal(received, steps.length)
        assert.equal(accepted + refusals, received, 'every request is counted once')
        assert.equal(accepted, acceptedNonces.size)
        return accepted > 0 ? 'some accepted' : 'none accepted'
      },
      { numRuns: 1500 },
    )
  })

  test('issue 16: the readings check holds for arbitrary JSON values at any key', async (t) => {
    // Edge values (huge numbers, nasty strings) inside otherwise ordinary readings.
    await forAll(
      t,
      'MQTT readings (edge values)',
      fc.dictionary(fc.string({ maxLength: 10 }), edgyJsonValue(4), { maxKeys: 6 }),
      (reading) => {
        const result = decodeJsonObject(utf8(JSON.stringify(reading)), MAX_READING_BYTES)
        if (!result.ok) return result.reason
        assertSpoolable(result.value)
        assert.deepEqual(result.value, JSON.parse(JSON.stringify(reading)))
        return 'accepted'
      },
      { numRuns: 1000 },
    )
  })
})
