/**
 * Silent renewal for the daemon: one timer that fires a little before the access token expires,
 * so the uploader (and `edgetoken token` callers) always find a valid token in the store.
 *
 * - Ahead of expiry, with jitter: a fleet of gateways that signed in together must not hit the
 *   IdP in the same second every hour, so each renewal lands at a random point inside a window.
 *   The renewal after a start or a recovery (events a fleet goes through together: a power cut,
 *   an IdP outage) is drawn over one whole renewal period instead, so such a fleet is spread
 *   evenly at once rather than over days of narrow windows.
 * - Failures back off exponentially (full jitter, capped, growing with the time spent failing)
 *   and keep trying, `Retry-After` plus a random spread: the IdP or the network being down for a
 *   while is normal on the edge, and a fleet must not come back from it in lock-step.
 * - A dead refresh token (`ERR_SIGNIN_REQUIRED`) stops renewal: retrying cannot help, a person has
 *   to sign in again. {@link Renewer.start} resumes after a new sign-in.
 * - Idle cost: exactly one unref'd timer between renewals, no polling.
 *
 * @packageDocumentation
 */
import { isEdgeTokenError } from '../errors.js'
import type { BackoffOptions } from '../lib/backoff.js'
import { retryDelayMs } from '../oauth/retry.js'

/** What a renewal reports back: the expiry of the token now in the store. */
export interface RenewalResult {
  /** Expiry of the access token, epoch ms. */
  expiresAt: number
  /** True when no token request was made (the cached token was still good). */
  fromCache?: boolean
}

/**
 * Performs one renewal. `force` is false for the first call after {@link Renewer.start} (a valid
 * cached token is enough to learn its expiry) and true for scheduled renewals.
 */
export type RenewFunction = (force: boolean, signal: AbortSignal) => Promise<RenewalResult>

/** Timer functions; injectable for tests. */
export interface RenewerTimers {
  setTimeout: (callback: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

/** Options of {@link createRenewer}. */
export interface RenewerOptions {
  /** Renews (or reads) the token. */
  renew: RenewFunction
  /**
   * Renew this long before expiry, ms; at most half the token's lifetime (the token cache treats
   * a token as stale from then, so renewing later would leave the uploader to refresh first).
   * Default 300000 (5 min, the cache's margin).
   */
  marginMs?: number
  /** Up to this much earlier still, chosen at random per renewal, ms; at most a quarter of the lifetime. Default 120000. */
  jitterMs?: number
  /** Never schedule a renewal sooner than this after the previous one, ms. Default 1000. */
  minDelayMs?: number
  /**
   * Back-off of failed renewals (base default 2000 ms, cap default 300000 ms; `random` is
   * {@link RenewerOptions.random}): see {@link retryDelayMs}.
   */
  backoff?: BackoffOptions
  /** Clock, epoch ms. Default `Date.now`. */
  now?: () => number
  /** Random source in [0, 1). Default `Math.random`. */
  random?: () => number
  /** Timers. Default the global ones, unref'd. */
  timers?: RenewerTimers
  /** After each successful renewal. */
  onRenewed?: (result: RenewalResult, nextAt: number) => void
  /** After a failed renewal that will be retried. */
  onRetry?: (error: unknown, retryInMs: number) => void
  /** When the refresh token is dead: renewal has stopped until {@link Renewer.start}. */
  onSigninRequired?: (error: unknown) => void
}

/** The renewer's state. */
export type RenewerState = 'idle' | 'scheduled' | 'renewing' | 'signin-required' | 'stopped'

/** A renewal scheduler created by {@link createRenewer}. */
export interface Renewer {
  /** Renews (unforced) now and schedules from there; also resumes after sign-in required. */
  start(): void
  /** Renews (forced) now, e.g. after the API rejected a token. No-op while a renewal runs. */
  renewNow(): void
  /**
   * Another caller refreshed the token (the uploader, after a 401): while a renewal is scheduled,
   * schedule it again from the new token's expiry, so the token just obtained is not renewed
   * early. Does nothing in any other state.
   *
   * @param expiresAt - the new token's expiry, epoch ms.
   * @returns when the next renewal is due now, epoch ms, while scheduled.
   */
  renewedElsewhere(expiresAt: number): number | undefined
  /** Cancels the timer and any renewal in flight; the renewer does nothing until {@link Renewer.start}. */
  stop(): void
  /** The current state. */
  readonly state: RenewerState
  /** When the next renewal is due, epoch ms, while scheduled. */
  readonly nextAt: number | undefined
  /**
   * When the next attempt after a failed renewal is due, epoch ms, while the renewer is retrying
   * (the IdP or the network is down); undefined otherwise. Other callers wait for it rather than
   * send refreshes of their own.
   */
  readonly retryAt: number | undefined
  /** Successful renewals so far (forced ones, i.e. real token requests, and cached reads). */
  readonly renewals: number
}

/** setTimeout's largest delay (about 24.8 days); longer waits are re-evaluated on wake-up. */
const MAX_TIMER_MS = 2 ** 31 - 1

const defaultTimers: RenewerTimers = {
  setTimeout(callback, ms) {
    const handle = setTimeout(callback, ms)
    handle.unref()
    return handle
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>)
  },
}

/** Options of {@link renewalAt}. */
export interface RenewalAtOptions {
  /** See {@link RenewerOptions.marginMs}. */
  marginMs: number
  /** See {@link RenewerOptions.jitterMs}. */
  jitterMs: number
  /** See {@link RenewerOptions.minDelayMs}. */
  minDelayMs: number
  /** A value in [0, 1). */
  random: number
  /**
   * The renewal follows a start or a recovery (a fleet may have gone through it together): draw
   * it over one whole renewal period, `lifetime - margin - jitter / 2` before `expiresAt - margin`,
   * instead of the jitter window. Default false.
   */
  spread?: boolean | undefined
}

/**
 * When to renew a token: `expiresAt - margin - random * jitter`, with margin and jitter scaled
 * down for short-lived tokens (a 60 s token renews after 15-30 s, not immediately), and never
 * sooner than `now + minDelayMs`. With `spread`, `expiresAt - margin - random * period`, where
 * the period is the mean time between renewals (`lifetime - margin - jitter / 2`): renewals of a
 * fleet that obtained its tokens in the same second are then spread uniformly over one period, so
 * the next ones, a period apart each, stay spread (a 60 s token: 7.5-30 s; a one-hour token with
 * the defaults: 1-55 min). Never later than `expiresAt - margin` either way.
 *
 * @param expiresAt - the token's expiry, epoch ms.
 * @param now - the current time, epoch ms (taken as when the token was obtained).
 * @param options - margin, jitter, lower bound and the random draw.
 * @returns the renewal time, epoch ms.
 */
export function renewalAt(expiresAt: number, now: number, options: RenewalAtOptions): number {
  const lifetime = Math.max(0, expiresAt - now)
  const margin = Math.min(options.marginMs, lifetime / 2)
  const jitter = Math.min(options.jitterMs, lifetime / 4)
  const window = options.spread === true ? Math.max(jitter, lifetime - margin - jitter / 2) : jitter
  const at = expiresAt - margin - options.random * window
  return Math.round(Math.max(at, now + options.minDelayMs))
}

function retryAfterMs(error: unknown): number {
  const seconds = (error as { retryAfterSeconds?: unknown } | null)?.retryAfterSeconds
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0
}

/**
 * Creates a renewal scheduler. Nothing happens until {@link Renewer.start}.
 *
 * @param options - the renew function, timing, clock, timers and callbacks.
 * @returns the {@link Renewer}.
 * @example
 * ```ts
 * const renewer = createRenewer({
 *   renew: (force, signal) => acquireTokenSilent(store, { ...identity, scopes, forceRefresh: force, refresh, signal }),
 *   onSigninRequired: () => log("sign-in required: run 'edgetoken login'"),
 * })
 * renewer.start()
 * ```
 */
export function createRenewer(options: RenewerOptions): Renewer {
  const now = options.now ?? Date.now
  const random = options.random ?? Math.random
  const timers = options.timers ?? defaultTimers
  const timing = {
    marginMs: options.marginMs ?? 300_000,
    jitterMs: options.jitterMs ?? 120_000,
    minDelayMs: options.minDelayMs ?? 1000,
  }
  const backoff = {
    baseMs: options.backoff?.baseMs ?? 2000,
    capMs: options.backoff?.capMs ?? 300_000,
    random: options.backoff?.random ?? random,
  }

  let state: RenewerState = 'idle'
  let timer: unknown
  let nextAt: number | undefined
  let controller: AbortController | undefined
  let failures = 0
  // When the current run of failures began, epoch ms (the back-off grows with it).
  let failingSince = 0
  // The next renewal follows a start or a recovery: spread it over a whole period.
  let spreadNext = false
  let renewals = 0
  // Bumped on start/stop so a renewal that finishes after stop() changes nothing.
  let generation = 0

  function clearTimer(): void {
    if (timer !== undefined) timers.clearTimeout(timer)
    timer = undefined
    nextAt = undefined
  }

  function schedule(at: number, force: boolean): void {
    clearTimer()
    state = 'scheduled'
    nextAt = at
    const wait = Math.min(Math.max(0, at - now()), MAX_TIMER_MS)
    timer = timers.setTimeout(() => {
      timer = undefined
      // A very long wait was cut to the timer's limit: sleep again rather than renew early.
      if (nextAt !== undefined && now() < nextAt - 1000 && wait === MAX_TIMER_MS) {
        schedule(nextAt, force)
        return
      }
      void attempt(force)
    }, wait)
  }

  async function attempt(force: boolean): Promise<void> {
    clearTimer()
    state = 'renewing'
    const mine = ++generation
    controller = new AbortController()
    let result: RenewalResult
    try {
      result = await options.renew(force, controller.signal)
    } catch (error) {
      if (mine !== generation) return
      controller = undefined
      if (isEdgeTokenError(error, 'ERR_SIGNIN_REQUIRED')) {
        state = 'signin-required'
        failures = 0
        options.onSigninRequired?.(error)
        return
      }
      if (failures === 0) failingSince = now()
      const retryAfter = retryAfterMs(error)
      const delay = retryDelayMs({
        attempt: failures,
        failingForMs: now() - failingSince,
        retryAfterMs: retryAfter > 0 ? retryAfter : undefined,
        baseMs: backoff.baseMs,
        capMs: backoff.capMs,
        random: backoff.random,
      })
      failures += 1
      spreadNext = true
      schedule(now() + delay, force)
      options.onRetry?.(error, delay)
      return
    }
    if (mine !== generation) return
    controller = undefined
    failures = 0
    renewals += 1
    const at = renewalAt(result.expiresAt, now(), { ...timing, random: random(), spread: spreadNext })
    spreadNext = false
    schedule(at, true)
    options.onRenewed?.(result, at)
  }

  return {
    start() {
      if (state === 'renewing') return
      failures = 0
      spreadNext = true
      void attempt(false)
    },
    renewNow() {
      if (state === 'renewing' || state === 'stopped') return
      void attempt(true)
    },
    renewedElsewhere(expiresAt) {
      if (state !== 'scheduled' || nextAt === undefined) return nextAt
      // A retry pending after a failed renewal is moot too: the token is fresh; and it ends a run
      // of failures, which a fleet may have gone through together: spread the renewal after it.
      const spread = failures > 0
      failures = 0
      spreadNext = false
      schedule(renewalAt(expiresAt, now(), { ...timing, random: random(), spread }), true)
      return nextAt
    },
    stop() {
      generation += 1
      clearTimer()
      controller?.abort(new Error('renewer stopped'))
      controller = undefined
      state = 'stopped'
    },
    get state() {
      return state
    },
    get nextAt() {
      return nextAt
    },
    get retryAt() {
      return state === 'scheduled' && failures > 0 ? nextAt : undefined
    },
    get renewals() {
      return renewals
    },
  }
}
