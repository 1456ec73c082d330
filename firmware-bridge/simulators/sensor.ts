/**
 * A sensor stand-in: publishes schema-valid readings (schema/reading.schema.json) to
 * `<prefix>/<deviceId>/readings` at a fixed rate, QoS 1, not retained.
 *
 * Uses only the published contract; never imports edgetoken's `src/`.
 *
 * @example
 * ```sh
 * node --import tsx firmware-bridge/simulators/sensor.ts --device-id pi-01 --sensor greenhouse-1 \
 *   --interval-ms 1000 --count 10
 * ```
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'

/** A reading value: what the schema allows. */
export type ReadingValue = number | string | boolean

/** One reading message (schema/reading.schema.json). */
export interface Reading {
  /** Which sensor measured (1-64 characters). */
  sensor: string
  /** When, ISO 8601 UTC. */
  at: string
  /** Per-sensor counter. */
  seq?: number
  /** Named measurements (at least one). */
  values: Record<string, ReadingValue>
}

/** Largest reading payload the contract allows, in bytes. */
export const MAX_READING_BYTES = 16 * 1024

/** Options of {@link startSensorSimulator}. */
export interface SensorSimulatorOptions {
  /** Broker URL, `mqtt://` or `mqtts://`. */
  url: string
  /** Topic prefix; default `edgetoken`. */
  topicPrefix?: string
  /** The agent's device id. */
  deviceId: string
  /** The `sensor` field of every reading (1-64 characters). */
  sensor: string
  /** Time between readings, in ms; the first is published at once. */
  intervalMs: number
  /** Stop after this many readings; default: until close(). */
  count?: number
  /** First `seq`; default 0. */
  startSeq?: number
  /** Makes the values of reading `seq`; default: a smooth temperature/humidity curve and a boolean. */
  values?: (seq: number) => Record<string, ReadingValue>
  /** The clock; default `() => new Date()`. */
  now?: () => Date
  /** CA certificate(s) to trust for `mqtts://` (PEM). */
  ca?: Buffer | string
  /** MQTT username. */
  username?: string
  /** MQTT password (the CLI reads it from `MQTT_PASSWORD`, never from argv). */
  password?: string
  /** MQTT protocol version; default 4. */
  protocolVersion?: 4 | 5
}

/** A running sensor simulator. */
export interface SensorSimulator {
  /** How many readings the broker acknowledged so far. */
  readonly published: number
  /** Resolves when `count` readings are acknowledged, or on close(); rejects if a publish fails. */
  done: Promise<void>
  /** Stops publishing and disconnects. Idempotent. */
  close(): Promise<void>
}

/**
 * The default values: deterministic in `seq`, so tests can predict them.
 *
 * @param seq - the reading's sequence number.
 * @returns temperature, humidity and a boolean.
 */
export function defaultValues(seq: number): Record<string, ReadingValue> {
  return {
    temperature_c: Math.round((21 + 2 * Math.sin(seq / 10)) * 100) / 100,
    humidity_pct: Math.round((50 + 10 * Math.cos(seq / 15)) * 10) / 10,
    fan_on: seq % 2 === 0,
  }
}

/**
 * Builds one reading payload, checking the contract's size and field limits.
 *
 * @param reading - the reading.
 * @returns its JSON bytes.
 * @throws RangeError when it breaks the contract (so a simulator never sends what the agent must reject).
 */
export function encodeReading(reading: Reading): Buffer {
  const sensorLength = [...reading.sensor].length
  if (sensorLength < 1 || sensorLength > 64) throw new RangeError('sensor must be 1-64 characters')
  if (Object.keys(reading.values).length < 1) throw new RangeError('a reading needs at least one value')
  const payload = Buffer.from(JSON.stringify(reading))
  if (payload.length > MAX_READING_BYTES)
    throw new RangeError(`reading is ${payload.length} bytes, over 16 KiB`)
  return payload
}

/**
 * Connects and publishes a reading every `intervalMs`.
 *
 * @param options - broker, topic, rate.
 * @returns the simulator once connected.
 * @throws when the broker refuses the connection.
 */
export async function startSensorSimulator(options: SensorSimulatorOptions): Promise<SensorSimulator> {
  if (!Number.isFinite(options.intervalMs) || options.intervalMs < 0) {
    throw new RangeError('intervalMs must be a non-negative number')
  }
  const topic = `${options.topicPrefix ?? 'edgetoken'}/${options.deviceId}/readings`
  const makeValues = options.values ?? defaultValues
  const now = options.now ?? (() => new Date())
  const connectOptions: IClientOptions = {
    protocolVersion: options.protocolVersion ?? 4,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    clientId: `edgesensor-sim-${options.sensor}-${process.pid}`.slice(0, 64),
  }
  if (options.ca !== undefined) connectOptions.ca = options.ca
  if (options.username !== undefined) connectOptions.username = options.username
  if (options.password !== undefined) connectOptions.password = options.password
  const client: MqttClient = await mqtt.connectAsync(options.url, connectOptions, false)

  let published = 0
  let seq = options.startSeq ?? 0
  let closed = false
  let timer: NodeJS.Timeout | undefined
  let finish: () => void = () => {}
  let fail: (err: unknown) => void = () => {}
  const done = new Promise<void>((resolve, reject) => {
    finish = resolve
    fail = reject
  })
  // A caller that only uses close() must not see an unhandled rejection.
  done.catch(() => {})

  const publishOne = async () => {
    if (closed) return
    if (options.count !== undefined && published >= options.count) {
      finish()
      return
    }
    const reading: Reading = { sensor: options.sensor, at: now().toISOString(), seq, values: makeValues(seq) }
    seq++
    try {
      await client.publishAsync(topic, encodeReading(reading), { qos: 1, retain: false })
    } catch (err) {
      if (!closed) fail(err)
      return
    }
    published++
    if (options.count !== undefined && published >= options.count) {
      finish()
      return
    }
    // Chained timeouts, not setInterval: a slow broker never gets overlapping publishes.
    if (!closed) timer = setTimeout(publishOne, options.intervalMs)
  }
  void publishOne()

  return {
    get published() {
      return published
    },
    done,
    async close() {
      if (closed) return
      closed = true
      clearTimeout(timer)
      finish()
      await client.endAsync()
    },
  }
}

async function cli(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'mqtt://127.0.0.1:1883' },
      prefix: { type: 'string', default: 'edgetoken' },
      'device-id': { type: 'string' },
      sensor: { type: 'string', default: 'sim-sensor' },
      'interval-ms': { type: 'string', default: '1000' },
      count: { type: 'string' },
      ca: { type: 'string' },
      username: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const intervalMs = Number(values['interval-ms'])
  const count = values.count === undefined ? undefined : Number(values.count)
  if (
    values.help ||
    !values['device-id'] ||
    !Number.isInteger(intervalMs) ||
    intervalMs < 0 ||
    (count !== undefined && (!Number.isInteger(count) || count < 1))
  ) {
    process.stderr.write(
      'usage: sensor.ts --device-id ID [--sensor NAME] [--interval-ms 1000] [--count N] [--url mqtt://127.0.0.1:1883]\n' +
        '       [--prefix edgetoken] [--ca FILE] [--username U]; password from MQTT_PASSWORD\n',
    )
    process.exitCode = values.help ? 0 : 2
    return
  }
  const options: SensorSimulatorOptions = {
    url: values.url,
    topicPrefix: values.prefix,
    deviceId: values['device-id'],
    sensor: values.sensor,
    intervalMs,
  }
  if (count !== undefined) options.count = count
  if (values.ca) options.ca = readFileSync(values.ca)
  if (values.username) options.username = values.username
  if (process.env.MQTT_PASSWORD) options.password = process.env.MQTT_PASSWORD
  const sim = await startSensorSimulator(options)
  const stop = () => void sim.close()
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  await sim.done
  await sim.close()
  process.stderr.write(`sensor simulator: ${sim.published} readings published\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  cli().catch((err: unknown) => {
    process.stderr.write(`sensor simulator: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
