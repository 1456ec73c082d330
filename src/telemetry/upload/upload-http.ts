/**
 * The uploader's HTTP transport: one keep-alive connection to the API's origin (through
 * `HTTPS_PROXY`/`HTTP_PROXY` when set, unless `NO_PROXY` or a loopback host says otherwise),
 * created on the first request, and the POST of one body within an overall deadline, with the
 * answer read only as far as an error reason needs and drained up to a cap.
 *
 * Separate from the uploader so that undici is loaded in one place, by a dynamic import on the
 * first request: nothing the uploader imports statically may import a value from undici
 * (`import type` only), or every idle daemon would pay for it.
 *
 * @internal
 */
import type { Dispatcher } from 'undici'
import { EdgeTokenError, UnavailableError } from '../../errors.js'
import type { NetworkAgents } from '../../lib/http/http-agent.js'
import { describeNetworkFailure, type ServiceName, timeoutMessage } from '../../lib/http/network-errors.js'
import { RequestDeadline } from '../../lib/http/request-deadline.js'
import type { HttpAnswer, Outcome } from './upload-outcome.js'

/** Bytes of an answer's body kept for the error reason. */
const MAX_ERROR_BODY_BYTES = 16 * 1024

const TELEMETRY_API: ServiceName = { name: 'the telemetry API', setting: 'telemetry.endpoint' }

/** The result of {@link UploadConnection.post}: an answer to classify, or already an outcome. */
export type PostResult = ({ kind: 'answer' } & HttpAnswer) | { kind: 'outcome'; outcome: Outcome }

/** Limits of one POST. */
export interface UploadLimits {
  /** Overall deadline of one POST (connect, send, headers and the whole answer), ms. */
  timeoutMs: number
  /** Bytes of an answer read at most; past them the connection is dropped. */
  maxResponseBytes: number
}

/** The connection of an uploader to its endpoint. `close()` it at the end. */
export class UploadConnection {
  /** The endpoint. */
  readonly url: URL
  readonly #limits: UploadLimits
  readonly #injected: Dispatcher | undefined
  #agents: NetworkAgents | undefined

  /**
   * @param url - the endpoint (already checked to be secure).
   * @param limits - the deadline and the answer cap.
   * @param dispatcher - the caller's dispatcher (not closed here), or undefined to create one on
   *   the first request.
   */
  constructor(url: URL, limits: UploadLimits, dispatcher: Dispatcher | undefined) {
    this.url = url
    this.#limits = limits
    this.#injected = dispatcher
  }

  /**
   * The connection pool, created (and undici imported) on the first request: an idle daemon whose
   * spool is empty never loads undici (~5-7 MiB of RSS on a Pi, measured with bench-daemon).
   */
  async #getDispatcher(): Promise<Dispatcher> {
    if (this.#injected !== undefined) return this.#injected
    if (this.#agents === undefined) {
      const { createNetworkAgents } = await import('../../lib/http/http-agent.js')
      // undici's idle timeouts stay as a second line; the overall deadline is ours (RequestDeadline).
      this.#agents ??= createNetworkAgents({
        connections: 1,
        keepAliveTimeout: 60_000,
        headersTimeout: this.#limits.timeoutMs,
        bodyTimeout: this.#limits.timeoutMs,
      })
    }
    return this.#agents.forUrl(this.url)
  }

  /** Drops the pool after undici did not hear an abort; the next request creates a new one. */
  #retire(agents: NetworkAgents | undefined): void {
    if (agents === undefined || agents !== this.#agents) return
    this.#agents = undefined
    void agents.destroy().catch(() => {})
  }

  /**
   * POSTs a body to the endpoint and reads the answer, all within the deadline.
   *
   * @param body - the request body.
   * @param headers - the request headers.
   * @param signal - aborts the request (the caller includes the shutdown grace).
   * @returns the answer with at most 16 KiB of its body, or a retry outcome when the API could not
   *   be reached or did not finish its answer within the deadline. An answer larger than
   *   `maxResponseBytes` is cut there (its connection dropped) and classified by its status.
   * @throws EdgeTokenError `ERR_CANCELLED` when `signal` fired; `ERR_CONFIG` when a proxy
   *   variable is not a URL.
   */
  async post(
    body: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<PostResult> {
    if (signal?.aborted) throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped')
    const dispatcher = await this.#getDispatcher()
    const agents = this.#agents
    const deadline = new RequestDeadline(this.#limits.timeoutMs, signal)
    try {
      const answer = await deadline.race(this.#exchange(dispatcher, body, headers, deadline.signal), () =>
        this.#retire(agents),
      )
      return { kind: 'answer', ...answer }
    } catch (err) {
      if (deadline.reason === 'cancelled') {
        throw new EdgeTokenError('ERR_CANCELLED', 'upload stopped', { cause: err })
      }
      const message =
        deadline.reason === 'timeout'
          ? timeoutMessage(this.url, TELEMETRY_API, this.#limits.timeoutMs)
          : describeNetworkFailure(err, this.url, TELEMETRY_API).message
      return {
        kind: 'outcome',
        outcome: { kind: 'retry', error: new UnavailableError(message, { cause: err }) },
      }
    } finally {
      deadline.dispose()
    }
  }

  async #exchange(
    dispatcher: Dispatcher,
    body: string,
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<HttpAnswer> {
    const res = await dispatcher.request({
      origin: this.url.origin,
      path: `${this.url.pathname}${this.url.search}`,
      method: 'POST',
      headers,
      body,
      signal,
    })
    // The first 16 KiB are kept for the error reason; the rest is drained (so the connection can
    // be reused) up to the cap, past which the connection is dropped instead.
    const kept: Buffer[] = []
    let keptBytes = 0
    let bytes = 0
    for await (const chunk of res.body) {
      const buf = chunk as Buffer
      bytes += buf.length
      if (keptBytes < MAX_ERROR_BODY_BYTES) {
        const part = buf.subarray(0, MAX_ERROR_BODY_BYTES - keptBytes)
        kept.push(part)
        keptBytes += part.length
      }
      if (bytes > this.#limits.maxResponseBytes) {
        res.body.destroy()
        break
      }
    }
    return { status: res.statusCode, headers: res.headers, text: Buffer.concat(kept).toString('utf8') }
  }

  /** Closes the connection pool (when this connection created it). */
  async close(): Promise<void> {
    const agents = this.#agents
    this.#agents = undefined
    await agents?.close()
  }
}
