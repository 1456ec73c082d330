/**
 * MQTT ingest of sensor readings: `<prefix>/<deviceId>/readings` (QoS 1) -> validated -> spool.
 *
 * - Every payload is checked by hand against `firmware-bridge/schema/reading.schema.json` (a schema
 *   validator such as ajv costs more to load than the whole check): size cap 16 KiB, strict UTF-8,
 *   one JSON object, the schema's fields and bounds. A bad message is dropped and counted, never
 *   a crash and never spooled.
 * - The broker gets its PUBACK only after the reading is on disk (the spool's fsync): mqtt.js
 *   handles incoming packets one at a time, so a slow disk pushes back on the broker instead of
 *   filling memory.
 * - A reading the spool refused (disk full, I/O error) gets no PUBACK at all: the broker still
 *   owes it. MQTT resends an unacknowledged PUBLISH only when the session is resumed on a new
 *   connection (MQTT 5 §4.4, 3.1.1 §4.4), so the ingest reconnects, with back-off, to have it
 *   redelivered. That needs a persistent session (`connectMqtt` with `sessionExpirySeconds`), which
 *   also queues the readings published while the agent is not running.
 *
 * @packageDocumentation
 */
import type { IPublishPacket, MqttClient } from 'mqtt'
import { backoffDelayMs } from '../lib/backoff.js'
import { withDeadline } from '../lib/deadline.js'
import { isObject, type JsonObject } from '../lib/validate.js'

/** Largest reading payload accepted, bytes (the schema's documented cap). */
export const MAX_READING_BYTES = 16 * 1024

/** Why a message was dropped. */
export type DropReason = 'oversized' | 'malformed' | 'invalid' | 'retained'

/** The result of checking one payload. */
export type PayloadCheck<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: DropReason; readonly detail: string }

/** A reading that passed validation: the parsed JSON object, spooled as it came. */
export type Reading = JsonObject & { sensor: string; at: string; values: JsonObject; seq?: number }

// The schema's date-time pattern, with the fields captured for the calendar check.
const DATE_TIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z$/
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const CONTROL = /[\x00-\x1f\x7f]/
const READING_KEYS = new Set(['sensor', 'at', 'seq', 'values'])
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** JSON Schema lengths count code points, not UTF-16 units. */
function codePoints(text: string): number {
  let n = 0
  for (const _ of text) n += 1
  return n
}

function isLabel(value: unknown, max: number): value is string {
  if (typeof value !== 'string' || value.length === 0) return false
  const n = codePoints(value)
  return n >= 1 && n <= max && !CONTROL.test(value)
}

/**
 * Whether a value is an ISO 8601 UTC date-time as the firmware-bridge schemas define it.
 *
 * @param value - anything.
 * @returns true for `2026-11-25T10:00:00Z` (fractional seconds allowed), false otherwise.
 */
export function isUtcDateTime(value: unknown): value is string {
  if (typeof value !== 'string' || value.length > 35) return false
  const m = DATE_TIME.exec(value)
  if (!m) return false
  // RFC 3339 §5.7: real calendar days (no 30 February), hours 0-23, minutes 0-59, seconds 0-60.
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as number[]
  if (month === undefined || day === undefined || hour === undefined) return false
  if (month < 1 || month > 12 || hour > 23 || (minute ?? 0) > 59 || (second ?? 0) > 60) return false
  return day >= 1 && day <= new Date(Date.UTC(year ?? 0, month, 0)).getUTCDate()
}

/**
 * Decodes an MQTT payload as one JSON object: size cap, strict UTF-8, JSON, object.
 *
 * @param payload - the raw payload.
 * @param maxBytes - the size cap.
 * @returns the object, or why it was refused (`oversized`, `malformed`).
 */
export function decodeJsonObject(payload: Uint8Array, maxBytes: number): PayloadCheck<JsonObject> {
  if (payload.byteLength > maxBytes) {
    return { ok: false, reason: 'oversized', detail: `${payload.byteLength} bytes, limit ${maxBytes}` }
  }
  let value: unknown
  try {
    value = JSON.parse(utf8.decode(payload))
  } catch {
    return { ok: false, reason: 'malformed', detail: 'not UTF-8 JSON' }
  }
  if (!isObject(value)) return { ok: false, reason: 'malformed', detail: 'not a JSON object' }
  return { ok: true, value }
}

/**
 * Checks one reading payload against the reading schema.
 *
 * @param payload - the raw MQTT payload.
 * @returns the reading, or why it was refused.
 * @see ../../firmware-bridge/schema/reading.schema.json
 */
export function checkReading(payload: Uint8Array): PayloadCheck<Reading> {
  const decoded = decodeJsonObject(payload, MAX_READING_BYTES)
  if (!decoded.ok) return decoded
  const value = decoded.value
  const invalid = (detail: string): PayloadCheck<Reading> => ({ ok: false, reason: 'invalid', detail })
  for (const key of Object.keys(value)) {
    if (!READING_KEYS.has(key)) return invalid('unknown property')
  }
  if (!isLabel(value.sensor, 64)) return invalid('sensor must be 1-64 characters without control characters')
  if (!isUtcDateTime(value.at)) return invalid('at must be an ISO 8601 UTC date-time')
  if (
    'seq' in value &&
    (typeof value.seq !== 'number' || !Number.isSafeInteger(value.seq) || value.seq < 0)
  ) {
    return invalid('seq must be an integer from 0 to 2^53-1')
  }
  const values = value.values
  if (!isObject(values)) return invalid('values must be an object')
  const names = Object.keys(values)
  if (names.length < 1 || names.length > 256) return invalid('values must have 1-256 entries')
  for (const name of names) {
    if (!isLabel(name, 64)) return invalid('a value name must be 1-64 characters without control characters')
    const v = values[name]
    const ok =
      (typeof v === 'number' && Number.isFinite(v)) ||
      typeof v === 'boolean' ||
      (typeof v === 'string' && (v.length <= 1024 || codePoints(v) <= 1024))
    if (!ok) return invalid('each value must be a number, a boolean or a string of at most 1024 characters')
  }
  return { ok: true, value: value as Reading }
}

/** Counters of the reading ingest (exposed by the daemon in its status line and tests). */
export interface IngestCounters {
  /** Messages seen on the readings topic. */
  received: number
  /** Readings on disk in the spool. */
  accepted: number
  /** Dropped: larger than {@link MAX_READING_BYTES}. */
  oversized: number
  /** Dropped: not UTF-8 JSON, or not a JSON object. */
  malformed: number
  /** Dropped: a JSON object that breaks the schema (unknown field, wrong type, out of bounds). */
  invalid: number
  /** Dropped: published retained (a retained reading would be spooled again on every reconnect). */
  retained: number
  /** Valid, but the spool refused it (disk full, I/O error). */
  failed: number
}

/** Options of {@link startReadingIngest}. */
export interface ReadingIngestOptions {
  /** The MQTT client (connected or connecting); may be shared with the relay and the pair listener. */
  client: MqttClient
  /** The readings topic, `<prefix>/<deviceId>/readings`. */
  topic: string
  /** Appends records durably (the spool's `append`). */
  append: (records: readonly JsonObject[]) => Promise<void>
  /** Called for each dropped message (never with payload content). */
  onDrop?: (reason: DropReason, detail: string) => void
  /** Called when the spool refused a valid reading, and when the subscription failed. */
  onError?: (error: unknown) => void
  /**
   * After the spool refused a reading, reconnect this long later (doubling per refusal in a row,
   * up to 5 minutes, with jitter) so the broker redelivers it, ms. Default 5000.
   */
  redeliveryDelayMs?: number
}

/** Options of {@link ReadingIngest.close}. */
export interface ReadingIngestCloseOptions {
  /**
   * Unsubscribe from the readings topic. Default true. The daemon passes false when it stops: the
   * persistent session keeps the subscription, so the broker queues the readings published until
   * the next start. Readings that still arrive are then left unacknowledged (the broker redelivers
   * them), never acknowledged unspooled.
   */
  unsubscribe?: boolean
}

/** A running ingest; see {@link startReadingIngest}. */
export interface ReadingIngest {
  /** Live counters. */
  readonly counters: Readonly<IngestCounters>
  /**
   * Resolves once the broker acknowledged the subscription (SUBACK), so readings published from
   * then on reach this ingest; rejects when the broker refused it. Awaiting it is optional.
   */
  readonly ready: Promise<void>
  /** Resolves when every reading received so far is on disk (or failed). */
  idle(): Promise<void>
  /** Stops spooling and waits for readings in flight. The client stays open. */
  close(options?: ReadingIngestCloseOptions): Promise<void>
}

const HOLD = Symbol.for('edgetoken.ingest.ackHolds.v2')

type HoldingClient = MqttClient & { [HOLD]?: WeakMap<IPublishPacket, Promise<boolean>> }

/**
 * Makes the client's acknowledgement of `packet` (PUBACK) wait for `work`, and withholds it when
 * `work` resolves to false. Installs, once per client, a `handleMessage` that mqtt.js calls before
 * it sends the PUBACK of a QoS 1 message: calling back with an error makes mqtt.js skip the PUBACK.
 */
function holdAck(client: MqttClient, packet: IPublishPacket, work: Promise<boolean>): void {
  const c = client as HoldingClient
  let holds = c[HOLD]
  if (!holds) {
    const map = new WeakMap<IPublishPacket, Promise<boolean>>()
    holds = map
    c[HOLD] = map
    const previous = c.handleMessage.bind(c)
    c.handleMessage = (p, callback) => {
      const pending = map.get(p)
      if (!pending) {
        previous(p, callback)
        return
      }
      map.delete(p)
      void pending.then(
        (ack) => {
          if (ack) previous(p, callback)
          // Not on disk: no PUBACK, so the broker still owes us the message.
          else callback(new Error('reading not spooled; left unacknowledged for redelivery'))
        },
        () => callback(new Error('reading not spooled; left unacknowledged for redelivery')),
      )
    }
  }
  const before = holds.get(packet)
  holds.set(packet, before ? Promise.all([before, work]).then(([a, b]) => a && b) : work)
}

/**
 * Subscribes to `topic` (QoS 1); the promise settles with the SUBACK.
 *
 * @internal
 */
export function subscribeQos1(client: MqttClient, topic: string): Promise<void> {
  return client.subscribeAsync(topic, { qos: 1 }).then((granted) => {
    // SUBACK return code 0x80 (3.1.1) or a reason code >= 0x80 (MQTT 5): refused.
    const refused = granted.find((g) => g.qos > 2)
    if (refused) throw new Error(`the broker refused the subscription to ${topic} (code ${refused.qos})`)
  })
}

/**
 * Subscribes to the readings topic (QoS 1) and spools every valid reading; drops and counts the
 * rest. A reading the spool refused is not acknowledged, and the client reconnects (with
 * back-off) so that the broker redelivers it.
 *
 * @param options - client, topic, spool append and callbacks.
 * @returns the running ingest with its counters.
 * @see https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901238 (MQTT 5 §4.4, redelivery)
 * @example
 * ```ts
 * const ingest = startReadingIngest({ client, topic: topics.readings, append: (r) => spool.append(r) })
 * await ingest.ready
 * // ... later
 * await ingest.close()
 * ```
 */
export function startReadingIngest(options: ReadingIngestOptions): ReadingIngest {
  const { client, topic } = options
  const redeliveryDelayMs = options.redeliveryDelayMs ?? 5000
  const counters: IngestCounters = {
    received: 0,
    accepted: 0,
    oversized: 0,
    malformed: 0,
    invalid: 0,
    retained: 0,
    failed: 0,
  }
  const inFlight = new Set<Promise<boolean>>()
  let closed = false
  let refusalsInARow = 0
  let redeliveryTimer: NodeJS.Timeout | undefined

  const drop = (reason: DropReason, detail: string) => {
    counters[reason] += 1
    options.onDrop?.(reason, detail)
  }

  // Only a new connection makes the broker resend what we left unacknowledged (MQTT 5 §4.4).
  const scheduleRedelivery = () => {
    if (redeliveryTimer || closed) return
    const delay = backoffDelayMs(refusalsInARow - 1, { baseMs: redeliveryDelayMs, capMs: 300_000 })
    redeliveryTimer = setTimeout(() => {
      redeliveryTimer = undefined
      // Offline: mqtt.js reconnects by itself, and that redelivers too.
      if (!closed && client.connected) client.reconnect()
    }, delay)
    redeliveryTimer.unref()
  }

  const onMessage = (messageTopic: string, payload: Buffer, packet: IPublishPacket) => {
    if (messageTopic !== topic) return
    if (closed) {
      // Still subscribed (the session keeps the subscription): leave it to the broker.
      holdAck(client, packet, Promise.resolve(false))
      return
    }
    counters.received += 1
    if (packet.retain) {
      drop('retained', 'retained readings are not accepted')
      return
    }
    const checked = checkReading(payload)
    if (!checked.ok) {
      drop(checked.reason, checked.detail)
      return
    }
    const work = options.append([checked.value]).then(
      () => {
        counters.accepted += 1
        refusalsInARow = 0
        return true
      },
      (err: unknown) => {
        counters.failed += 1
        options.onError?.(err)
        if (packet.qos > 0) {
          refusalsInARow += 1
          scheduleRedelivery()
        }
        return false
      },
    )
    inFlight.add(work)
    void work.finally(() => inFlight.delete(work))
    holdAck(client, packet, work)
  }

  client.on('message', onMessage)
  const ready = subscribeQos1(client, topic)
  ready.catch((err: unknown) => {
    if (!closed) options.onError?.(err)
  })

  const idle = async () => {
    while (inFlight.size > 0) await Promise.allSettled([...inFlight])
  }

  return {
    counters,
    ready,
    idle,
    async close(closeOptions = {}) {
      if (closed) return
      closed = true
      if (redeliveryTimer) clearTimeout(redeliveryTimer)
      redeliveryTimer = undefined
      if (closeOptions.unsubscribe ?? true) {
        client.removeListener('message', onMessage)
        if (client.connected)
          await withDeadline(
            client.unsubscribeAsync(topic).catch(() => undefined),
            2000,
            { unref: true },
          )
      }
      await idle()
    },
  }
}
