/**
 * The companion-display relay: a gateway without a screen publishes its pending sign-in so a small
 * display (ESP32 + OLED, a wall tablet) can show the code.
 *
 * - `<prefix>/<deviceId>/login`, retained, QoS 1: `{"state":"pending","user_code","verification_uri",
 *   "verification_uri_complete"?,"expires_at","message"?}`; with MQTT 5 a message expiry of the
 *   seconds left. Re-published after every reconnect (a restarted broker has forgotten it).
 * - At the end: a non-retained `{"state":"approved|denied|expired|cancelled"}`, then the retained
 *   message cleared with a zero-length retained publish (brokers do not reliably drop expired
 *   retained messages themselves). When the connection is down at that moment, the relay waits up
 *   to `publishTimeoutMs` for it to come back, then publishes both: a broker that kept the pending
 *   code must not show it after the sign-in ended. A `failed` end goes out as `cancelled` (the
 *   four states of `firmware-bridge/schema/login.schema.json`).
 * - The daemon's notice, retained, QoS 1: `{"state":"signin_required","since","pair"}` while the
 *   refresh token is dead ({@link MqttRelay.announceSigninRequired}). A pending code replaces it;
 *   it comes back when that flow fails, and is cleared once signed in again (or on close).
 * - `<prefix>/<deviceId>/status`: retained `online`; last will (and clean close) `offline`.
 *
 * Never the device_code, never a token: {@link DisplayFlow} does not carry them.
 * A broker that cannot be reached costs one warning; the sign-in goes on without it.
 *
 * @packageDocumentation
 */
import type { IClientPublishOptions, MqttClient } from 'mqtt'
import type { MqttConfig } from '../config/types.js'
import { withDeadline } from '../lib/deadline.js'
import { connectMqtt, isRetriedWithOlderProtocol, mqttTopics } from './mqtt-options.js'
import { type DisplayEndState, type DisplayFlow, isoSeconds, type LoginDisplay } from './types.js'

/** The relay's waits must not keep a finished `login` alive. */
const UNREF = { unref: true }

/** What the relay says while the agent waits for a new sign-in. */
export interface SigninRequiredNotice {
  /** When sign-in became required, epoch milliseconds. */
  readonly since: number
  /** Whether the agent starts a sign-in on a pair request (mqtt.allowPair). */
  readonly pair: boolean
}

/** The MQTT relay: a {@link LoginDisplay} that can also announce that sign-in is required. */
export interface MqttRelay extends LoginDisplay {
  /**
   * Publishes the retained `signin_required` notice (QoS 1) and keeps it: re-published after a
   * reconnect, and after a flow shown on this relay ends without approval. While a flow is shown,
   * the pending code stays on the topic instead.
   *
   * @param notice - since when, and whether a pair request is accepted.
   * @returns once the broker acknowledged it (at once when not connected: it goes out on connect).
   */
  announceSigninRequired(notice: SigninRequiredNotice): Promise<void>
  /**
   * Stops re-publishing the notice without touching the topic: a device flow run elsewhere (another
   * relay, another process) is about to replace it with its pending code. A later
   * {@link MqttRelay.clearSigninRequired} still clears it.
   */
  suspendSigninRequired(): void
  /**
   * Signed in again: forgets the notice and clears the retained message (zero-length retained
   * publish), when this relay announced one and no flow of its own is shown.
   *
   * @returns once the broker acknowledged the clear (bounded by `publishTimeoutMs`).
   */
  clearSigninRequired(): Promise<void>
}

/**
 * The retained `signin_required` payload. Built field by field: no other property can slip in.
 *
 * @param notice - the notice.
 * @returns the JSON text.
 */
export function signinRequiredPayload(notice: SigninRequiredNotice): string {
  return JSON.stringify({
    state: 'signin_required',
    since: isoSeconds(notice.since),
    pair: notice.pair === true,
  })
}

/** Options of {@link createMqttRelay}. */
export interface MqttRelayOptions {
  /** The broker and topic prefix. */
  config: MqttConfig
  /** The device id (topic level). */
  deviceId: string
  /** Receives at most one warning about the broker (unreachable, refused). */
  onWarning: (line: string) => void
  /** Publish presence on the status topic (retained `online`, will `offline`). Default true; ignored with `client`. */
  presence?: boolean
  /** Use this connected-or-connecting client instead of opening one (the daemon's); `close()` leaves it open. */
  client?: MqttClient
  /** How long to wait for the first connection before warning, ms. Default 4000. */
  connectTimeoutMs?: number
  /**
   * How long the end-state publishes and the disconnect may take, ms; at the end, also how long to
   * wait for a lost connection to come back. Default 3000.
   */
  publishTimeoutMs?: number
  /** Reconnect back-off base, ms. Default 1000. */
  reconnectBaseMs?: number
  /** The clock, epoch ms. Default `Date.now`. */
  now?: () => number
}

/**
 * The retained `pending` payload of a flow. Built field by field from the display flow so nothing
 * else can slip in.
 *
 * @param flow - the pending flow.
 * @returns the JSON text.
 */
export function pendingPayload(flow: DisplayFlow): string {
  const body: Record<string, string> = {
    state: 'pending',
    user_code: flow.userCode,
    verification_uri: flow.verificationUri,
  }
  if (flow.verificationUriComplete !== undefined)
    body.verification_uri_complete = flow.verificationUriComplete
  body.expires_at = isoSeconds(flow.expiresAt)
  if (flow.message !== undefined) body.message = flow.message
  return JSON.stringify(body)
}

/** Resolves true once `client` is connected, false after `ms`. */
function connectedWithin(client: MqttClient, ms: number): Promise<boolean> {
  if (client.connected) return Promise.resolve(true)
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer)
      client.removeListener('connect', onConnect)
      resolve(ok)
    }
    const onConnect = () => done(true)
    const timer = setTimeout(() => done(false), ms)
    timer.unref()
    client.on('connect', onConnect)
  })
}

function brokerName(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}`
  } catch {
    return 'the MQTT broker'
  }
}

/**
 * Creates the MQTT relay display.
 *
 * @param options - broker, device id and warning sink.
 * @returns a {@link MqttRelay} whose `show` returns at once (the connection is made in the background).
 * @example
 * ```ts
 * const relay = createMqttRelay({ config: config.mqtt, deviceId: config.deviceId, onWarning: ctx.warn })
 * await relay.show(toDisplayFlow(flow))
 * // ... after polling:
 * await relay.end('approved')
 * await relay.close()
 * ```
 */
export function createMqttRelay(options: MqttRelayOptions): MqttRelay {
  const topics = mqttTopics(options.config.topicPrefix, options.deviceId)
  const own = options.client === undefined
  const presence = own && (options.presence ?? true)
  const now = options.now ?? Date.now
  const connectTimeoutMs = options.connectTimeoutMs ?? 4000
  const publishTimeoutMs = options.publishTimeoutMs ?? 3000
  let client: MqttClient | undefined = options.client
  let starting: Promise<MqttClient | undefined> | undefined
  let pending: DisplayFlow | undefined
  // The sign-in required notice to keep on the topic (when no flow is shown), and whether the
  // broker may hold one of ours that a clear has to remove.
  let signin: SigninRequiredNotice | undefined
  let signinOnBroker = false
  let warned = false
  let everConnected = false
  let warnTimer: NodeJS.Timeout | undefined
  let closed = false

  const warnOnce = (line: string) => {
    if (warned || closed) return
    warned = true
    options.onWarning(line)
  }

  const publish = (topic: string, payload: string, opts: IClientPublishOptions): Promise<unknown> => {
    const c = client
    if (!c) return Promise.resolve()
    return c.publishAsync(topic, payload, opts).catch((err: unknown) => {
      warnOnce(`MQTT publish to ${brokerName(options.config.url)} failed: ${(err as Error).message}`)
    })
  }

  const publishPending = () => {
    const flow = pending
    if (!flow || !client?.connected) return
    const secondsLeft = Math.ceil((flow.expiresAt - now()) / 1000)
    if (secondsLeft <= 0) return
    const opts: IClientPublishOptions = { qos: 1, retain: true }
    if (client.options.protocolVersion === 5) opts.properties = { messageExpiryInterval: secondsLeft }
    void publish(topics.login, pendingPayload(flow), opts)
  }

  const publishSignin = (): Promise<unknown> => {
    const notice = signin
    if (!notice || pending || !client?.connected) return Promise.resolve()
    signinOnBroker = true
    return publish(topics.login, signinRequiredPayload(notice), { qos: 1, retain: true })
  }

  const clearSignin = async () => {
    signin = undefined
    if (!signinOnBroker || pending || !client?.connected) return
    signinOnBroker = false
    await withDeadline(publish(topics.login, '', { qos: 1, retain: true }), publishTimeoutMs, UNREF)
  }

  const onConnect = () => {
    everConnected = true
    if (presence) void publish(topics.status, 'online', { qos: 1, retain: true })
    publishPending()
    if (signin) void publishSignin()
    // Cleared while the broker was unreachable: it may still hold our notice (a network outage
    // or a persistent broker keeps retained messages).
    else if (signinOnBroker && !pending) void clearSignin()
  }

  const onError = (err: Error) => {
    // Only the first failure is worth a line; mqtt.js keeps retrying in the background.
    if (!everConnected && !isRetriedWithOlderProtocol(err)) {
      warnOnce(
        `MQTT broker ${brokerName(options.config.url)}: ${err.message}; the code is shown on the console only`,
      )
    }
  }

  const start = (): Promise<MqttClient | undefined> => {
    if (client) return Promise.resolve(client)
    starting ??= connectMqtt(options.config, {
      deviceId: options.deviceId,
      role: 'login',
      presence,
      connectTimeoutMs,
      reconnectBaseMs: options.reconnectBaseMs ?? 1000,
    }).then(
      (c) => {
        if (closed) {
          c.end(true)
          return undefined
        }
        client = c
        c.on('connect', onConnect)
        c.on('error', onError)
        return c
      },
      (err: unknown) => {
        warnOnce(`MQTT relay not started: ${(err as Error).message}`)
        return undefined
      },
    )
    return starting
  }

  if (!own && client) {
    client.on('connect', onConnect)
  }

  return {
    name: 'mqtt',
    async show(flow) {
      // The retained pending code replaces a sign-in required notice on the broker.
      pending = flow
      const c = await start()
      if (!c) return
      if (c.connected) {
        onConnect()
      } else if (!everConnected && !warnTimer) {
        warnTimer = setTimeout(() => {
          if (!everConnected) {
            warnOnce(
              `MQTT broker ${brokerName(options.config.url)} not reachable; the code is shown on the console only (retrying in the background)`,
            )
          }
        }, connectTimeoutMs)
        warnTimer.unref()
      }
    },
    async end(state: DisplayEndState) {
      const had = pending
      pending = undefined
      if (state === 'approved') signin = undefined
      const c = client
      // Never connected: the code never reached the broker, there is nothing to take back.
      if (!had || !c || !everConnected) return
      // Disconnected now: the broker may still hold the pending code (a persistent broker keeps it
      // across its own restart). Wait a little for the connection to come back, then clear it.
      if (!(await connectedWithin(c, publishTimeoutMs)) || closed) return
      const wire = state === 'failed' ? 'cancelled' : state
      await withDeadline(
        (async () => {
          await publish(topics.login, JSON.stringify({ state: wire }), { qos: 1, retain: false })
          await publish(topics.login, '', { qos: 1, retain: true })
          // A failed flow leaves sign-in required: the notice goes back up.
          if (signin) await publishSignin()
          else signinOnBroker = false
        })(),
        publishTimeoutMs,
        UNREF,
      )
    },
    async announceSigninRequired(notice) {
      if (closed) return
      signin = { since: notice.since, pair: notice.pair }
      const c = await start()
      if (!c?.connected) return
      await withDeadline(publishSignin(), publishTimeoutMs, UNREF)
    },
    suspendSigninRequired() {
      signin = undefined
    },
    clearSigninRequired: clearSignin,
    async close() {
      if (closed) return
      // A notice outlives no agent: nobody would act on a pair request any more.
      if (signin && !pending) await clearSignin()
      closed = true
      pending = undefined
      signin = undefined
      if (warnTimer) clearTimeout(warnTimer)
      const c = client
      if (!c) return
      c.removeListener('connect', onConnect)
      c.removeListener('error', onError)
      if (!own) return
      if (presence && c.connected) {
        await withDeadline(
          publish(topics.status, 'offline', { qos: 1, retain: true }),
          publishTimeoutMs,
          UNREF,
        )
      }
      const ended = await withDeadline(
        c.endAsync().then(() => true),
        publishTimeoutMs,
        UNREF,
      )
      if (!ended) c.end(true)
    },
  }
}
