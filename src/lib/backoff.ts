/**
 * Exponential back-off with full jitter and a cap, so a fleet of devices that lost the same server
 * does not come back in lock-step.
 *
 * @internal
 */

/** Options of {@link backoffDelayMs}. */
export interface BackoffOptions {
  /** First delay, ms. Default 1000. */
  baseMs?: number
  /** Largest delay, ms. Default 300000 (5 min). */
  capMs?: number
  /** Random source in [0, 1); injectable for tests. Default Math.random. */
  random?: () => number
}

/**
 * The delay before retry number `attempt` (0-based): a random value in
 * [exp/2, exp] where exp = min(cap, base * 2^attempt) ("equal jitter": never zero, never in step).
 *
 * @param attempt - how many retries have already been made.
 * @param options - base, cap and random source.
 * @returns the delay in ms.
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? 1000
  const cap = options.capMs ?? 300_000
  const random = options.random ?? Math.random
  const exp = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 30))
  return Math.round(exp / 2 + random() * (exp / 2))
}
