/**
 * Clock sanity for devices without a real-time clock.
 *
 * A Raspberry Pi has no clock battery: until NTP (systemd-timesyncd) has synchronised, the system
 * clock reads 1970, systemd's own build date, or the last time fake-hwclock saved it. Compared with
 * such a clock, a fresh access token looks valid for decades or an old one looks unexpired, and
 * token expiry, Retry-After and back-off arithmetic are all wrong. Nothing here can learn the real
 * time; what it can know is that the time is not earlier than the moment this code was written, so
 * a clock before {@link BUILD_TIME} is known to be wrong and the agent waits for it to be set.
 */
import { EdgeTokenError, UnavailableError } from '../errors.js'
import { isoSeconds } from '../lib/time.js'

/**
 * A moment this build certainly came after (when this module was written), ISO 8601 UTC. A clock
 * that reads earlier than this is wrong. Bump it now and then; it never has to be exact.
 */
export const BUILD_TIME = '2026-11-25T00:00:00Z'

/** {@link BUILD_TIME} in ms since the epoch. */
export const BUILD_TIME_MS: number = Date.parse(BUILD_TIME)

/** The verdict of {@link checkClock}. */
export type ClockCheck = 'ok' | 'before-build'

/**
 * Whether a clock reading can be trusted for token expiry: it must not be before the build time.
 *
 * @param now - the reading, ms since the epoch or a Date. Default `Date.now()`.
 * @param buildTimeMs - the lower bound. Default {@link BUILD_TIME_MS}.
 * @returns `'ok'`, or `'before-build'` when the clock is certainly wrong (an invalid reading too).
 * @example
 * ```ts
 * if (checkClock() === 'before-build') await waitForSaneClock({ signal, onWarning: log.warn })
 * ```
 */
export function checkClock(now: number | Date = Date.now(), buildTimeMs: number = BUILD_TIME_MS): ClockCheck {
  const ms = typeof now === 'number' ? now : now.getTime()
  return Number.isFinite(ms) && ms >= buildTimeMs ? 'ok' : 'before-build'
}

/**
 * Refuses to go on with a clock before the build time, for one-shot commands that cannot wait:
 * with such a clock a cached token would look valid and a new one would be stored with a wrong
 * expiry. The daemon waits instead ({@link waitForSaneClock}).
 *
 * @param now - the reading, ms since the epoch. Default `Date.now()`.
 * @throws UnavailableError (`ERR_UNAVAILABLE`, exit 5: try again once time is synchronised).
 */
export function assertSaneClock(now: number = Date.now()): void {
  if (checkClock(now) === 'ok') return
  throw new UnavailableError(
    `the system clock reads ${formatTime(now)}, before this build (${BUILD_TIME}): wait for time synchronisation`,
  )
}

/** Options of {@link waitForSaneClock}. */
export interface WaitForSaneClockOptions {
  /** Stops waiting; the promise then rejects with `ERR_CANCELLED`. */
  signal?: AbortSignal
  /** How often to look at the clock again, ms. Default 5000; at least 10. */
  pollMs?: number
  /** Called once, when the clock is first found wrong, with a one-line message for the log. */
  onWarning?: (message: string) => void
  /** The clock, ms since the epoch. Default `Date.now`. */
  now?: () => number
  /** The lower bound. Default {@link BUILD_TIME_MS}. */
  buildTimeMs?: number
}

/**
 * Waits until the system clock is not before the build time, e.g. until systemd-timesyncd has
 * synchronised after boot. Resolves at once when the clock is already sane. Warns once, not on
 * every poll. Does not give up by itself: a device that never gets the time must not act on
 * tokens; pass a `signal` to stop (SIGTERM).
 *
 * @param options - signal, poll period, warning callback, injectable clock.
 * @returns true when it had to wait, false when the clock was sane from the start.
 * @throws EdgeTokenError `ERR_CANCELLED` when the signal fires first.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for a `pollMs` that is not a number >= 10.
 */
export function waitForSaneClock(options: WaitForSaneClockOptions = {}): Promise<boolean> {
  const pollMs = options.pollMs ?? 5000
  // Never feed an unchecked number to a timer loop: 0 or NaN would be a busy loop.
  if (typeof pollMs !== 'number' || !Number.isFinite(pollMs) || pollMs < 10) {
    throw Object.assign(new TypeError('options.pollMs must be a number >= 10'), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
  }
  const now = options.now ?? Date.now
  const buildTimeMs = options.buildTimeMs ?? BUILD_TIME_MS
  const { signal } = options

  if (signal?.aborted) return Promise.reject(cancelled(signal))
  const first = now()
  if (checkClock(first, buildTimeMs) === 'ok') return Promise.resolve(false)
  options.onWarning?.(
    `system clock reads ${formatTime(first)}, before this build (${formatTime(buildTimeMs)}): ` +
      'waiting for time synchronisation before trusting token lifetimes',
  )

  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    const onAbort = () => {
      clearTimeout(timer)
      reject(cancelled(signal))
    }
    const poll = () => {
      if (checkClock(now(), buildTimeMs) === 'ok') {
        signal?.removeEventListener('abort', onAbort)
        resolve(true)
        return
      }
      timer = setTimeout(poll, pollMs)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    timer = setTimeout(poll, pollMs)
  })
}

function cancelled(signal: AbortSignal | undefined): EdgeTokenError {
  return new EdgeTokenError('ERR_CANCELLED', 'waiting for the system clock was cancelled', {
    cause: signal?.reason,
  })
}

/** ISO 8601 UTC without milliseconds, as everywhere in edgetoken; tolerant of invalid readings. */
function formatTime(ms: number): string {
  if (!Number.isFinite(ms) || Math.abs(ms) > 8.64e15) return 'an invalid time'
  return isoSeconds(ms)
}
