/**
 * Pair requests: a companion display asks the agent, on `<prefix>/<deviceId>/pair`, to start a new
 * device flow (a person pressed its button). RFC 8628 §3.1 has the device start a flow when the
 * user asks, never on its own; an MQTT message is only a user's request if it can be trusted a
 * little, so the agent
 *
 * - acts only when the config says so (`mqtt.allowPair`, default false), and only while the
 *   agent needs a sign-in: a button press must never take over a device that is signed in
 *   (issue 11); a different account is never taken over by a pair request either (see
 *   `daemon-login.ts`);
 * - validates the payload against `firmware-bridge/schema/pair.schema.json` (1 KiB cap);
 * - ignores a nonce it has seen, and a request whose `at` is far from now (a replay after the
 *   nonce memory was cleared by a restart);
 * - accepts at most one request per `minIntervalMs`, so a stuck button or a flood cannot make it
 *   hammer the IdP's device authorization endpoint.
 *
 * Every refused request is counted by reason.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.1
 * @packageDocumentation
 */
import type { IPublishPacket, MqttClient } from 'mqtt'
import { type DropReason, decodeJsonObject, isUtcDateTime, subscribeQos1 } from './ingest.js'

/** Largest pair-request payload accepted, bytes. */
export const MAX_PAIR_BYTES = 1024

/** A validated pair request. */
export interface PairRequest {
  /** Always `signin`. */
  request: 'signin'
  /** The display's random nonce. */
  nonce: string
  /** When the display sent it, epoch ms. */
  at: number
}

/** Why a pair request was refused. */
export type PairRefusal =
  | DropReason
  | 'disallowed'
  | 'replayed'
  | 'stale'
  | 'rate-limited'
  | 'busy'
  | 'signed-in'

/** Counters of pair requests. */
export type PairCounters = Record<'received' | 'accepted' | PairRefusal, number>

/** What {@link PairGate.check} decided. */
export type PairDecision =
  | { readonly ok: true; readonly request: PairRequest }
  | { readonly ok: false; readonly reason: PairRefusal; readonly detail: string }

const PAIR_KEYS = new Set(['request', 'nonce', 'at'])
const NONCE = /^[A-Za-z0-9_-]{8,64}$/

/**
 * Checks a pair-request payload against the pair schema.
 *
 * @param payload - the raw MQTT payload.
 * @returns the request, or why it was refused (`oversized`, `malformed`, `invalid`).
 * @see ../../firmware-bridge/schema/pair.schema.json
 */
export function checkPairRequest(payload: Uint8Array): PairDecision {
  const decoded = decodeJsonObject(payload, MAX_PAIR_BYTES)
  if (!decoded.ok) return decoded
  const value = decoded.value
  const invalid = (detail: string): PairDecision => ({ ok: false, reason: 'invalid', detail })
  for (const key of Object.keys(value)) {
    if (!PAIR_KEYS.has(key)) return invalid('unknown property')
  }
  if (value.request !== 'signin') return invalid('request must be "signin"')
  if (typeof value.nonce !== 'string' || !NONCE.test(value.nonce)) {
    return invalid('nonce must be 8-64 characters of [A-Za-z0-9_-]')
  }
  const at = isUtcDateTime(value.at) ? Date.parse(value.at) : Number.NaN
  // A leap second (:60) passes the format but not Date.parse: refuse rather than skip the freshness check.
  if (Number.isNaN(at)) return invalid('at must be an ISO 8601 UTC date-time')
  return { ok: true, request: { request: 'signin', nonce: value.nonce, at } }
}

/** Options of {@link createPairGate}. */
export interface PairGateOptions {
  /** `mqtt.allowPair`: without it every request is refused as `disallowed`. */
  allow: boolean
  /** At most one accepted request per this long, ms. Default 30000. */
  minIntervalMs?: number
  /** Refuse requests whose `at` is further than this from now, ms. Default 600000 (10 min). */
  maxSkewMs?: number
  /** How many nonces to remember. Default 1024. */
  maxNonces?: number
  /** The clock, epoch ms. Default `Date.now`. */
  now?: () => number
}

/** Decides on pair requests; see {@link createPairGate}. */
export interface PairGate {
  /**
   * Validates a payload and applies the policy.
   *
   * @param payload - the raw MQTT payload.
   * @param context - `busy`: a sign-in is already running (refused as `busy`); `retained`: the
   *   message was retained (refused: it would start a sign-in after every reconnect);
   *   `signedIn`: the device is signed in (refused as `signed-in`: nothing to pair).
   * @returns the decision; counters are updated.
   */
  check(
    payload: Uint8Array,
    context?: { busy?: boolean; retained?: boolean; signedIn?: boolean },
  ): PairDecision
  /** Live counters. */
  readonly counters: Readonly<PairCounters>
}

/**
 * Creates the pair-request policy: validation, permission, replay, freshness and rate limits.
 *
 * @param options - permission and limits.
 * @returns the gate.
 */
export function createPairGate(options: PairGateOptions): PairGate {
  const now = options.now ?? Date.now
  const minIntervalMs = options.minIntervalMs ?? 30_000
  const maxSkewMs = options.maxSkewMs ?? 600_000
  const maxNonces = options.maxNonces ?? 1024
  const seen = new Set<string>() // insertion order = age, so the oldest is evicted first
  let lastAcceptedAt = Number.NEGATIVE_INFINITY
  const counters: PairCounters = {
    received: 0,
    accepted: 0,
    oversized: 0,
    malformed: 0,
    invalid: 0,
    retained: 0,
    disallowed: 0,
    replayed: 0,
    stale: 0,
    'rate-limited': 0,
    busy: 0,
    'signed-in': 0,
  }

  const refuse = (reason: PairRefusal, detail: string): PairDecision => {
    counters[reason] += 1
    return { ok: false, reason, detail }
  }

  return {
    counters,
    check(payload, context = {}) {
      counters.received += 1
      if (!options.allow) return refuse('disallowed', 'pairing is off (mqtt.allowPair is false)')
      if (context.retained) return refuse('retained', 'retained pair requests are not accepted')
      const checked = checkPairRequest(payload)
      if (!checked.ok) return refuse(checked.reason, checked.detail)
      const { nonce, at } = checked.request
      if (seen.has(nonce)) return refuse('replayed', 'nonce already seen')
      const t = now()
      if (Math.abs(t - at) > maxSkewMs) return refuse('stale', 'at is too far from the current time')
      // Remember the nonce even when refused below: the same request must not succeed later.
      seen.add(nonce)
      if (seen.size > maxNonces) {
        const oldest = seen.values().next().value
        if (oldest !== undefined) seen.delete(oldest)
      }
      if (context.signedIn) {
        return refuse(
          'signed-in',
          'the device is signed in; pair requests count only while sign-in is required',
        )
      }
      if (context.busy) return refuse('busy', 'a sign-in is already in progress')
      if (t - lastAcceptedAt < minIntervalMs) return refuse('rate-limited', 'too many pair requests')
      lastAcceptedAt = t
      counters.accepted += 1
      return checked
    },
  }
}

/** Options of {@link startPairListener}. */
export interface PairListenerOptions {
  /** The MQTT client (may be shared). */
  client: MqttClient
  /** `<prefix>/<deviceId>/pair`. */
  topic: string
  /** The policy. */
  gate: PairGate
  /** Whether a sign-in is running now. */
  busy: () => boolean
  /**
   * Whether the device needs a sign-in now; while it does not, requests are refused as
   * `signed-in`. Default: always (the caller then has to check before acting on `onPair`).
   */
  signinRequired?: (() => boolean) | undefined
  /** Called for an accepted request: start a device flow. */
  onPair: (request: PairRequest) => void
  /** Called for a refused request (never with payload content). */
  onRefused?: (reason: PairRefusal, detail: string) => void
  /** Called when the broker refused the subscription. */
  onError?: (error: unknown) => void
}

/** A running pair listener. */
export interface PairListener {
  /**
   * Resolves once the broker acknowledged the subscription (SUBACK); rejects when it refused it.
   * Awaiting it is optional.
   */
  readonly ready: Promise<void>
  /** Unsubscribes; the client stays open. */
  close(): Promise<void>
}

/**
 * Subscribes to the pair topic (QoS 1) and hands accepted requests to `onPair`.
 *
 * @param options - client, topic, policy and callbacks.
 * @returns the listener.
 */
export function startPairListener(options: PairListenerOptions): PairListener {
  const { client, topic, gate } = options
  let closed = false
  const onMessage = (messageTopic: string, payload: Buffer, packet: IPublishPacket) => {
    if (messageTopic !== topic || closed) return
    const decision = gate.check(payload, {
      busy: options.busy(),
      retained: packet.retain,
      signedIn: options.signinRequired ? !options.signinRequired() : false,
    })
    if (decision.ok) options.onPair(decision.request)
    else options.onRefused?.(decision.reason, decision.detail)
  }
  client.on('message', onMessage)
  const ready = subscribeQos1(client, topic)
  ready.catch((err: unknown) => {
    if (!closed) options.onError?.(err)
  })
  return {
    ready,
    async close() {
      if (closed) return
      closed = true
      client.removeListener('message', onMessage)
      if (client.connected) {
        await Promise.race([
          client.unsubscribeAsync(topic).catch(() => undefined),
          new Promise((resolve) => setTimeout(resolve, 2000).unref()),
        ])
      }
    },
  }
}
