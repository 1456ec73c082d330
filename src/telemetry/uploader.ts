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
 * - 408, 409, 425, 429, 5xx, 3xx, network errors: exponential back-off with jitter and a cap,
 *   `Retry-After` honoured (RFC 9110 §10.2.3); the batch is kept.
 * - 400, 413, 422: the API will never take this batch (its content or size); it moves to the
 *   dead-letter file with the reason and the spool moves on.
 * - 403, 404, 405, 410, 415 and any other 4xx: the endpoint, not the batch, is wrong (a typo in
 *   `telemetry.endpoint`, a missing scope): the batch is kept, the one-shot drain stops at once
 *   (`ERR_UNAVAILABLE`, exit 5) and the daemon's loop backs off up to `endpointBackoffCapMs`.
 *
 * @see ../../CONTRACT.md "Telemetry wire format"
 * @packageDocumentation
 */
import type { Dispatcher } from 'undici'
import { EdgeTokenError, InvalidResponseError, isEdgeTokenError, UnavailableError } from '../errors.js'
import { backoffDelayMs } from '../lib/backoff.js'
import { parseRetryAfter } from '../lib/retry-after.js'
import { isoSeconds } from '../lib/time.js'
import { assertSecureUrl } from '../lib/url.js'
import { isObject, parseJson } from '../lib/validate.js'
import { VERSION } from '../version.js'
import type { Spool, SpoolBatch } from './spool.js'
import type { LastUpload } from './spool-status.js'

/** Options of {@link TokenGetter}. */
export interface GetAccessTokenOptions {
  /** Ignore the cached token and refresh (after the API answered 401 to the current one). */
  forceRefresh: boolean
  /**
   * The token the API just answered 401 to: a source that keeps tokens in memory must not hand
   * it back without looking at its store again (it may have been renewed there).
   */
  rejected?: string | undefined
}

/** Returns a valid access token for the API (secret; never logged). */
export type TokenGetter = (options: GetAccessTokenOptions) => Promise<string>

/** Something the uploader did, for logs and the daemon's status. Never carries a token. */
export type UploadEvent =
  | { type: 'delivered'; batchId: string; seq: number; records: number }
  | { type: 'retry'; batchId: string; attempt: number; delayMs: number; reason: string; status?: number }
  | { type: 'dead-letter'; batchId: string; records: number; status: number; reason: string }

/** Options of {@link Uploader}. */
export interface UploaderOptions {
  /** The spool to drain. */
  spool: Spool
  /** The API's ingest URL (https, or http to loopback). */
  endpoint: string
  /** This device's id (`device_id`, and part of every batch id). */
  deviceId: string
  /** Access tokens. */
  getAccessToken: TokenGetter
  /** Records per batch. Default 500. */
  batchMaxRecords?: number
  /** Bytes of record JSON per batch. Default 512 KiB (the reference API takes 1 MiB bodies). */
  batchMaxBytes?: number
  /** How long the daemon lets a partial batch wait for more records, ms. Default 1000. */
  lingerMs?: number
  /** Longest wait for the answer's headers, and between body chunks, ms (undici timeouts). Default 30000. */
  requestTimeoutMs?: number
  /** How long a batch in flight may still finish after the stop signal, ms. Default 5000. */
  shutdownGraceMs?: number
  /** First back-off delay, ms. Default 1000. */
  backoffBaseMs?: number
  /** Longest back-off delay, ms. Default 300000. */
  backoffCapMs?: number
  /**
   * Longest back-off delay of the daemon's loop while the endpoint itself is refused (403, 404,
   * 405, 410, 415, other 4xx): a configuration problem that only a person fixes. Default 3600000.
   */
  endpointBackoffCapMs?: number
  /** Random source for jitter (tests). */
  random?: () => number
  /** Sleeps; rejects or resolves early when the signal fires (tests inject a fake). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>
  /** The clock, epoch ms (tests). */
  now?: () => number
  /** The HTTP dispatcher; default a keep-alive Pool to the endpoint's origin (or the proxy agent when HTTPS_PROXY/HTTP_PROXY is set). */
  dispatcher?: Dispatcher
  /** Receives what happened. */
  onEvent?: (event: UploadEvent) => void
}

/** Options of {@link Uploader.drain}. */
export interface DrainOptions {
  /** Stops the drain (SIGTERM); the batch in flight gets `shutdownGraceMs` to finish. */
  signal?: AbortSignal | undefined
  /** Consecutive failed attempts of one batch before giving up. Default 3. */
  maxRetries?: number
  /** Give up instead of waiting longer than this in total, ms (a long Retry-After). Default 30000. */
  maxWaitMs?: number
}

/** What a drain achieved. */
export interface DrainResult {
  /** Records the API acknowledged. */
  delivered: number
  /** Batches the API acknowledged. */
  batches: number
  /** Records moved to the dead-letter file. */
  deadLettered: number
}

type Outcome =
  | { kind: 'delivered'; status: number }
  | {
      kind: 'retry'
      error: EdgeTokenError
      retryAfterMs?: number | undefined
      status?: number
      /** The endpoint refused the request itself (not the batch): a configuration problem. */
      endpoint?: boolean
    }
  | { kind: 'dead-letter'; status: number; reason: string }

const RETRYABLE_4XX = new Set([408, 409, 425, 429])
/** Answers about the batch itself (its content or size): the only ones that dead-letter it. */
const BATCH_REJECTED = new Set([400, 413, 422])
const MAX_ERROR_BODY_BYTES = 16 * 1024

const defaultSleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) {
      resolve()
      return
    }
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })

function hasProxyEnv(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy)
}

/** One line of server text, bounded and printable. */
function clean(text: string): string {
  return text
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, 200)
}

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
  readonly #url: URL
  readonly #deviceId: string
  readonly #getAccessToken: TokenGetter
  readonly #maxRecords: number
  readonly #maxBytes: number
  readonly #lingerMs: number
  readonly #timeoutMs: number
  readonly #graceMs: number
  readonly #baseMs: number
  readonly #capMs: number
  readonly #endpointCapMs: number
  readonly #random: () => number
  readonly #sleep: (ms: number, signal?: AbortSignal) => Promise<void>
  readonly #now: () => number
  #dispatcher: Dispatcher | undefined
  readonly #ownsDispatcher: boolean
  readonly #onEvent: (event: UploadEvent) => void
  /** Fires the idle wait of {@link Uploader.run} early (records were appended in this process). */
  #wakeIdle: (() => void) | undefined
  /** Records were appended since the loop last looked at the spool. */
  #appended = false

  /**
   * @param options - see {@link UploaderOptions}.
   * @throws EdgeTokenError `ERR_INSECURE_URL` for a plain-http endpoint that is not loopback.
   */
  constructor(options: UploaderOptions) {
    this.#url = assertSecureUrl(options.endpoint, 'telemetry.endpoint')
    this.#spool = options.spool
    this.#deviceId = options.deviceId
    this.#getAccessToken = options.getAccessToken
    this.#maxRecords = Math.max(1, Math.floor(options.batchMaxRecords ?? 500))
    this.#maxBytes = Math.max(1024, Math.floor(options.batchMaxBytes ?? 512 * 1024))
    this.#lingerMs = Math.max(0, options.lingerMs ?? 1000)
    this.#timeoutMs = Math.max(1, options.requestTimeoutMs ?? 30_000)
    this.#graceMs = Math.max(0, options.shutdownGraceMs ?? 5000)
    this.#baseMs = Math.max(1, options.backoffBaseMs ?? 1000)
    this.#capMs = Math.max(this.#baseMs, options.backoffCapMs ?? 300_000)
    this.#endpointCapMs = Math.max(this.#capMs, options.endpointBackoffCapMs ?? 3_600_000)
    this.#random = options.random ?? Math.random
    this.#sleep = options.sleep ?? defaultSleep
    this.#now = options.now ?? Date.now
    this.#onEvent = options.onEvent ?? (() => {})
    this.#ownsDispatcher = options.dispatcher === undefined
    this.#dispatcher = options.dispatcher
  }

  /**
   * The connection pool, created (and undici imported) on the first request: an idle daemon whose
   * spool is empty never loads undici (~5-7 MiB of RSS on a Pi, measured with bench-daemon).
   */
  async #getDispatcher(): Promise<Dispatcher> {
    if (this.#dispatcher === undefined) {
      const { EnvHttpProxyAgent, Pool } = await import('undici')
      this.#dispatcher ??= hasProxyEnv(process.env)
        ? new EnvHttpProxyAgent({ headersTimeout: this.#timeoutMs, bodyTimeout: this.#timeoutMs })
        : new Pool(this.#url.origin, {
            connections: 1,
            keepAliveTimeout: 60_000,
            headersTimeout: this.#timeoutMs,
            bodyTimeout: this.#timeoutMs,
          })
    }
    return this.#dispatcher
  }

  /** The wire `batch_id` (and `Idempotency-Key`) of a spool batch. */
  #batchId(batch: SpoolBatch): string {
    return `${this.#deviceId}.${batch.key}`
  }

  /**
   * Sends one batch and classifies the answer. A 401 is answered here: first with the token
   * source's current token when it is not the one refused (renewed meanwhile), then with one forced
   * refresh.
   *
   * @param batch - the batch.
   * @param signal - aborts the request (already includes the shutdown grace).
   */
  async #send(batch: SpoolBatch, signal: AbortSignal | undefined): Promise<Outcome> {
    const batchId = this.#batchId(batch)
    const body = `{"device_id":${JSON.stringify(this.#deviceId)},"batch_id":${JSON.stringify(batchId)},"seq":${batch.seq},"records":[${batch.records.join(',')}]}`
    let refused: string | undefined
    let triedCurrent = false
    let forced = false
    for (;;) {
      let token: string
      try {
        // Asked per batch: the token source answers from its store (cheap) and renews ahead of
        // expiry, so a renewed token is used at once rather than after a 401.
        if (refused !== undefined && triedCurrent) {
          token = await this.#getAccessToken({ forceRefresh: true })
          forced = true
        } else {
          token = await this.#getAccessToken({ forceRefresh: false, rejected: refused })
          if (refused !== undefined) {
            // First answer to a 401: the token may have been renewed since it was read.
            triedCurrent = true
            if (token === refused) {
              token = await this.#getAccessToken({ forceRefresh: true })
              forced = true
            }
          }
        }
      } catch (err) {
        if (
          err instanceof EdgeTokenError &&
          err.code !== 'ERR_SIGNIN_REQUIRED' &&
          err.code !== 'ERR_CANCELLED'
        ) {
          if (err.category === 'unavailable') return { kind: 'retry', error: err }
        }
        throw err
      }
      const res = await this.#post(body, batchId, token, signal)
      if (res.kind !== 'answer') return res.outcome
      const { status, headers, text } = res
      if (status === 401) {
        if (!forced) {
          refused = token
          continue
        }
        throw new EdgeTokenError(
          'ERR_SIGNIN_REQUIRED',
          'the telemetry API refused a freshly refreshed access token (401): sign in again',
        )
      }
      const contentType = String(headers['content-type'] ?? '').toLowerCase()
      if (status >= 200 && status < 300) {
        if (contentType.includes('text/html')) {
          return {
            kind: 'retry',
            status,
            error: new InvalidResponseError(
              `${this.#url.host} answered with an HTML page instead of the API (captive portal?); the batch is kept`,
              { status },
            ),
          }
        }
        return { kind: 'delivered', status }
      }
      const reason = describe(status, text)
      if (status >= 500 || RETRYABLE_4XX.has(status) || (status >= 300 && status < 400)) {
        const retryAfter = parseRetryAfter(
          headers['retry-after'] as string | string[] | undefined,
          this.#now(),
        )
        const error =
          status >= 300 && status < 400
            ? new InvalidResponseError(
                `${this.#url.host} redirected the upload (${status}); the batch is kept`,
                {
                  status,
                },
              )
            : new UnavailableError(`telemetry API ${this.#url.host} answered ${reason}`, {
                status,
                retryAfterSeconds: retryAfter,
              })
        return {
          kind: 'retry',
          status,
          error,
          retryAfterMs: retryAfter === undefined ? undefined : retryAfter * 1000,
        }
      }
      if (BATCH_REJECTED.has(status)) return { kind: 'dead-letter', status, reason }
      // 403, 404, 405, 410, 415, any other 4xx: nothing is wrong with this batch; the endpoint
      // (URL, method, scope) is. Dead-lettering would empty the whole spool into a rotating file.
      return {
        kind: 'retry',
        status,
        endpoint: true,
        error: new UnavailableError(
          `telemetry API ${this.#url.host} refused the upload (${reason}): check telemetry.endpoint and the token's scope; the spool is kept`,
          { status },
        ),
      }
    }
  }

  async #post(
    body: string,
    batchId: string,
    token: string,
    signal: AbortSignal | undefined,
  ): Promise<
    | { kind: 'answer'; status: number; headers: Record<string, string | string[] | undefined>; text: string }
    | { kind: 'outcome'; outcome: Outcome }
  > {
    // The pool's headers/body timeouts bound a request; the stop signal only when there is one.
    try {
      const dispatcher = await this.#getDispatcher()
      const res = await dispatcher.request({
        origin: this.#url.origin,
        path: `${this.#url.pathname}${this.#url.search}`,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          'user-agent': `edgetoken/${VERSION}`,
          authorization: `Bearer ${token}`,
          'idempotency-key': batchId,
        },
        body,
        ...(signal ? { signal } : {}),
      })
      // Only a small answer is read (for the error reason); a larger one is drained unread.
      const length = Number(res.headers['content-length'])
      let text = ''
      if (Number.isFinite(length) && length <= MAX_ERROR_BODY_BYTES) text = await res.body.text()
      else {
        let bytes = 0
        for await (const chunk of res.body) {
          if (bytes < MAX_ERROR_BODY_BYTES) text += (chunk as Buffer).toString('utf8')
          bytes += (chunk as Buffer).length
        }
      }
      return { kind: 'answer', status: res.statusCode, headers: res.headers, text }
    } catch (err) {
      if (signal?.aborted) throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped', { cause: err })
      const code = (err as NodeJS.ErrnoException).code
      const why = code?.includes('TIMEOUT') ? 'timed out' : (code ?? 'network error')
      return {
        kind: 'outcome',
        outcome: {
          kind: 'retry',
          error: new UnavailableError(`telemetry API ${this.#url.host} unreachable: ${why}`, { cause: err }),
        },
      }
    }
  }

  /** A signal that fires `shutdownGraceMs` after `signal`: the batch in flight may still finish. */
  #graceSignal(signal: AbortSignal | undefined): { signal: AbortSignal | undefined; dispose: () => void } {
    if (!signal) return { signal: undefined, dispose: () => {} }
    const controller = new AbortController()
    let timer: NodeJS.Timeout | undefined
    const onAbort = () => {
      timer = setTimeout(() => controller.abort(signal.reason), this.#graceMs)
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

  /**
   * Uploads until the spool is empty (one-shot `upload`), retrying each batch a bounded number of
   * times. Records the outcome for `status`.
   *
   * @param options - stop signal, retry and wait bounds.
   * @returns what was delivered.
   * @throws {@link UnavailableError} or {@link InvalidResponseError} (exit 5) after the retries,
   *   `ERR_SIGNIN_REQUIRED` (exit 3), `ERR_CANCELLED` when stopped; the spool keeps every
   *   undelivered record in all cases.
   */
  async drain(options: DrainOptions = {}): Promise<DrainResult> {
    const maxRetries = options.maxRetries ?? 3
    const maxWaitMs = options.maxWaitMs ?? 30_000
    const result: DrainResult = { delivered: 0, batches: 0, deadLettered: 0 }
    const grace = this.#graceSignal(options.signal)
    let waited = 0
    let lastStatus: number | undefined
    try {
      for (;;) {
        if (options.signal?.aborted) throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped')
        const batch = await this.#spool.readBatch({ maxRecords: this.#maxRecords, maxBytes: this.#maxBytes })
        if (!batch) break
        for (let attempt = 0; ; attempt++) {
          const outcome = await this.#send(batch, grace.signal)
          if (outcome.kind !== 'retry') {
            lastStatus = outcome.status
            await this.#settle(batch, outcome, result)
            break
          }
          lastStatus = outcome.status
          // Retrying will not fix a wrong endpoint or scope: stop now, the spool intact.
          if (outcome.endpoint) throw outcome.error
          const delayMs = Math.max(
            outcome.retryAfterMs ?? 0,
            backoffDelayMs(attempt, { baseMs: this.#baseMs, capMs: this.#capMs, random: this.#random }),
          )
          if (attempt >= maxRetries || waited + delayMs > maxWaitMs) throw outcome.error
          this.#onEvent({
            type: 'retry',
            batchId: this.#batchId(batch),
            attempt: attempt + 1,
            delayMs,
            reason: outcome.error.message,
            ...(outcome.status === undefined ? {} : { status: outcome.status }),
          })
          await this.#sleep(delayMs, options.signal)
          waited += delayMs
          if (options.signal?.aborted) throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped')
        }
      }
      await this.#record({ result: 'ok', delivered: result.delivered, status: lastStatus })
      return result
    } catch (err) {
      await this.#record({ ...failure(err), delivered: result.delivered, status: lastStatus }).catch(() => {})
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
    const grace = this.#graceSignal(signal)
    let attempt = 0
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
        if (pending < this.#maxRecords && this.#lingerMs > 0 && attempt === 0) {
          await this.#sleep(this.#lingerMs, signal)
          if (signal.aborted) break
        }
        let batch: SpoolBatch | undefined
        try {
          batch = await this.#spool.readBatch({ maxRecords: this.#maxRecords, maxBytes: this.#maxBytes })
        } catch (err) {
          // `edgetoken upload` is delivering these records: look again after an idle period (not at
          // the next append, which would retry the lock per reading).
          if (!isEdgeTokenError(err, 'ERR_BUSY')) throw err
          await this.#sleep(idleMs, signal)
          continue
        }
        if (!batch) {
          await this.#idle(idleMs, signal)
          continue
        }
        let outcome: Outcome
        try {
          outcome = await this.#send(batch, grace.signal)
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
        const capMs = outcome.endpoint ? this.#endpointCapMs : this.#capMs
        const delayMs = Math.max(
          outcome.retryAfterMs ?? 0,
          backoffDelayMs(attempt, { baseMs: this.#baseMs, capMs, random: this.#random }),
        )
        const f = failure(outcome.error)
        if (lastResult !== f.result || lastStatus !== outcome.status) {
          lastResult = f.result
          lastStatus = outcome.status
          await this.#record({ ...f, status: outcome.status })
        }
        this.#onEvent({
          type: 'retry',
          batchId: this.#batchId(batch),
          attempt: attempt + 1,
          delayMs,
          reason: outcome.error.message,
          ...(outcome.status === undefined ? {} : { status: outcome.status }),
        })
        attempt++
        await this.#sleep(delayMs, signal)
      }
    } catch (err) {
      await this.#record({ ...failure(err) }).catch(() => {})
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
      await this.#sleep(ms, woken.signal)
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
      this.#onEvent({ type: 'delivered', batchId, seq: batch.seq, records: batch.count })
    } else {
      await this.#spool.deadLetter(batch, { status: outcome.status, message: outcome.reason })
      result.deadLettered += batch.count
      this.#onEvent({
        type: 'dead-letter',
        batchId,
        records: batch.count,
        status: outcome.status,
        reason: outcome.reason,
      })
    }
  }

  async #record(result: Omit<LastUpload, 'at'>): Promise<void> {
    const clean: Omit<LastUpload, 'at'> = { result: result.result }
    if (result.status !== undefined) clean.status = result.status
    if (result.delivered !== undefined) clean.delivered = result.delivered
    if (result.message !== undefined) clean.message = result.message
    await this.#spool.setLastUpload({
      ...clean,
      at: isoSeconds(this.#now()),
    })
  }

  /** Closes the connection pool (when the uploader created it). */
  async close(): Promise<void> {
    if (this.#ownsDispatcher && this.#dispatcher !== undefined) await this.#dispatcher.close()
  }
}

function isCancel(err: unknown, signal: AbortSignal): boolean {
  return signal.aborted && err instanceof EdgeTokenError && err.code === 'ERR_CANCELLED'
}

function failure(err: unknown): Omit<LastUpload, 'at'> {
  const message = err instanceof Error ? clean(err.message) : 'error'
  if (err instanceof EdgeTokenError) {
    if (err.code === 'ERR_SIGNIN_REQUIRED') return { result: 'signin_required', message }
    if (err instanceof InvalidResponseError) return { result: 'captive_portal', message }
    if (err.category === 'unavailable') return { result: 'unavailable', message }
  }
  return { result: 'error', message }
}

/** `400 invalid_request: seq must be ...` from an OAuth-style JSON error body, else the status. */
function describe(status: number, text: string): string {
  const body = parseJson(text)
  if (isObject(body) && typeof body.error === 'string') {
    const desc = typeof body.error_description === 'string' ? `: ${body.error_description}` : ''
    return clean(`${status} ${body.error}${desc}`)
  }
  return String(status)
}
