/**
 * The overall deadline of one HTTP request (connect, send, headers and the whole body), and the
 * caller's stop signal, held by us rather than by the HTTP client.
 *
 * undici's `headersTimeout` and `bodyTimeout` are idle timeouts: a server that sends a byte every
 * few seconds resets them forever. And an abort does not always settle an undici request: one
 * queued behind a connection that keeps failing (nodejs/undici#3897) never hears it. So the
 * request's promise is raced against the deadline, and whatever undici does, the caller gets its
 * answer at the deadline or at the stop signal.
 *
 * @internal
 */

/** Why a request was stopped. */
export type StopReason = 'timeout' | 'cancelled'

/** How long an abandoned request may take to notice its abort before `onAbandoned` runs, ms. */
export const ABANDON_AFTER_MS = 250

/** Rejection of {@link RequestDeadline.race} when the deadline passed or the caller stopped. */
export class RequestStoppedError extends Error {
  /** Why. */
  readonly reason: StopReason

  /** @param reason - why the request was stopped. */
  constructor(reason: StopReason) {
    super(reason === 'timeout' ? 'the request did not finish in time' : 'the request was cancelled')
    this.name = 'RequestStoppedError'
    this.reason = reason
  }
}

/** One request's deadline and stop signal. `dispose()` it when the request is over. */
export class RequestDeadline {
  /** Fires at the deadline or when the caller's signal fires: pass it to the HTTP client. */
  readonly signal: AbortSignal
  readonly #controller = new AbortController()
  readonly #timer: NodeJS.Timeout
  readonly #outer: AbortSignal | undefined
  readonly #onOuterAbort = () => this.#stop('cancelled')
  #reason: StopReason | undefined

  /**
   * @param timeoutMs - the deadline from now, ms.
   * @param outer - the caller's stop signal.
   */
  constructor(timeoutMs: number, outer: AbortSignal | undefined) {
    this.signal = this.#controller.signal
    this.#outer = outer
    this.#timer = setTimeout(() => this.#stop('timeout'), Math.max(1, timeoutMs))
    if (outer?.aborted) this.#stop('cancelled')
    else outer?.addEventListener('abort', this.#onOuterAbort, { once: true })
  }

  /** Why the request was stopped, if it was. */
  get reason(): StopReason | undefined {
    return this.#reason
  }

  #stop(reason: StopReason): void {
    if (this.#reason !== undefined) return
    this.#reason = reason
    this.#controller.abort(new RequestStoppedError(reason))
  }

  /**
   * Settles like `work`, or rejects with a {@link RequestStoppedError} as soon as the deadline
   * passes or the caller stops, whether or not `work` settles then.
   *
   * @param work - the request (started with {@link RequestDeadline.signal}).
   * @param onAbandoned - called when `work` has still not settled {@link ABANDON_AFTER_MS} after
   *   the stop: the HTTP client did not hear the abort, and its connections should be destroyed.
   * @returns what `work` returned.
   */
  race<T>(work: Promise<T>, onAbandoned?: () => void): Promise<T> {
    let settled = false
    const watched = work.finally(() => {
      settled = true
    })
    // A failure after the stop has no one to report to.
    watched.catch(() => {})
    const stopped = new Promise<never>((_resolve, reject) => {
      const onStop = () => {
        reject(new RequestStoppedError(this.#reason ?? 'cancelled'))
        if (onAbandoned === undefined || settled) return
        setTimeout(() => {
          if (!settled) onAbandoned()
        }, ABANDON_AFTER_MS).unref()
      }
      if (this.signal.aborted) onStop()
      else this.signal.addEventListener('abort', onStop, { once: true })
    })
    stopped.catch(() => {})
    return Promise.race([watched, stopped])
  }

  /** Clears the timer and the listener on the caller's signal. */
  dispose(): void {
    clearTimeout(this.#timer)
    this.#outer?.removeEventListener('abort', this.#onOuterAbort)
  }
}
