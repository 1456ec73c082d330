/**
 * The telemetry uploader: sends spool batches to the protected API in spool order, one batch at a
 * time over a keep-alive connection, and advances the spool only on a real acknowledgement.
 *
 * Per answer:
 * - 2xx: delivered, the spool advances. An HTML page (a captive portal's 200) is not an answer
 *   from the API: the batch is kept and the error reported.
 * - 401: if the token source now has another token (renewed meanwhile) the batch is retried with
 *   it; otherwise the token is refreshed once (`forceRefresh`) and the batch retried; a 401 to a
 *   refreshed token stops with `ERR_SIGNIN_REQUIRED`, the spool intact. The token source is asked
 *   (without forcing) for every batch, so a token renewed by the daemon is used at once instead of
 *   costing a 401 per token lifetime.
 * - 408, 409, 425, 429, 5xx, 3xx, network errors: exponential back-off with full jitter and a cap,
 *   growing with the time spent failing; `Retry-After` honoured (RFC 9110 §10.2.3) plus a random
 *   spread, so a fleet does not come back from an outage in lock-step ({@link retryDelayMs}); the
 *   batch is kept.
 * - 400, 413, 422: the API will never take this batch (its content or size); it moves to the
 *   dead-letter file with the reason and the spool moves on.
 * - 403, 404, 405, 410, 415 and any other 4xx: the endpoint, not the batch, is wrong (a typo in
 *   `telemetry.endpoint`, a missing scope): the batch is kept, the one-shot drain stops at once
 *   (`ERR_UNAVAILABLE`, exit 5) and the daemon's loop backs off up to `endpointBackoffCapMs`.
 *
 * This module holds the {@link Uploader}'s loops (the one-shot drain and the daemon's run); the
 * parts live beside it: one attempt at a batch with the 401 handling in `upload-attempt.ts`, the
 * classification of an answer in `upload-outcome.ts`, the HTTP transport (undici, loaded lazily)
 * in `upload-http.ts`, the wire body and headers in `upload-wire.ts`, the recorded result in
 * `last-upload.ts`, the shutdown grace in `grace-signal.ts`, and the options with their defaults
 * in `uploader-options.ts`.
 *
 * @see ../shared/CONTRACT.md "Telemetry wire format"
 * @packageDocumentation
 */
import { EdgeTokenError, isEdgeTokenError } from '../../errors.js'
import { retryDelayMs } from '../../oauth/retry.js'
import type { Spool, SpoolBatch } from '../spool/spool.js'
import type { LastUpload } from '../spool/spool-status.js'
import { graceSignal } from './grace-signal.js'
import { failureResult, lastUploadEntry } from './last-upload.js'
import { type SendTarget, sendBatch } from './upload-attempt.js'
import { UploadConnection } from './upload-http.js'
import type { Outcome } from './upload-outcome.js'
import { wireBatchId } from './upload-wire.js'
import {
  type DrainOptions,
  type DrainResult,
  type UploaderOptions,
  type UploaderSettings,
  uploaderSettings,
} from './uploader-options.js'

export type { GetAccessTokenOptions, TokenGetter } from './upload-attempt.js'
export type { DrainOptions, DrainResult, UploadEvent, UploaderOptions } from './uploader-options.js'

/**
 * Uploads spool batches to the protected API. One instance per endpoint; `close()` it at the end.
 *
 * @example
 * ```ts
 * const uploader = new Uploader({ spool, endpoint, deviceId, getAccessToken })
 * try {
 *   await uploader.drain({ signal })
 * } finally {
 *   await uploader.close()
 * }
 * ```
 */
export class Uploader {
  readonly #spool: Spool
  readonly #deviceId: string
  readonly #connection: UploadConnection
  /** Where {@link sendBatch} sends, built once: the connection, device and token source. */
  readonly #target: SendTarget
  readonly #settings: UploaderSettings
  /** Fires the idle wait of {@link Uploader.run} early (records were appended in this process). */
  #wakeIdle: (() => void) | undefined
  /** Records were appended since the loop last looked at the spool. */
  #appended = false

  /**
   * @param options - see {@link UploaderOptions}.
   * @throws EdgeTokenError `ERR_INSECURE_URL` for a plain-http endpoint that is not loopback.
   */
  constructor(options: UploaderOptions) {
    this.#settings = uploaderSettings(options)
    this.#spool = options.spool
    this.#deviceId = options.deviceId
    this.#connection = new UploadConnection(
      this.#settings.url,
      { timeoutMs: this.#settings.timeoutMs, maxResponseBytes: this.#settings.maxResponseBytes },
      options.dispatcher,
    )
    this.#target = {
      connection: this.#connection,
      deviceId: options.deviceId,
      getAccessToken: options.getAccessToken,
      now: this.#settings.now,
    }
  }

  /** The wire `batch_id` (and `Idempotency-Key`) of a spool batch, for the events. */
  #batchId(batch: SpoolBatch): string {
    return wireBatchId(this.#deviceId, batch)
  }

  /** Reports a retry of `batch` after `delayMs` (attempt is 0-based). */
  #reportRetry(
    batch: SpoolBatch,
    attempt: number,
    delayMs: number,
    outcome: Extract<Outcome, { kind: 'retry' }>,
  ): void {
    this.#settings.onEvent({
      type: 'retry',
      batchId: this.#batchId(batch),
      attempt: attempt + 1,
      delayMs,
      reason: outcome.error.message,
      ...(outcome.status === undefined ? {} : { status: outcome.status }),
    })
  }

  /**
   * Uploads until the spool is empty (one-shot `upload`), retrying each batch a bounded number of
   * times. Records the outcome for `status`.
   *
   * @param options - stop signal, retry and wait bounds.
   * @returns what was delivered.
   * @throws UnavailableError or InvalidResponseError (exit 5) after the retries,
   *   `ERR_SIGNIN_REQUIRED` (exit 3), `ERR_CANCELLED` when stopped; the spool keeps every
   *   undelivered record in all cases.
   */
  async drain(options: DrainOptions = {}): Promise<DrainResult> {
    const maxRetries = options.maxRetries ?? 3
    const maxWaitMs = options.maxWaitMs ?? 30_000
    const result: DrainResult = { delivered: 0, batches: 0, deadLettered: 0 }
    const grace = graceSignal(options.signal, this.#settings.graceMs)
    let waited = 0
    let lastStatus: number | undefined
    try {
      for (;;) {
        if (options.signal?.aborted) throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped')
        const batch = await this.#spool.readBatch({
          maxRecords: this.#settings.maxRecords,
          maxBytes: this.#settings.maxBytes,
        })
        if (!batch) break
        for (let attempt = 0; ; attempt++) {
          const outcome = await sendBatch(this.#target, batch, grace.signal)
          if (outcome.kind !== 'retry') {
            lastStatus = outcome.status
            await this.#settle(batch, outcome, result)
            break
          }
          lastStatus = outcome.status
          // Retrying will not fix a wrong endpoint or scope: stop now, the spool intact.
          if (outcome.endpoint) throw outcome.error
          let delayMs = retryDelayMs({
            attempt,
            failingForMs: waited,
            retryAfterMs: outcome.retryAfterMs,
            baseMs: this.#settings.baseMs,
            capMs: this.#settings.capMs,
            random: this.#settings.random,
          })
          // The spread is for fleets; it must not cost a one-shot upload the try that the server's
          // own Retry-After (or the first back-off step) still leaves room for within the budget.
          const least = outcome.retryAfterMs ?? 0
          if (waited + delayMs > maxWaitMs && waited + least <= maxWaitMs) delayMs = maxWaitMs - waited
          if (attempt >= maxRetries || waited + delayMs > maxWaitMs) throw outcome.error
          this.#reportRetry(batch, attempt, delayMs, outcome)
          await this.#settings.sleep(delayMs, options.signal)
          waited += delayMs
          if (options.signal?.aborted) throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped')
        }
      }
      await this.#record({ result: 'ok', delivered: result.delivered, status: lastStatus })
      return result
    } catch (err) {
      await this.#record({ ...failureResult(err), delivered: result.delivered, status: lastStatus }).catch(
        () => {},
      )
      throw err
    } finally {
      grace.dispose()
    }
  }

  /**
   * The daemon's loop: uploads whatever is pending, lets a partial batch linger, backs off without
   * limit while the API is unavailable (up to `endpointBackoffCapMs` while the endpoint itself is
   * refused), and waits while idle. Appends through the same {@link Spool} object wake it at once;
   * otherwise an idle spool is checked every `idlePollMs` with a few `stat` calls, without taking
   * the spool lock (no writes to the card while idle). Returns when `signal` fires.
   *
   * @param options - the stop signal and how often an idle spool is checked for records appended
   *   by other processes (`send`), ms; default 5000 (appends through this spool object wake the
   *   loop at once).
   * @throws `ERR_SIGNIN_REQUIRED` when the API refuses a refreshed token (the caller announces
   *   it, keeps spooling, and calls `run` again after a new sign-in).
   */
  async run(options: { signal: AbortSignal; idlePollMs?: number }): Promise<void> {
    const { signal } = options
    const idleMs = Math.max(10, options.idlePollMs ?? 5000)
    const grace = graceSignal(signal, this.#settings.graceMs)
    let attempt = 0
    // When the current run of failed attempts began, epoch ms (the back-off grows with it).
    let failingSince = 0
    let lastResult: LastUpload['result'] | undefined
    let lastStatus: number | undefined
    const unsubscribe = this.#spool.onAppend(() => {
      this.#appended = true
      this.#wakeIdle?.()
    })
    try {
      while (!signal.aborted) {
        this.#appended = false
        const pending = await this.#spool.pollPending()
        if (pending === 0) {
          // Idle: let `edgetoken upload` in, and stop touching the lock.
          await this.#spool.releaseReader()
          await this.#idle(idleMs, signal)
          continue
        }
        if (pending < this.#settings.maxRecords && this.#settings.lingerMs > 0 && attempt === 0) {
          await this.#settings.sleep(this.#settings.lingerMs, signal)
          if (signal.aborted) break
        }
        let batch: SpoolBatch | undefined
        try {
          batch = await this.#spool.readBatch({
            maxRecords: this.#settings.maxRecords,
            maxBytes: this.#settings.maxBytes,
          })
        } catch (err) {
          // `edgetoken upload` is delivering these records: look again after an idle period (not at
          // the next append, which would retry the lock per reading).
          if (!isEdgeTokenError(err, 'ERR_BUSY')) throw err
          await this.#settings.sleep(idleMs, signal)
          continue
        }
        if (!batch) {
          await this.#idle(idleMs, signal)
          continue
        }
        let outcome: Outcome
        try {
          outcome = await sendBatch(this.#target, batch, grace.signal)
        } catch (err) {
          if (isCancel(err, signal)) break
          throw err
        }
        if (outcome.kind !== 'retry') {
          await this.#settle(batch, outcome, { delivered: 0, batches: 0, deadLettered: 0 })
          attempt = 0
          if (lastResult !== 'ok') {
            lastResult = 'ok'
            await this.#record({ result: 'ok', status: outcome.status })
          }
          continue
        }
        const capMs = outcome.endpoint ? this.#settings.endpointCapMs : this.#settings.capMs
        if (attempt === 0) failingSince = this.#settings.now()
        const delayMs = retryDelayMs({
          attempt,
          failingForMs: this.#settings.now() - failingSince,
          retryAfterMs: outcome.retryAfterMs,
          baseMs: this.#settings.baseMs,
          capMs,
          random: this.#settings.random,
        })
        const f = failureResult(outcome.error)
        if (lastResult !== f.result || lastStatus !== outcome.status) {
          lastResult = f.result
          lastStatus = outcome.status
          await this.#record({ ...f, status: outcome.status })
        }
        this.#reportRetry(batch, attempt, delayMs, outcome)
        attempt++
        await this.#settings.sleep(delayMs, signal)
      }
    } catch (err) {
      await this.#record({ ...failureResult(err) }).catch(() => {})
      throw err
    } finally {
      unsubscribe()
      grace.dispose()
    }
  }

  /** The idle wait of {@link Uploader.run}: `ms`, or until records are appended or `signal` fires. */
  async #idle(ms: number, signal: AbortSignal): Promise<void> {
    const woken = new AbortController()
    const onAbort = () => woken.abort()
    signal.addEventListener('abort', onAbort, { once: true })
    this.#wakeIdle = onAbort
    // Appended while the spool was being looked at: look again instead of sleeping. Stopped
    // meanwhile: the listener above came too late to hear it.
    if (this.#appended || signal.aborted) woken.abort()
    try {
      await this.#settings.sleep(ms, woken.signal)
    } finally {
      this.#wakeIdle = undefined
      signal.removeEventListener('abort', onAbort)
    }
  }

  async #settle(
    batch: SpoolBatch,
    outcome: Exclude<Outcome, { kind: 'retry' }>,
    result: DrainResult,
  ): Promise<void> {
    const batchId = this.#batchId(batch)
    if (outcome.kind === 'delivered') {
      await this.#spool.ack(batch)
      result.delivered += batch.count
      result.batches++
      this.#settings.onEvent({ type: 'delivered', batchId, seq: batch.seq, records: batch.count })
    } else {
      await this.#spool.deadLetter(batch, { status: outcome.status, message: outcome.reason })
      result.deadLettered += batch.count
      this.#settings.onEvent({
        type: 'dead-letter',
        batchId,
        records: batch.count,
        status: outcome.status,
        reason: outcome.reason,
      })
    }
  }

  async #record(result: Omit<LastUpload, 'at'>): Promise<void> {
    await this.#spool.setLastUpload(lastUploadEntry(result, this.#settings.now()))
  }

  /** Closes the connection pool (when the uploader created it). */
  async close(): Promise<void> {
    await this.#connection.close()
  }
}

function isCancel(err: unknown, signal: AbortSignal): boolean {
  return signal.aborted && err instanceof EdgeTokenError && err.code === 'ERR_CANCELLED'
}
