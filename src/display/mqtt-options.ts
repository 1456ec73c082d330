/**
 * MQTT connection set-up shared by the login relay and the daemon: topics, TLS files, credentials
 * (inline, or read from a password file), last will, a cap on incoming packet size, reconnect with
 * back-off, and a fall-back to MQTT 3.1.1 for brokers that refuse 5.
 * mqtt.js is imported only here, and only when a connection is made.
 *
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { open, readFile } from 'node:fs/promises'
import type { Duplex } from 'node:stream'
import type { IClientOptions, MqttClient } from 'mqtt'
import type { MqttConfig } from '../config/types.js'
import { ConfigError, EdgeTokenError } from '../errors.js'
import { backoffDelayMs } from '../lib/backoff.js'
import { isPrintable } from '../lib/validate.js'
import { capIncomingPackets, MAX_INCOMING_PACKET_BYTES, type OversizedPublish } from './mqtt-packet-cap.js'

/** The topics of one device. */
export interface MqttTopics {
  /** `<prefix>/<deviceId>/login`: the companion-display relay (retained pending code). */
  readonly login: string
  /** `<prefix>/<deviceId>/status`: retained `online`, last will `offline`. */
  readonly status: string
  /** `<prefix>/<deviceId>/readings`: sensor readings the agent spools. */
  readonly readings: string
  /** `<prefix>/<deviceId>/pair`: a companion display asking for a new sign-in. */
  readonly pair: string
}

/**
 * The topics of a device under a prefix.
 *
 * @param topicPrefix - the configured prefix (already validated: no wildcards).
 * @param deviceId - the device id (already validated: one topic level).
 * @returns the topic names.
 */
export function mqttTopics(topicPrefix: string, deviceId: string): MqttTopics {
  const base = `${topicPrefix}/${deviceId}`
  return Object.freeze({
    login: `${base}/login`,
    status: `${base}/status`,
    readings: `${base}/readings`,
    pair: `${base}/pair`,
  })
}

/** Options of {@link mqttClientOptions} and {@link connectMqtt}. */
export interface MqttConnectOptions {
  /** The device id (topics and the client id). */
  deviceId: string
  /** A word for the client id (`login`, `agent`), so two edgetoken processes do not kick each other off. Default `edgetoken`. */
  role?: string
  /** Set a last will of retained `offline` on the status topic. Default true. */
  presence?: boolean
  /**
   * Keep the session at the broker this long after a disconnect, seconds: its subscriptions, and
   * the QoS 1 messages published meanwhile, are queued and delivered on the next connect. With it
   * the client id is stable (`edgetoken-<role>-<deviceId>`, so the next run finds the session) and
   * Clean Start is off; MQTT 5 sends it as the Session Expiry Interval (MQTT 3.1.1 has none: the
   * broker keeps the session as long as it is configured to). Default: none, a clean session
   * under a random client id (a one-shot `login` must not take over the agent's session).
   */
  sessionExpirySeconds?: number
  /** How long one connection attempt may take, ms. Default 4000. */
  connectTimeoutMs?: number
  /** First reconnect delay, ms (doubles per failed attempt, with jitter). Default 1000. */
  reconnectBaseMs?: number
  /** Largest reconnect delay, ms. Default 60000. */
  reconnectCapMs?: number
  /**
   * Largest incoming MQTT packet, bytes (MQTT 5 Maximum Packet Size, enforced on the stream for
   * 3.1.1 too; see ./mqtt-packet-cap.ts). Default {@link MAX_INCOMING_PACKET_BYTES} (64 KiB).
   */
  maxPacketBytes?: number
  /** Called for each PUBLISH skipped for its size (the client acknowledges a stand-in instead). */
  onOversized?: (info: OversizedPublish) => void
}

/** Largest password file read, bytes (a password is at most 1024 characters, plus a newline). */
const MAX_PASSWORD_FILE_BYTES = 4096

/**
 * Reads the broker password from `mqtt.passwordFile` (or the systemd credential the config
 * resolved to it): a regular file (a FIFO or a device is refused before it is read, so opening
 * one cannot block or stream without end), at most 4 KiB, strict UTF-8, one trailing newline
 * stripped, then the same rules as `mqtt.password`. Messages name the file, never its content.
 *
 * @param file - the absolute path.
 * @returns the password.
 * @throws ConfigError (`mqtt.passwordFile`) when the file is unusable.
 */
export async function readPasswordFile(file: string): Promise<string> {
  const bad = (why: string, cause?: unknown): never => {
    throw new ConfigError(
      `config: mqtt.passwordFile ${file} ${why}`,
      cause === undefined ? { key: 'mqtt.passwordFile' } : { key: 'mqtt.passwordFile', cause },
    )
  }
  let handle: Awaited<ReturnType<typeof open>> | undefined
  let bytes: Buffer
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
    const stat = await handle.stat()
    if (!stat.isFile()) return bad('is not a regular file')
    if (stat.size > MAX_PASSWORD_FILE_BYTES) return bad(`is larger than ${MAX_PASSWORD_FILE_BYTES} bytes`)
    const buffer = Buffer.alloc(MAX_PASSWORD_FILE_BYTES + 1)
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
    if (bytesRead > MAX_PASSWORD_FILE_BYTES) return bad(`is larger than ${MAX_PASSWORD_FILE_BYTES} bytes`)
    bytes = buffer.subarray(0, bytesRead)
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    return bad(`cannot be read (${code})`, err)
  } finally {
    await handle?.close()
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
  } catch {
    return bad('is not UTF-8 text')
  }
  // Editors and `echo` end the file with a newline; exactly one is not part of the password.
  text = text.replace(/\r?\n$/, '')
  if (text.length === 0) return bad('is empty')
  if (text.length > 1024) return bad('holds more than 1024 characters')
  if (!isPrintable(text)) return bad('holds control characters (only one trailing newline is allowed)')
  return text
}

async function readPem(file: string, key: string): Promise<Buffer> {
  try {
    return await readFile(file)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new ConfigError(`config: ${key} cannot be read (${file}: ${code})`, { key, cause: err })
  }
}

/**
 * mqtt.js client options for a configured broker.
 *
 * @param config - the MQTT configuration.
 * @param options - device id, presence and timing.
 * @returns options for `mqtt.connect(config.url, ...)`.
 * @throws ConfigError when a TLS file or the password file cannot be read; TypeError
 *   `ERR_INVALID_ARG_VALUE` for a `sessionExpirySeconds` that is not a whole number of seconds from
 *   1 to 2^32-1, or a `maxPacketBytes` out of range.
 */
export async function mqttClientOptions(
  config: MqttConfig,
  options: MqttConnectOptions,
): Promise<IClientOptions> {
  const topics = mqttTopics(config.topicPrefix, options.deviceId)
  const role = options.role ?? 'edgetoken'
  const expiry = options.sessionExpirySeconds
  if (expiry !== undefined && !(Number.isSafeInteger(expiry) && expiry > 0 && expiry <= 0xffffffff)) {
    throw Object.assign(
      new TypeError('sessionExpirySeconds must be a whole number of seconds from 1 to 2^32-1'),
      { code: 'ERR_INVALID_ARG_VALUE' },
    )
  }
  const persistent = expiry !== undefined
  const maxPacketBytes = options.maxPacketBytes ?? MAX_INCOMING_PACKET_BYTES
  if (!(Number.isSafeInteger(maxPacketBytes) && maxPacketBytes >= 1024 && maxPacketBytes <= 268_435_460)) {
    throw Object.assign(new TypeError('maxPacketBytes must be an integer from 1024 to 268435460'), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
  }
  const out: IClientOptions = {
    protocolVersion: config.protocolVersion ?? 5,
    // MQTT 5 §3.1.2.4 / 3.1.1 §3.1.2.4: a session is found again by its client id, so a
    // persistent one needs a stable id (never cut: two long device ids must not collide).
    clientId: persistent
      ? `edgetoken-${role}-${options.deviceId}`
      : `${role}-${options.deviceId}-${randomBytes(4).toString('hex')}`.slice(0, 64),
    clean: !persistent,
    keepalive: 30,
    connectTimeout: options.connectTimeoutMs ?? 4000,
    reconnectPeriod: options.reconnectBaseMs ?? 1000,
    // Without a connection, QoS 0 messages are dropped rather than queued without bound.
    queueQoSZero: false,
  }
  if (out.protocolVersion === 5) {
    // MQTT 5 §3.1.2.11.4: the broker must not send a larger packet; it discards such a message as
    // if delivered [MQTT-3.1.2-25], so a huge reading is never redelivered to a restarted agent.
    out.properties = { maximumPacketSize: maxPacketBytes }
    // MQTT 5 §3.1.2.11.2: without a Session Expiry Interval the session ends with the connection.
    if (persistent) out.properties.sessionExpiryInterval = expiry
  }
  if (options.presence ?? true) {
    out.will = { topic: topics.status, payload: Buffer.from('offline'), qos: 1, retain: true }
  }
  if (config.username !== undefined) out.username = config.username
  if (config.password !== undefined) out.password = config.password
  else if (config.passwordFile !== undefined) out.password = await readPasswordFile(config.passwordFile)
  if (config.url.startsWith('mqtts:')) {
    out.rejectUnauthorized = true
    if (config.caFile) out.ca = await readPem(config.caFile, 'mqtt.caFile')
    if (config.certFile) out.cert = await readPem(config.certFile, 'mqtt.certFile')
    if (config.keyFile) out.key = await readPem(config.keyFile, 'mqtt.keyFile')
  }
  return out
}

// CONNACK "unacceptable protocol version": 1 in MQTT 3.1.1, 0x84 in MQTT 5.
const UNSUPPORTED_PROTOCOL = new Set([1, 132])
const retried = new WeakSet<Error>()

/**
 * Whether a client `error` was a refusal of MQTT 5 that {@link connectMqtt} already answers by
 * retrying with 3.1.1 (so it is not worth a warning).
 *
 * @param err - an error the client emitted.
 * @returns true when a retry is under way.
 */
export function isRetriedWithOlderProtocol(err: Error): boolean {
  return retried.has(err)
}

/**
 * Starts connecting to the broker and returns the client at once (it connects in the background).
 * Reconnects after a lost connection with exponential back-off and jitter; when the broker
 * refuses MQTT 5 and no version was configured, retries with 3.1.1.
 *
 * @param config - the MQTT configuration.
 * @param options - device id, presence and timing.
 * @returns the mqtt.js client; listen for `connect`, and `error` (an error listener is installed so
 *   a refused connection never crashes the process).
 * @throws ConfigError when a TLS file or the password file cannot be read.
 */
export async function connectMqtt(config: MqttConfig, options: MqttConnectOptions): Promise<MqttClient> {
  const clientOptions = await mqttClientOptions(config, options)
  // mqtt is CommonJS: its module.exports is the ESM default export.
  const { default: mqtt } = await import('mqtt')
  // Connect by hand, once the stream every connection gets is wrapped in the packet-size cap.
  const client = mqtt.connect(config.url, { ...clientOptions, manualConnect: true })
  const internals = client as unknown as { streamBuilder: (c: MqttClient) => Duplex }
  const build = internals.streamBuilder
  // mqtt.js keeps the builder on the client (5.x); fail loudly rather than run without the cap
  // (test/agent/mqtt-packet-cap.test.ts measures it against mosquitto).
  if (typeof build !== 'function') {
    client.end(true)
    throw new EdgeTokenError('ERR_INTERNAL', 'mqtt.js has no stream builder to cap incoming packets with')
  }
  const maxBytes = options.maxPacketBytes ?? MAX_INCOMING_PACKET_BYTES
  internals.streamBuilder = (c) =>
    capIncomingPackets(build(c), {
      maxBytes,
      // Read per connection: the fall-back below switches to 3.1.1 between two connections.
      protocolVersion: client.options.protocolVersion ?? 4,
      ...(options.onOversized ? { onOversized: options.onOversized } : {}),
    })
  client.connect()
  // manualConnect also changes how end() settles; from here on the client behaves as usual.
  client.options.manualConnect = false
  const base = options.reconnectBaseMs ?? 1000
  const cap = options.reconnectCapMs ?? 60_000
  let attempt = 0
  client.on('reconnect', () => {
    // mqtt.js arms its timer from options.reconnectPeriod at each close: grow it per failure.
    attempt += 1
    client.options.reconnectPeriod = backoffDelayMs(attempt, { baseMs: base, capMs: cap })
  })
  client.on('connect', () => {
    attempt = 0
    client.options.reconnectPeriod = base
  })
  client.on('error', (err: Error & { code?: unknown }) => {
    if (
      config.protocolVersion === undefined &&
      client.options.protocolVersion === 5 &&
      typeof err.code === 'number' &&
      UNSUPPORTED_PROTOCOL.has(err.code)
    ) {
      retried.add(err)
      client.options.protocolVersion = 4
      // MQTT 3.1.1 has no CONNECT properties (the session expiry and maximum packet size among
      // them); the stream keeps capping packets.
      delete client.options.properties
      client.reconnect()
    }
  })
  return client
}
