/**
 * The one HTTP client of the protocol core: undici `request` through one lazily created
 * `EnvHttpProxyAgent` (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), a per-request timeout, no redirects
 * followed, a streamed response size cap and a JSON content-type check.
 *
 * Never the global `fetch`: it is a second copy of undici that ignores our dispatcher.
 *
 * @packageDocumentation
 */
import { type Dispatcher, EnvHttpProxyAgent, request } from 'undici'
import { EdgeTokenError, InvalidResponseError, UnavailableError } from '../errors.js'
import { parseJson } from '../lib/validate.js'
import { VERSION } from '../version.js'

/** Default per-request timeout, ms. */
export const DEFAULT_TIMEOUT_MS = 10_000
/** Default response size cap, bytes (1 MiB: far more than any OAuth response). */
export const DEFAULT_MAX_BYTES = 1024 * 1024

let dispatcher: Dispatcher | undefined

/**
 * Replaces the dispatcher every request goes through, or (with `undefined`) drops it so the next
 * request creates a fresh `EnvHttpProxyAgent` from the current environment.
 *
 * Meant for tests (an undici `MockAgent`) and for embedders that bring their own agent; the
 * previous dispatcher is not closed.
 *
 * @param value - the dispatcher to use, or undefined for the default.
 */
export function setHttpDispatcher(value: Dispatcher | undefined): void {
  dispatcher = value
}

function getDispatcher(): Dispatcher {
  // Created on first use, so HTTPS_PROXY/NO_PROXY are read once and the cached `token` path
  // never pays for it.
  dispatcher ??= new EnvHttpProxyAgent()
  return dispatcher
}

/** Options of {@link httpRequest}. */
export interface HttpRequestOptions {
  /** HTTP method. Default `GET`, or `POST` when a body is given. */
  method?: 'GET' | 'POST'
  /** Extra request headers (lower-case names). */
  headers?: Record<string, string>
  /** The body; URLSearchParams are sent as `application/x-www-form-urlencoded`. */
  body?: string | URLSearchParams
  /** Whole-request timeout (connect, headers and body), ms. Default {@link DEFAULT_TIMEOUT_MS}. */
  timeoutMs?: number
  /** Largest response body accepted, bytes. Default {@link DEFAULT_MAX_BYTES}. */
  maxBytes?: number
  /** Cancels the request; the promise then rejects with `ERR_CANCELLED`. */
  signal?: AbortSignal | undefined
}

/** A response read in full (within the size cap). */
export interface HttpResponse {
  /** The URL requested. */
  url: URL
  /** The HTTP status code. */
  status: number
  /** Response headers, lower-case names. */
  headers: Record<string, string | string[] | undefined>
  /** The body as UTF-8 text. */
  body: string
}

/**
 * Marks an {@link UnavailableError} that happened before any response arrived (connection refused,
 * reset, DNS, timeout), which RFC 8628 §3.5 asks device clients to answer by backing off.
 */
export class NetworkError extends UnavailableError {
  /** Whether the request timed out (rather than failed to connect or was reset). */
  readonly timedOut: boolean

  /**
   * @param message - one line naming the host.
   * @param timedOut - whether it was a timeout.
   * @param cause - the underlying error (non-enumerable).
   */
  constructor(message: string, timedOut: boolean, cause?: unknown) {
    super(message, { cause })
    this.timedOut = timedOut
  }
}

function cancelled(): EdgeTokenError {
  return new EdgeTokenError('ERR_CANCELLED', 'the operation was cancelled')
}

/**
 * Sends one HTTP request and reads the whole response, enforcing the house rules.
 *
 * @param url - the URL (already checked to be https or loopback http by the caller).
 * @param options - method, headers, body, timeout, size cap, signal.
 * @returns the status, headers and body text.
 * @throws {@link NetworkError} (`ERR_UNAVAILABLE`) when the host cannot be reached or times out;
 *   {@link InvalidResponseError} on a redirect (3xx: never followed) or a body over the cap;
 *   `ERR_CANCELLED` when `signal` aborts.
 */
export async function httpRequest(
  url: URL | string,
  options: HttpRequestOptions = {},
): Promise<HttpResponse> {
  const target = typeof url === 'string' ? new URL(url) : url
  const host = target.host
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES
  if (options.signal?.aborted) throw cancelled()

  const headers: Record<string, string> = {
    'user-agent': `edgetoken/${VERSION}`,
    accept: 'application/json',
    ...options.headers,
  }
  let body: string | undefined
  if (options.body instanceof URLSearchParams) {
    body = options.body.toString()
    headers['content-type'] ??= 'application/x-www-form-urlencoded'
  } else {
    body = options.body
  }

  const controller = new AbortController()
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    controller.abort()
  }, timeoutMs)
  const onAbort = () => controller.abort()
  options.signal?.addEventListener('abort', onAbort, { once: true })

  try {
    let response: Dispatcher.ResponseData
    try {
      response = await request(target, {
        method: options.method ?? (body === undefined ? 'GET' : 'POST'),
        headers,
        body,
        dispatcher: getDispatcher(),
        signal: controller.signal,
      })
    } catch (err) {
      throw failure(err, host, timedOut, options.signal)
    }

    const { statusCode: status } = response
    if (status >= 300 && status < 400) {
      response.body.destroy()
      throw new InvalidResponseError(
        `${host} answered with a redirect (${status}); redirects are not followed`,
        {
          status,
        },
      )
    }
    const declared = Number(response.headers['content-length'])
    if (Number.isFinite(declared) && declared > maxBytes) {
      response.body.destroy()
      throw tooLarge(host, maxBytes, status)
    }

    const chunks: Buffer[] = []
    let size = 0
    try {
      for await (const chunk of response.body) {
        const buf = chunk as Buffer
        size += buf.length
        if (size > maxBytes) {
          // Stop reading at the cap: a hostile or broken server must not make us buffer it all.
          response.body.destroy()
          throw tooLarge(host, maxBytes, status)
        }
        chunks.push(buf)
      }
    } catch (err) {
      if (err instanceof InvalidResponseError) throw err
      throw failure(err, host, timedOut, options.signal)
    }
    return { url: target, status, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }
  } finally {
    clearTimeout(timer)
    options.signal?.removeEventListener('abort', onAbort)
  }
}

function tooLarge(host: string, maxBytes: number, status: number): InvalidResponseError {
  return new InvalidResponseError(`${host} sent a response larger than ${maxBytes} bytes`, { status })
}

function failure(
  err: unknown,
  host: string,
  timedOut: boolean,
  signal: AbortSignal | undefined,
): EdgeTokenError {
  if (signal?.aborted) return cancelled()
  if (timedOut) return new NetworkError(`${host} did not answer in time`, true, err)
  // Only the error code goes into the message: never a body or a header.
  const code = (err as { code?: unknown } | null)?.code
  const detail = typeof code === 'string' && /^[A-Z0-9_]{2,40}$/.test(code) ? ` (${code})` : ''
  return new NetworkError(`cannot reach ${host}${detail}`, false, err)
}

function header(response: HttpResponse, name: string): string | undefined {
  const value = response.headers[name]
  return Array.isArray(value) ? value[0] : value
}

/**
 * Parses a response body as JSON after checking it is JSON: an HTML page (a captive portal's
 * login page, a proxy's error page) is reported as such instead of as a parse error.
 *
 * @param response - the response from {@link httpRequest}.
 * @param what - what the response is, for messages (e.g. `token response`).
 * @returns the parsed body, still `unknown`.
 * @throws {@link InvalidResponseError} for HTML, another content type, or invalid JSON.
 */
export function readJson(response: HttpResponse, what: string): unknown {
  const host = response.url.host
  const type = (header(response, 'content-type') ?? '').toLowerCase()
  const mediaType = type.split(';')[0]?.trim() ?? ''
  if (mediaType === 'text/html' || mediaType === 'application/xhtml+xml' || /^\s*</.test(response.body)) {
    throw new InvalidResponseError(
      `${what}: ${host} answered with an HTML page, not JSON (captive portal?)`,
      {
        status: response.status,
        body: response.body,
      },
    )
  }
  if (mediaType !== 'application/json' && !mediaType.endsWith('+json')) {
    throw new InvalidResponseError(
      `${what}: ${host} answered with content-type "${mediaType.replace(/[^\x20-\x7e]/g, '').slice(0, 60)}", not JSON`,
      { status: response.status, body: response.body },
    )
  }
  const value = parseJson(response.body)
  if (value === undefined) {
    throw new InvalidResponseError(`${what}: ${host} answered with invalid JSON`, {
      status: response.status,
      body: response.body,
    })
  }
  return value
}

/**
 * Reads a header of a response (first value when repeated).
 *
 * @param response - the response.
 * @param name - lower-case header name.
 * @returns the value, if present.
 */
export function responseHeader(response: HttpResponse, name: string): string | undefined {
  return header(response, name)
}
