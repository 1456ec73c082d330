/**
 * Bounded retries of one-shot requests outside the device-code polling loop (discovery, the device
 * authorization request, JWKS fetches): a server that answers 429/503 with `Retry-After`, or cannot
 * be reached for a moment, gets a few more tries within the caller's signal.
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
