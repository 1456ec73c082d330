/**
 * The daemon's MQTT side, on one client: presence (retained `online` on every connect), broker
 * trouble worded once per outage, the companion display's relay, the ingest of sensor readings
 * and of the configured `mqtt.subscriptions` into the spool, and, when pairing is on, the listener
 * for pair requests. Incoming packets are capped at 64 KiB (see ../display/mqtt-packet-cap.ts).
 *
 * Separate from the daemon because it is the only part that knows about the broker: the rest of
 * the daemon sees the client, the topics and the listeners it has to close, nothing else. The
 * MQTT modules are loaded only here, so a daemon without MQTT never loads them.
 *
 * @packageDocumentation
 */
import type { MqttClient } from 'mqtt'
import type { MqttConfig } from '../../config/types.js'
import type { MqttTopics } from '../../display/mqtt-options.js'
import type { MqttRelay } from '../../display/mqtt-relay.js'
import { withDeadline } from '../../lib/deadline.js'
import type { Spool } from '../../telemetry/spool/spool.js'
import type { ReadingIngest } from '../ingest.js'
import type { PairCounters, PairListener } from '../pair.js'
import { type DaemonOutput, errorText } from './daemon-output.js'

/** One line per kind of trouble at most this often, ms. */
const LOG_INTERVAL_MS = 60_000
/** How long the broker keeps the agent's session (and queues readings) while it is not running, s. */
const MQTT_SESSION_EXPIRY_SECONDS = 86_400
/** How long the start waits for the broker to acknowledge the subscriptions, ms. */
const SUBSCRIBE_WAIT_MS = 5000

/** What the MQTT side needs to hand a pair request on; see {@link DaemonMqttOptions.pair}. */
export interface DaemonPairHooks {
  /** Whether a sign-in is running now (a pair request is then refused as busy). */
  busy: () => boolean
  /**
   * Whether the device needs a sign-in now: a request while it is signed in is refused as
   * `signed-in` (counted, and the 30 s rate window is not used up).
   */
  signinRequired: () => boolean
  /** An accepted pair request: start a device sign-in. */
  onPair: () => void
}

/** Options of {@link startDaemonMqtt}. */
export interface DaemonMqttOptions {
  /** The MQTT settings. */
  config: MqttConfig
  /** This device's id (topic level, client id). */
  deviceId: string
  /** The spool readings are appended to. */
  spool: Spool
  /** The daemon's stop signal: connection loss while stopping is not worth a warning. */
  signal: AbortSignal
  /** Log and warnings. */
  output: Pick<DaemonOutput, 'log' | 'warn'>
  /** When pairing is enabled (mqtt.allowPair and a sign-in hook): how to hand pair requests on. */
  pair?: DaemonPairHooks | undefined
}

/** The running MQTT side; see {@link startDaemonMqtt}. */
export interface DaemonMqtt {
  /** The daemon's client (persistent session); the shutdown ends it. */
  readonly client: MqttClient
  /** This device's topics. */
  readonly topics: MqttTopics
  /** The companion display's relay, on {@link DaemonMqtt.client}. */
  readonly relay: MqttRelay
  /** The readings ingest. */
  readonly ingest: ReadingIngest
  /** The pair listener, when pairing is enabled. */
  readonly pairListener: PairListener | undefined
  /** Live pair request counters, when pairing is enabled. */
  readonly pairCounters: PairCounters | undefined
}

/**
 * Connects to the broker and starts presence, the relay, the ingest and (optionally) the pair
 * listener. The connection itself is retried in the background; trouble is warned about once.
 *
 * @param options - settings, device id, spool, signal, output and the pair hooks.
 * @returns the running MQTT side.
 * @throws what `connectMqtt` throws for unusable settings (e.g. an unreadable CA file).
 */
export async function startDaemonMqtt(options: DaemonMqttOptions): Promise<DaemonMqtt> {
  const { config, deviceId, spool, signal } = options
  const { log, warn } = options.output
  const [{ connectMqtt, mqttTopics }, { createMqttRelay }, { startReadingIngest }, pair] = await Promise.all([
    import('../../display/mqtt-options.js'),
    import('../../display/mqtt-relay.js'),
    import('../ingest.js'),
    import('../pair.js'),
  ])
  const topics = mqttTopics(config.topicPrefix, deviceId)
  const subscriptions = config.subscriptions ?? []
  // A persistent session under a stable client id: QoS 1 readings published while the agent
  // restarts (or stops for less than a day) are queued by the broker and delivered on connect,
  // and readings the spool refused are redelivered (see ingest.ts). The login relay keeps its
  // own clean session and client id.
  const client = await connectMqtt(config, {
    deviceId,
    role: 'agent',
    presence: true,
    sessionExpirySeconds: MQTT_SESSION_EXPIRY_SECONDS,
  })
  let connectedOnce = false
  let brokerWarned = false
  client.on('connect', () => {
    if (!connectedOnce) {
      const more = subscriptions.length > 0 ? ` and ${subscriptions.join(', ')}` : ''
      log(`edgetoken: connected to the MQTT broker; listening on ${topics.readings}${more}`)
    }
    connectedOnce = true
    brokerWarned = false
    client.publish(topics.status, 'online', { qos: 1, retain: true })
  })
  const relay = createMqttRelay({ config, deviceId, client, onWarning: warn })
  client.on('error', (err) => {
    if (!brokerWarned) warn(`MQTT broker: ${errorText(err)} (retrying in the background)`)
    brokerWarned = true
  })
  client.on('offline', () => {
    if (connectedOnce && !brokerWarned && !signal.aborted) warn('MQTT broker connection lost; reconnecting')
    brokerWarned = true
  })
  // A sensor gone haywire (or a flood) must not flood the journal: one line per kind a minute.
  const lastLogged = new Map<string, number>()
  const limited = (kind: string, line: () => string, sink: (line: string) => void = warn) => {
    const now = Date.now()
    if (now - (lastLogged.get(kind) ?? Number.NEGATIVE_INFINITY) < LOG_INTERVAL_MS) return
    lastLogged.set(kind, now)
    sink(line())
  }
  // The callbacks read the counters through this binding, which is set once the ingest started.
  let ingest: ReadingIngest | undefined
  ingest = startReadingIngest({
    client,
    topic: topics.readings,
    subscriptions,
    ownTopics: [topics.login, topics.status, topics.pair],
    append: (records) => spool.append(records),
    onDrop: (reason, detail) =>
      limited('drop', () => {
        const c = ingest?.counters
        return `dropped an MQTT message (${reason}: ${detail}); so far oversized ${c?.oversized ?? 0}, malformed ${c?.malformed ?? 0}, retained ${c?.retained ?? 0}`
      }),
    onError: (err) =>
      limited(
        'spool',
        () => `MQTT ingest: ${errorText(err)} (messages not spooled so far: ${ingest?.counters.failed ?? 0})`,
      ),
  })
  let pairListener: PairListener | undefined
  let pairCounters: PairCounters | undefined
  if (options.pair) {
    const hooks = options.pair
    const gate = pair.createPairGate({ allow: true })
    pairCounters = gate.counters as PairCounters
    pairListener = pair.startPairListener({
      client,
      topic: topics.pair,
      gate,
      busy: hooks.busy,
      signinRequired: hooks.signinRequired,
      onPair: () => hooks.onPair(),
      onRefused: (reason) =>
        limited(`pair-${reason}`, () => `edgetoken: ignored a pair request (${reason})`, log),
      onError: (err) => warn(`pair requests: ${errorText(err)}`),
    })
  }
  // `ready` (and systemd's READY=1) must mean that readings and pair requests published from then on
  // arrive, also on the very first start, when the broker has no session of ours yet: wait for the
  // SUBACKs (mqtt.js sends the subscriptions once connected). Not past a failed connection attempt
  // (they complete on a later connect) nor past a bound: the broker must not hold the agent back.
  let onClose: (() => void) | undefined
  const attemptFailed = new Promise<void>((resolve) => {
    onClose = resolve
    client.once('close', resolve)
  })
  await withDeadline(
    Promise.race([Promise.all([ingest.ready, pairListener?.ready]), attemptFailed]).catch(() => undefined),
    SUBSCRIBE_WAIT_MS,
    { unref: true },
  )
  if (onClose) client.removeListener('close', onClose)
  return { client, topics, relay, ingest, pairListener, pairCounters }
}
