/**
 * Records every message a test broker delivers on a topic filter, so tests can assert what was
 * published (payload, retain flag, QoS, MQTT 5 message expiry).
 *
 * @packageDocumentation
 */
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { clientOptions, type TestBroker } from './mosquitto.js'

/** One message as the recorder received it. */
export interface RecordedMessage {
  /** The topic it was published on. */
  topic: string
  /** The payload bytes (zero-length for a retained-message clear). */
  payload: Buffer
  /** True when delivered as a retained message (i.e. it was stored before the recorder subscribed). */
  retain: boolean
  /** The QoS it was delivered with (the recorder subscribes with QoS 2, so this is the publish QoS). */
  qos: 0 | 1 | 2
  /** `Date.now()` on arrival. */
  at: number
  /** MQTT 5 properties, when the recorder speaks v5. */
  properties?: { messageExpiryInterval?: number }
}

/** A subscribed recorder. */
export interface Recorder {
  /** Every message received so far, in arrival order. */
  messages: RecordedMessage[]
  /**
   * Resolves with the first message (already received or future) matching `pred`.
   *
   * @param pred - the match.
   * @param timeoutMs - reject after this long; default 10 000.
   */
  waitFor(pred: (m: RecordedMessage) => boolean, timeoutMs?: number): Promise<RecordedMessage>
  /**
   * Resolves once every message the broker had queued for the recorder so far has arrived, in
   * particular every retained message of the filter: a round trip of a marker on a private topic
   * (the broker delivers one client's messages in order). Use it to assert that nothing is retained.
   *
   * @param timeoutMs - reject after this long; default 10 000.
   */
  settle(timeoutMs?: number): Promise<void>
  /** Disconnects. Idempotent. */
  close(): Promise<void>
}

/** Options of {@link startRecorder}. */
export interface StartRecorderOptions {
  /** MQTT protocol version; default 4 (3.1.1). Use 5 to see message expiry. */
  protocolVersion?: 4 | 5
}

/**
 * Connects to a test broker (TLS and credentials taken from it), subscribes to `topicFilter` with
 * QoS 2 and records every message. Resolves once the subscription is acknowledged, so retained
 * messages are already on their way.
 *
 * @param broker - the broker from `startBroker()`.
 * @param topicFilter - e.g. `edgetoken/dev1/#`.
 * @param options - protocol version.
 * @returns the recorder; `close()` it.
 * @example
 * ```ts
 * const rec = await startRecorder(broker, 'edgetoken/dev1/login', { protocolVersion: 5 })
 * t.after(() => rec.close())
 * const m = await rec.waitFor((m) => m.retain && m.payload.length > 0)
 * ```
 */
export async function startRecorder(
  broker: TestBroker,
  topicFilter: string,
  options: StartRecorderOptions = {},
): Promise<Recorder> {
  const connectOptions: IClientOptions = clientOptions(broker, {
    protocolVersion: options.protocolVersion ?? 4,
  })
  const client: MqttClient = await mqtt.connectAsync(broker.url, connectOptions)
  const messages: RecordedMessage[] = []
  const waiters = new Set<(m: RecordedMessage) => void>()
  const markerTopic = `edgetoken-test-recorder/${connectOptions.clientId}`
  const markers = new Map<string, () => void>()
  let markerCount = 0
  client.on('message', (topic, payload, packet) => {
    if (topic === markerTopic) {
      markers.get(payload.toString())?.()
      return
    }
    const m: RecordedMessage = { topic, payload, retain: packet.retain, qos: packet.qos, at: Date.now() }
    const expiry = packet.properties?.messageExpiryInterval
    if (packet.properties) m.properties = expiry === undefined ? {} : { messageExpiryInterval: expiry }
    messages.push(m)
    for (const w of waiters) w(m)
  })
  try {
    const granted = await client.subscribeAsync({ [markerTopic]: { qos: 1 }, [topicFilter]: { qos: 2 } })
    const failed = granted.find((g) => g.qos === 128 || (g.qos as number) > 2)
    if (failed) throw new Error(`subscription to ${topicFilter} refused`)
  } catch (err) {
    await client.endAsync(true)
    throw err
  }

  let closed = false
  return {
    messages,
    waitFor(pred, timeoutMs = 10_000) {
      const found = messages.find(pred)
      if (found) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const waiter = (m: RecordedMessage) => {
          if (!pred(m)) return
          clearTimeout(timer)
          waiters.delete(waiter)
          resolve(m)
        }
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          const seen = messages.map(
            (m) => `${m.topic}${m.retain ? ' (retained)' : ''}: ${m.payload.toString()}`,
          )
          reject(
            new Error(
              `no matching message on ${topicFilter} within ${timeoutMs} ms; got ${seen.length}: ${seen.join(' | ').slice(0, 1000)}`,
            ),
          )
        }, timeoutMs)
        waiters.add(waiter)
      })
    },
    async settle(timeoutMs = 10_000) {
      const id = String(++markerCount)
      const arrived = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          markers.delete(id)
          reject(new Error(`recorder marker did not come back within ${timeoutMs} ms`))
        }, timeoutMs)
        markers.set(id, () => {
          clearTimeout(timer)
          markers.delete(id)
          resolve()
        })
      })
      await client.publishAsync(markerTopic, id, { qos: 1 })
      await arrived
    },
    async close() {
      if (closed) return
      closed = true
      waiters.clear()
      await client.endAsync(true)
    },
  }
}
