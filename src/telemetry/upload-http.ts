/**
 * The uploader's HTTP transport: one keep-alive connection to the API's origin (or the proxy agent
 * when `HTTPS_PROXY`/`HTTP_PROXY` is set), created on the first request, and the POST of one body
 * with the answer read only as far as an error reason needs.
 *
 * Separate from the uploader so that undici is loaded in one place, by a dynamic import on the
 * first request: nothing the uploader imports statically may import a value from undici
 * (`import type` only), or every idle daemon would pay for it.
 *
 * @internal
 */
import type { Dispatcher } from 'undici'
import { EdgeTokenError, UnavailableError } from '../errors.js'
import type { HttpAnswer, Outcome } from './upload-outcome.js'

/** Bytes of an answer's body read for the error reason; the rest is drained unread. */
const MAX_ERROR_BODY_BYTES = 16 * 1024

function hasProxyEnv(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.HTTPS_PROXY || env.https_proxy || env.HTTP_PROXY || env.http_proxy)
}

/** The result of {@link UploadConnection.post}: an answer to classify, or already an outcome. */
export type PostResult = ({ kind: 'answer' } & HttpAnswer) | { kind: 'outcome'; outcome: Outcome }

/** The connection of an uploader to its endpoint. `close()` it at the end. */
export class UploadConnection {
  /** The endpoint. */
  readonly url: URL
  readonly #timeoutMs: number
  #dispatcher: Dispatcher | undefined
  readonly #ownsDispatcher: boolean

  /**
   * @param url - the endpoint (already checked to be secure).
   * @param timeoutMs - longest wait for the answer's headers, and between body chunks, ms.
   * @param dispatcher - the caller's dispatcher (not closed here), or undefined to create one on
   *   the first request.
   */
  constructor(url: URL, timeoutMs: number, dispatcher: Dispatcher | undefined) {
    this.url = url
    this.#timeoutMs = timeoutMs
    this.#ownsDispatcher = dispatcher === undefined
    this.#dispatcher = dispatcher
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
        : new Pool(this.url.origin, {
            connections: 1,
            keepAliveTimeout: 60_000,
            headersTimeout: this.#timeoutMs,
            bodyTimeout: this.#timeoutMs,
          })
    }
    return this.#dispatcher
  }

  /**
   * POSTs a body to the endpoint and reads the answer.
   *
   * @param body - the request body.
   * @param headers - the request headers.
   * @param signal - aborts the request (the caller includes the shutdown grace).
   * @returns the answer with at most 16 KiB of its body, or a retry outcome when the API could not
   *   be reached (network error, timeout).
   * @throws EdgeTokenError `ERR_CANCELLED` when `signal` fired.
   */
  async post(
    body: string,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<PostResult> {
    // The pool's headers/body timeouts bound a request; the stop signal only when there is one.
    try {
      const dispatcher = await this.#getDispatcher()
      const res = await dispatcher.request({
        origin: this.url.origin,
        path: `${this.url.pathname}${this.url.search}`,
        method: 'POST',
        headers,
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
          error: new UnavailableError(`telemetry API ${this.url.host} unreachable: ${why}`, { cause: err }),
        },
      }
    }
  }

  /** Closes the connection pool (when this connection created it). */
  async close(): Promise<void> {
    if (this.#ownsDispatcher && this.#dispatcher !== undefined) await this.#dispatcher.close()
  }
}
