/**
 * Waiting for something at most so long: shutdown steps, MQTT acknowledgements, a subscription.
 *
 * @internal
 */

/** Options of {@link withDeadline}. */
export interface WithDeadlineOptions {
  /**
   * Let the process exit while only this deadline is pending (`timer.unref()`). Default false:
   * a shutdown that awaits it must not end early because nothing else keeps the loop alive.
   */
  unref?: boolean
}

/**
 * Settles like `promise`, or resolves undefined after `ms` when it has not settled by then.
 *
 * @param promise - what to wait for; its rejection is passed on.
 * @param ms - the bound, ms (negative counts as 0).
 * @param options - whether the timer keeps the process alive.
 * @returns the value, or undefined on timeout.
 */
export function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  options: WithDeadlineOptions = {},
): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), Math.max(0, ms))
    if (options.unref) timer.unref()
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
