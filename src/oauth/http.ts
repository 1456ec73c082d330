/**
 * The one HTTP client of the protocol core: undici `request` with an overall deadline per request
 * (connect, headers and the whole body), no redirects followed, a streamed response size cap and
 * a JSON content-type check. Loopback hosts are always reached directly; other hosts through
 * `HTTPS_PROXY`/`HTTP_PROXY` unless `NO_PROXY` names them (see `lib/http/http-agent.ts`).
 *
 * Never the global `fetch`: it is a second copy of undici that ignores our dispatcher.
 *
 * @packageDocumentation
 */
import type { Dispatcher } from 'undici'
import { EdgeTokenError, InvalidResponseError, UnavailableError } from '../errors.js'
import type { NetworkAgents } from '../lib/http/http-agent.js'
import { describeNetworkFailure, type ServiceName, timeoutMessage } from '../lib/http/network-errors.js'
import { RequestDeadline } from '../lib/http/request-deadline.js'
import { parseJson } from '../lib/validate.js'
import { VERSION } from '../version.js'

/** Default overall deadline of one request (connect, headers and the whole body), ms. */
export const DEFAULT_TIMEOUT_MS = 10_000
/** Default response size cap, bytes (1 MiB: far more than any OAuth response). */
export const DEFAULT_MAX_BYTES = 1024 * 1024
/** The service named in messages when the caller names none. */
export const IDENTITY_PROVIDER: ServiceName = { name: 'the identity provider', setting: 'authority' }

let injected: Dispatcher | undefined
let agents: NetworkAgents | undefined
// undici (70-90 ms and ~10 MiB to load on Node 20) is loaded by the first request, not by
// `import 'edgetoken'`: a library user who only reads the store, or a CLI answer from the cache,
// never pays for it. Kept once loaded, so later requests do not go through `import()` again.
let undici: Pick<typeof import('undici'), 'request'> | undefined
let agentModule: Pick<typeof import('../lib/http/http-agent.js'), 'createNetworkAgents'> | undefined

/**
 * Replaces the dispatcher every request goes through, or (with `undefined`) drops it so the next
 * request creates fresh dispatchers from the current environment.
 *
 * Meant for tests (an undici `MockAgent`) and for embedders that bring their own agent, which then
 * carries every request (loopback ones too); a dispatcher passed here is never closed.
 *
 * @param value - the dispatcher to use, or undefined for the default.
 */
export function setHttpDispatcher(value: Dispatcher | undefined): void {
  injected = value
  retireAgents('close')
}

function retireAgents(how: 'close' | 'destroy', which: NetworkAgents | undefined = agents): void {
  if (which === undefined || which !== agents) return
  agents = undefined
  void (how === 'close' ? which.close() : which.destroy()).catch(() => {})
}

async function getDispatcher(url: URL): Promise<Dispatcher> {
  if (injected) return injected
  agentModule ??= await import('../lib/http/http-agent.js')
  if (injected) return injected
  // Created on first use, so the proxy variables are read once and the cached `token` path never
  // pays for it.
  agents ??= agentModule.createNetworkAgents()
  return agents.forUrl(url)
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
  /** The service, for messages. Default {@link IDENTITY_PROVIDER}. */
  service?: ServiceName | undefined
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
 * reset, DNS, timeout, a proxy that refused the tunnel), which RFC 8628 §3.5 asks device clients
 * to answer by backing off.
 */
export class NetworkError extends UnavailableError {
  /** Whether the request timed out (rather than failed to connect or was reset). */
  readonly timedOut: boolean
  /**
   * False when another try cannot help (a proxy refused the target with a 4xx); `withRetries`
   * then gives up at once.
   */
  readonly retryable: boolean

  /**
   * @param message - one line naming the host (or the proxy) and what to check.
   * @param timedOut - whether it was a timeout.
   * @param cause - the underlying error (non-enumerable).
   * @param retryable - whether another try may help. Default true.
   */
  constructor(message: string, timedOut: boolean, cause?: unknown, retryable = true) {
    super(message, { cause })
    this.timedOut = timedOut
    this.retryable = retryable
  }
}

function cancelled(cause?: unknown): EdgeTokenError {
  return new EdgeTokenError('ERR_CANCELLED', 'the operation was cancelled', { cause })
}

/**
 * Sends one HTTP request and reads the whole response, enforcing the house rules.
 *
 * The deadline covers everything (connect, headers and the whole body) and holds whatever undici
 * does: a server dribbling its body, or a proxy that undici keeps reconnecting to, ends at
 * `timeoutMs`. `signal` ends it at once.
 *
 * @param url - the URL (already checked to be https or loopback http by the caller).
 * @param options - method, headers, body, timeout, size cap, signal.
 * @returns the status, headers and body text.
 * @throws {@link NetworkError} (`ERR_UNAVAILABLE`) when the host or the proxy cannot be reached,
 *   the proxy refuses the tunnel, or the deadline passes; {@link InvalidResponseError} on a
 *   redirect (3xx: never followed) or a body over the cap; `ERR_CANCELLED` when `signal` aborts;
 *   `ERR_CONFIG` when a proxy variable is not a URL.
 */
export async function httpRequest(
  url: URL | string,
  options: HttpRequestOptions = {},
): Promise<HttpResponse> {
  const target = typeof url === 'string' ? new URL(url) : url
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const service = options.service ?? IDENTITY_PROVIDER
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

  const dispatcher = await getDispatcher(target)
  const owned = agents
  undici ??= await import('undici')
  const deadline = new RequestDeadline(timeoutMs, options.signal)
  try {
    const exchange = send(undici.request, target, dispatcher, {
      method: options.method ?? (body === undefined ? 'GET' : 'POST'),
      headers,
      body,
      signal: deadline.signal,
      maxBytes: options.maxBytes ?? DEFAULT_MAX_BYTES,
    })
    // undici did not hear the abort (a request stuck behind a reconnect loop): drop its
    // connections rather than let them spin on after we gave up.
    return await deadline.race(exchange, () => retireAgents('destroy', owned))
  } catch (err) {
    if (err instanceof InvalidResponseError) throw err
    if (deadline.reason === 'cancelled') throw cancelled(err)
    if (deadline.reason === 'timeout') {
      throw new NetworkError(timeoutMessage(target, service, timeoutMs), true, err)
    }
    const failure = describeNetworkFailure(err, target, service)
    throw new NetworkError(failure.message, false, err, failure.retryable)
  } finally {
    deadline.dispose()
  }
}

interface SendOptions {
  method: 'GET' | 'POST'
  headers: Record<string, string>
  body: string | undefined
  signal: AbortSignal
  maxBytes: number
}

async function send(
  request: typeof import('undici')['request'],
  target: URL,
  dispatcher: Dispatcher,
  options: SendOptions,
): Promise<HttpResponse> {
  const host = target.host
  const { maxBytes } = options
  const response = await request(target, {
    method: options.method,
    headers: options.headers,
    body: options.body,
    dispatcher,
    signal: options.signal,
  })
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
  return { url: target, status, headers: response.headers, body: Buffer.concat(chunks).toString('utf8') }
}

function tooLarge(host: string, maxBytes: number, status: number): InvalidResponseError {
  return new InvalidResponseError(`${host} sent a response larger than ${maxBytes} bytes`, { status })
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
