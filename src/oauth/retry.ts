/**
 * Bounded retries of one-shot requests outside the device-code polling loop (discovery, the device
 * authorization request, JWKS fetches): a server that answers 429/503 with `Retry-After`, or cannot
 * be reached for a moment, gets a few more tries within the caller's signal. Also the wait of the
 * long-running loops (renewer, uploader) between tries, spread so a fleet does not retry in step.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3
 * @packageDocumentation
 */
import { setTimeout as delay } from 'node:timers/promises'
import { EdgeTokenError, UnavailableError } from '../errors.js'

/** Sleeps `ms`, rejecting when `signal` aborts. */
export type SleepFunction = (ms: number, signal: AbortSignal | undefined) => Promise<void>

/** How many times a one-shot request is sent while the server is unavailable. */
export const DEFAULT_ATTEMPTS = 3
/**
 * Longest `Retry-After` honoured between attempts, seconds: a server that asks for more is given
 * up on at once (the caller sees `ERR_UNAVAILABLE` with the server's `retryAfterSeconds`).
 */
export const MAX_RETRY_AFTER_WAIT_SECONDS = 30

const defaultSleep: SleepFunction = async (ms, signal) => {
  await delay(ms, undefined, signal ? { signal } : undefined)
}

/**
 * Sleeps, turning an abort into `ERR_CANCELLED`.
 *
 * @param sleep - the sleep function (default: a timer).
 * @param ms - how long.
 * @param signal - cancels the wait.
 * @throws EdgeTokenError `ERR_CANCELLED` when `signal` aborts.
 */
export async function sleepOrCancel(
  sleep: SleepFunction | undefined,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (signal?.aborted) throw cancelled(signal.reason)
  try {
    await (sleep ?? defaultSleep)(ms, signal)
  } catch (err) {
    if (signal?.aborted) throw cancelled(err)
    throw err
  }
  if (signal?.aborted) throw cancelled(signal.reason)
}

function isRetryable(err: unknown): err is UnavailableError {
  // Duck-typed: `NetworkError` lives in http.ts, which loads undici; this module must not.
  return err instanceof UnavailableError && (err as { retryable?: unknown }).retryable !== false
}

function cancelled(cause: unknown): EdgeTokenError {
  return new EdgeTokenError('ERR_CANCELLED', 'the operation was cancelled', { cause })
}

/** Options of {@link retryDelayMs}. */
export interface RetryDelayOptions {
  /** Retries already made since the last success (0 before the first retry). */
  attempt: number
  /** How long the request has been failing (since its first failure of this run), ms. */
  failingForMs: number
  /** The server's `Retry-After`, ms, if it sent one. */
  retryAfterMs?: number | undefined
  /** First back-off step, ms. */
  baseMs: number
  /** Largest back-off step, ms (a longer `Retry-After` is still honoured). */
  capMs: number
  /** Random source in [0, 1). */
  random: () => number
}

/**
 * The wait before the next try of a long-running loop (the renewer, the uploader) after a 429,
 * a 5xx or a network error, chosen so that a fleet that lost the same server does not come back
 * in lock-step:
 *
 * - The back-off step is `base * 2^attempt`, but at least as long as the request has been failing
 *   already, capped: waits a server imposed with `Retry-After` count, so an outage that began with
 *   `Retry-After` does not leave every device at the first, shortest steps when it ends.
 * - Without `Retry-After`: uniform in [base / 2, step] ("full jitter" above a floor, so a device
 *   never retries at once).
 * - With `Retry-After`: never earlier than it (RFC 9110 §10.2.3), plus a random spread of up to
 *   half of it or the step, whichever is longer: devices told the same thing at the same moment
 *   come back over a window, not in the same second.
 *
 * @param options - attempt, time failing, `Retry-After`, base, cap and random source.
 * @returns the wait, ms.
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3
 */
export function retryDelayMs(options: RetryDelayOptions): number {
  const base = Math.max(1, options.baseMs)
  const cap = Math.max(base, options.capMs)
  const step = Math.min(
    cap,
    Math.max(base * 2 ** Math.min(Math.max(options.attempt, 0), 30), options.failingForMs),
  )
  const retryAfter = options.retryAfterMs
  if (retryAfter !== undefined && retryAfter > 0) {
    return Math.round(retryAfter + options.random() * Math.min(cap, Math.max(retryAfter / 2, step)))
  }
  return Math.round(base / 2 + options.random() * (step - base / 2))
}

/** Options of {@link withRetries}. */
export interface RetryOptions {
  /** Attempts in all (at least 1). Default {@link DEFAULT_ATTEMPTS}. */
  attempts?: number | undefined
  /** Waits between attempts; inject for tests. */
  sleep?: SleepFunction | undefined
  /** Cancels the waits (and is passed on by the caller to the requests). */
  signal?: AbortSignal | undefined
}

/**
 * Runs `attempt` until it succeeds, fails with anything but a retryable {@link UnavailableError}
 * (a `NetworkError` with `retryable: false`, such as a proxy refusing the tunnel with 403, is
 * final), or has been tried `attempts` times. Between tries it waits the server's `Retry-After`
 * (RFC 9110 §10.2.3), else 1 s, 2 s, 4 s...; a `Retry-After` above
 * {@link MAX_RETRY_AFTER_WAIT_SECONDS} ends the retries at once.
 *
 * @param attempt - one request and its validation.
 * @param options - attempts, sleep, signal.
 * @returns what `attempt` returned.
 * @throws the last error.
 */
export async function withRetries<T>(attempt: () => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const attempts = Math.max(1, options.attempts ?? DEFAULT_ATTEMPTS)
  for (let n = 1; ; n += 1) {
    try {
      return await attempt()
    } catch (err) {
      if (!isRetryable(err) || n >= attempts) throw err
      const retryAfter = err.retryAfterSeconds
      if (retryAfter !== undefined && retryAfter > MAX_RETRY_AFTER_WAIT_SECONDS) throw err
      const waitMs = retryAfter === undefined ? 1000 * 2 ** (n - 1) : retryAfter * 1000
      await sleepOrCancel(options.sleep, waitMs, options.signal)
    }
  }
}
