/**
 * The shutdown grace of the batch in flight: a signal that fires a while after the stop signal,
 * so a batch already sent can still be acknowledged instead of being sent again after a restart.
 *
 * Separate from the uploader because its loops stop at the stop signal itself, while the request
 * in flight must only be aborted at the later one: keeping the two apart in one helper keeps the
 * loops from mixing them up.
 *
 * @internal
 */

/** A derived signal and the release of its listener and timer. */
export interface GraceSignal {
  /** Fires `graceMs` after the stop signal; undefined when there is no stop signal. */
  signal: AbortSignal | undefined
  /** Removes the listener from the stop signal and clears a pending timer. */
  dispose: () => void
}

/**
 * A signal that fires `graceMs` after `signal`: the batch in flight may still finish.
 *
 * @param signal - the stop signal, if any.
 * @param graceMs - how long after it the derived signal fires, ms.
 * @returns the derived signal; `dispose()` it when the loop ends.
 */
export function graceSignal(signal: AbortSignal | undefined, graceMs: number): GraceSignal {
  if (!signal) return { signal: undefined, dispose: () => {} }
  const controller = new AbortController()
  let timer: NodeJS.Timeout | undefined
  const onAbort = () => {
    timer = setTimeout(() => controller.abort(signal.reason), graceMs)
  }
  if (signal.aborted) onAbort()
  else signal.addEventListener('abort', onAbort, { once: true })
  return {
    signal: controller.signal,
    dispose: () => {
      signal.removeEventListener('abort', onAbort)
      if (timer) clearTimeout(timer)
    },
  }
}
