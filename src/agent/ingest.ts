/**
 * MQTT ingest into the spool: sensor readings on `<prefix>/<deviceId>/readings`, and the messages
 * of existing firmware on the configured `mqtt.subscriptions` (Zigbee2MQTT, Tasmota, ESPHome,
 * Shelly), all at QoS 1.
 *
 * - A reading is any JSON object, spooled as it came, like a `send` record; the firmware-bridge
 *   reading schema is the recommended shape, not a filter. A message on a subscription is spooled
 *   as `{"topic","received_at","payload"}`. Every payload passes the same checks: size cap 16 KiB,
 *   strict UTF-8, one JSON object. A bad message is dropped and counted, never a crash and never
 *   spooled. Retained messages are dropped too: the broker replays them on every (re)subscription,
 *   so spooling them would duplicate stale values; a retained publish made while the agent is
 *   subscribed still arrives, without the retain flag (MQTT 3.1.1 §3.3.1.3, MQTT 5 §3.3.1.3).
 * - A message larger than the connection's packet cap (64 KiB) never reaches the parser: the broker
 *   discards it (MQTT 5) or the stream skips it and hands over a stand-in (3.1.1), counted here as
 *   oversized; see ../display/mqtt-packet-cap.ts.
 * - The broker gets its PUBACK only after the record is on disk (the spool's fsync): mqtt.js
 *   handles incoming packets one at a time, so records are spooled in the order they arrived and a
 *   slow disk pushes back on the broker instead of filling memory.
 * - A record the spool refused (disk full, I/O error) gets no PUBACK at all: the broker still
 *   owes it. MQTT resends an unacknowledged PUBLISH only when the session is resumed on a new
 *   connection (MQTT 5 §4.4, 3.1.1 §4.4), so the ingest reconnects, with back-off, to have it
 *   redelivered. That needs a persistent session (`connectMqtt` with `sessionExpirySeconds`), which
 *   also queues the messages published while the agent is not running.
 *
 * @packageDocumentation
 */
import type { IPublishPacket, MqttClient } from 'mqtt'
import { topicMatches } from '../config/rules.js'
import { oversizedPayloadSize } from '../display/mqtt-packet-cap.js'
import { backoffDelayMs } from '../lib/backoff.js'
import { withDeadline } from '../lib/deadline.js'
import { isObject, type JsonObject } from '../lib/validate.js'
import { jsonTooDeep, MAX_JSON_DEPTH } from '../telemetry/json-depth.js'

/** Largest payload accepted on the readings topic and on subscriptions, bytes. */
export const MAX_READING_BYTES = 16 * 1024

/** Why a message was dropped. */
export type DropReason = 'oversized' | 'malformed' | 'invalid' | 'retained'

/** The result of checking one payload. */
export type PayloadCheck<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: DropReason; readonly detail: string }

/** What a message on a subscription becomes in the spool. */
export interface SubscriptionRecord extends JsonObject {
  /** The topic it was published to. */
  topic: string
  /** When the agent received it, ISO 8601 UTC. */
  received_at: string
  /** The message, a JSON object as it came. */
  payload: JsonObject
}

// The schema's date-time pattern, with the fields captured for the calendar check.
const DATE_TIME = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z$/
const utf8 = new TextDecoder('utf-8', { fatal: true })

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
 * @param maxDepth - the nesting cap (default 64, the spool's).
 * @returns the object, or why it was refused (`oversized`, `malformed`).
 */
export function decodeJsonObject(
  payload: Uint8Array,
  maxBytes: number,
  maxDepth: number = MAX_JSON_DEPTH,
): PayloadCheck<JsonObject> {
  if (payload.byteLength > maxBytes) {
    return { ok: false, reason: 'oversized', detail: `${payload.byteLength} bytes, limit ${maxBytes}` }
  }
  // The spool refuses records nested deeper than it can serialise safely; refused by the spool, a
  // QoS 1 message would be redelivered for ever. Dropped here instead, as malformed, and acked.
  if (jsonTooDeep(payload, maxDepth)) {
    return { ok: false, reason: 'malformed', detail: `nested deeper than ${maxDepth} levels` }
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
 * Counters of the ingest, over the readings topic and the subscriptions together (exposed by the
 * daemon in its summary and tests).
 */
export interface IngestCounters {
  /** Messages seen on the readings topic and on the subscriptions. */
  received: number
  /** Records on disk in the spool. */
  accepted: number
  /**
   * Dropped: larger than {@link MAX_READING_BYTES}, or skipped unread by the packet cap (MQTT 3.1.1;
   * over MQTT 5 the broker discards those itself and they are not counted here).
   */
  oversized: number
  /** Dropped: not UTF-8 JSON, or not a JSON object. */
  malformed: number
  /** Dropped: delivered retained (the broker replays it on every subscription: a stale duplicate). */
  retained: number
  /** Well-formed, but the spool refused it (disk full, I/O error). */
  failed: number
}

/** Options of {@link startReadingIngest}. */
export interface ReadingIngestOptions {
  /** The MQTT client (connected or connecting); may be shared with the relay and the pair listener. */
  client: MqttClient
  /** The readings topic, `<prefix>/<deviceId>/readings`. */
  topic: string
  /**
   * Topic filters of existing firmware to spool as `{"topic","received_at","payload"}` (already
   * validated; none may match `topic`). Default none.
   */
  subscriptions?: readonly string[]
  /** Other topics of this device (login, status, pair): never spooled, whatever a filter matches. */
  ownTopics?: readonly string[]
  /** Appends records durably (the spool's `append`). */
  append: (records: readonly JsonObject[]) => Promise<void>
  /** Called for each dropped message (never with payload content). */
  onDrop?: (reason: DropReason, detail: string) => void
  /** Called when the spool refused a record, and when a subscription failed. */
  onError?: (error: unknown) => void
  /**
   * After the spool refused a record, reconnect this long later (doubling per refusal in a row,
   * up to 5 minutes, with jitter) so the broker redelivers it, ms. Default 5000.
   */
  redeliveryDelayMs?: number
  /** The clock of `received_at`, ms since the epoch. Default `Date.now`. */
  now?: () => number
}

/** Options of {@link ReadingIngest.close}. */
export interface ReadingIngestCloseOptions {
  /**
   * Unsubscribe from the readings topic and the subscriptions. Default true. The daemon passes
   * false when it stops: the persistent session keeps the subscriptions, so the broker queues the
   * messages published until the next start. Messages that still arrive are then left
   * unacknowledged (the broker redelivers them), never acknowledged unspooled.
   */
  unsubscribe?: boolean
}

/** A running ingest; see {@link startReadingIngest}. */
export interface ReadingIngest {
  /** Live counters. */
  readonly counters: Readonly<IngestCounters>
  /**
   * Resolves once the broker acknowledged the subscriptions (SUBACK), so messages published from
   * then on reach this ingest; rejects when the broker refused one. Awaiting it is optional.
   */
  readonly ready: Promise<void>
  /** Resolves when every record received so far is on disk (or failed). */
  idle(): Promise<void>
  /** Stops spooling and waits for records in flight. The client stays open. */
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
 * Subscribes to `topic` (QoS 1), or to several topic filters at once; the promise settles with
 * the SUBACK.
 *
 * @internal
 */
export function subscribeQos1(client: MqttClient, topic: string | readonly string[]): Promise<void> {
  const topics = typeof topic === 'string' ? [topic] : [...topic]
  return client.subscribeAsync(topics, { qos: 1 }).then((granted) => {
    // SUBACK return code 0x80 (3.1.1) or a reason code >= 0x80 (MQTT 5): refused.
    const refused = granted.find((g) => g.qos > 2)
    if (refused) {
      throw new Error(`the broker refused the subscription to ${refused.topic} (code ${refused.qos})`)
    }
  })
}

/**
 * Subscribes to the readings topic and the configured subscriptions (QoS 1) and spools every JSON
 * object that arrives; drops and counts the rest. A record the spool refused is not acknowledged,
 * and the client reconnects (with back-off) so that the broker redelivers it.
 *
 * @param options - client, topics, spool append and callbacks.
 * @returns the running ingest with its counters.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when a subscription filter matches the readings topic
 *   (the broker could deliver each reading twice).
 * @see https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901238 (MQTT 5 §4.4, redelivery)
 * @example
 * ```ts
 * const ingest = startReadingIngest({
 *   client,
 *   topic: topics.readings,
 *   subscriptions: ['zigbee2mqtt/+', 'tele/+/SENSOR'],
 *   append: (r) => spool.append(r),
 * })
 * await ingest.ready
 * // ... later
 * await ingest.close()
 * ```
 */
export function startReadingIngest(options: ReadingIngestOptions): ReadingIngest {
  const { client, topic } = options
  const filters = [...(options.subscriptions ?? [])]
  const own = new Set([topic, ...(options.ownTopics ?? [])])
  const overlapping = filters.find((f) => topicMatches(f, topic))
  if (overlapping !== undefined) {
    throw Object.assign(
      new TypeError(`the subscription ${overlapping} matches the readings topic ${topic}`),
      { code: 'ERR_INVALID_ARG_VALUE' },
    )
  }
  const now = options.now ?? Date.now
  const redeliveryDelayMs = options.redeliveryDelayMs ?? 5000
  const counters: IngestCounters = {
    received: 0,
    accepted: 0,
    oversized: 0,
    malformed: 0,
    retained: 0,
    failed: 0,
  }
  const inFlight = new Set<Promise<boolean>>()
  let closed = false
  let refusalsInARow = 0
  let redeliveryTimer: NodeJS.Timeout | undefined

  const drop = (reason: Exclude<DropReason, 'invalid'>, detail: string) => {
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
    const isReading = messageTopic === topic
    // The readings topic is a reading only; the device's other topics are never sensor data.
    if (!isReading && (own.has(messageTopic) || !filters.some((f) => topicMatches(f, messageTopic)))) return
    if (closed) {
      // Still subscribed (the session keeps the subscription): leave it to the broker.
      holdAck(client, packet, Promise.resolve(false))
      return
    }
    counters.received += 1
    const where = isReading ? 'reading' : 'subscribed message'
    if (packet.retain) {
      drop('retained', `retained ${where}s are not spooled`)
      return
    }
    const skipped = oversizedPayloadSize(payload)
    if (skipped !== undefined) {
      drop('oversized', `${where} of ${skipped} bytes, over the MQTT packet limit; skipped unread`)
      return
    }
    // A subscription's payload sits one level down in its record.
    const decoded = decodeJsonObject(
      payload,
      MAX_READING_BYTES,
      isReading ? MAX_JSON_DEPTH : MAX_JSON_DEPTH - 1,
    )
    if (!decoded.ok) {
      drop(decoded.reason === 'oversized' ? 'oversized' : 'malformed', `${where}: ${decoded.detail}`)
      return
    }
    const record: JsonObject = isReading
      ? decoded.value
      : ({
          topic: messageTopic,
          received_at: new Date(now()).toISOString(),
          payload: decoded.value,
        } satisfies SubscriptionRecord)
    const work = options.append([record]).then(
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
  const ready = subscribeQos1(client, [topic, ...filters])
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
            client.unsubscribeAsync([topic, ...filters]).catch(() => undefined),
            2000,
            { unref: true },
          )
      }
      await idle()
    },
  }
}
