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
 *
 * @packageDocumentation
 */
import type { IPublishPacket, MqttClient } from 'mqtt'
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
  /** Called when the spool refused a valid reading. */
  onError?: (error: unknown) => void
}

/** A running ingest; see {@link startReadingIngest}. */
export interface ReadingIngest {
  /** Live counters. */
  readonly counters: Readonly<IngestCounters>
  /** Resolves when every reading received so far is on disk (or failed). */
  idle(): Promise<void>
  /** Unsubscribes and waits for readings in flight. The client stays open. */
  close(): Promise<void>
}

const HOLD = Symbol.for('edgetoken.ingest.ackHolds')

type HoldingClient = MqttClient & { [HOLD]?: WeakMap<IPublishPacket, Promise<unknown>> }

/**
 * Makes the client's acknowledgement of `packet` (PUBACK) wait for `work`. Installs, once per
 * client, a `handleMessage` that mqtt.js calls before sending the PUBACK of a QoS 1 message.
 */
function holdAck(client: MqttClient, packet: IPublishPacket, work: Promise<unknown>): void {
  const c = client as HoldingClient
  let holds = c[HOLD]
  if (!holds) {
    const map = new WeakMap<IPublishPacket, Promise<unknown>>()
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
      // The work reports its own failures; the ack goes out either way (a clean session would
      // lose an unacknowledged message on the next reconnect anyway).
      void pending.then(
        () => previous(p, callback),
        () => previous(p, callback),
      )
    }
  }
  const before = holds.get(packet)
  holds.set(packet, before ? Promise.allSettled([before, work]) : work)
}

function withTimeout(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise.catch(() => undefined),
    new Promise((resolve) => {
      timer = setTimeout(resolve, ms)
      timer.unref()
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * Subscribes to the readings topic (QoS 1) and spools every valid reading; drops and counts the
 * rest.
 *
 * @param options - client, topic, spool append and callbacks.
 * @returns the running ingest with its counters.
 * @example
 * ```ts
 * const ingest = startReadingIngest({ client, topic: topics.readings, append: (r) => spool.append(r) })
 * // ... later
 * await ingest.close()
 * ```
 */
export function startReadingIngest(options: ReadingIngestOptions): ReadingIngest {
  const { client, topic } = options
  const counters: IngestCounters = {
    received: 0,
    accepted: 0,
    oversized: 0,
    malformed: 0,
    invalid: 0,
    retained: 0,
    failed: 0,
  }
  const inFlight = new Set<Promise<void>>()
  let closed = false

  const drop = (reason: DropReason, detail: string) => {
    counters[reason] += 1
    options.onDrop?.(reason, detail)
  }

  const onMessage = (messageTopic: string, payload: Buffer, packet: IPublishPacket) => {
    if (messageTopic !== topic || closed) return
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
      },
      (err: unknown) => {
        counters.failed += 1
        options.onError?.(err)
      },
    )
    inFlight.add(work)
    void work.finally(() => inFlight.delete(work))
    holdAck(client, packet, work)
  }

  client.on('message', onMessage)
  client.subscribe(topic, { qos: 1 }, (err) => {
    if (err && !closed) options.onError?.(err)
  })

  const idle = async () => {
    while (inFlight.size > 0) await Promise.allSettled([...inFlight])
  }

  return {
    counters,
    idle,
    async close() {
      if (closed) return
      closed = true
      client.removeListener('message', onMessage)
      if (client.connected) await withTimeout(client.unsubscribeAsync(topic), 2000)
      await idle()
    },
  }
}
