/**
 * A background writer that coalesces and paces writes: the spool persists its reader state behind
 * the next request instead of making each acknowledgement wait for an fsync.
 *
 * Separate from the spool because the scheduling (coalescing, pacing, waking early when someone
 * waits, holding a failure until someone asks) is subtle on its own and independent of what is
 * written.
 *
 * @internal
 */

/**
 * Runs `write` in the background whenever {@link WriteBehind.schedule} was called since the last
 * run; requests that pile up during a run collapse into one more run. While requests keep coming,
 * runs start at most every `intervalMs`, unless someone waits ({@link WriteBehind.settled}) or the
 * writer is closing. A failure stops the runs and is kept for the next {@link WriteBehind.settled}.
 */
export class WriteBehind {
  readonly #write: () => Promise<void>
  readonly #intervalMs: number
  #writer: Promise<void> | undefined
  #dirty = false
  #urgent = false
  #closing = false
  #wake: (() => void) | undefined
  #error: unknown

  /**
   * @param write - writes the current state; reads it when called, so the newest state is written.
   * @param intervalMs - least time between the starts of two runs while requests keep coming, ms.
   */
  constructor(write: () => Promise<void>, intervalMs: number) {
    this.#write = write
    this.#intervalMs = intervalMs
  }

  /** Asks for a write; starts the background writer unless it is running. */
  schedule(): void {
    this.#dirty = true
    this.#writer ??= this.#loop()
  }

  /** Whether a write failed and nobody has been told yet (by {@link WriteBehind.settled}). */
  get failed(): boolean {
    return this.#error !== undefined
  }

  async #loop(): Promise<void> {
    try {
      while (this.#dirty) {
        this.#dirty = false
        const started = Date.now()
        await this.#write()
        // fsync is costly on SD cards (and slows the network path on small machines): while
        // requests keep coming, write at most every intervalMs.
        const wait = this.#intervalMs - (Date.now() - started)
        if (this.#dirty && wait > 0 && !this.#closing && !this.#urgent) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, wait)
            function done() {
              clearTimeout(timer)
              resolve()
            }
            this.#wake = done
          })
          this.#wake = undefined
        }
      }
    } catch (err) {
      this.#error ??= err
    } finally {
      this.#writer = undefined
    }
  }

  /**
   * Waits until every requested write has run, writing now instead of at the next interval.
   *
   * @throws what a failed write threw (once: the failure is cleared).
   */
  async settled(): Promise<void> {
    this.#urgent = true
    this.#wake?.()
    try {
      while (this.#writer) await this.#writer
    } finally {
      this.#urgent = false
    }
    if (this.#error !== undefined) {
      const err = this.#error
      this.#error = undefined
      throw err
    }
  }

  /**
   * Stops pacing (the remaining writes run at once) and waits for the writer. A failure is kept
   * for {@link WriteBehind.settled}, not thrown here.
   */
  async close(): Promise<void> {
    this.#closing = true
    this.#wake?.()
    while (this.#writer) await this.#writer
  }
}
