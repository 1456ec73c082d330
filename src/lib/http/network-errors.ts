/**
 * One-line messages for requests that got no answer: which service, which host, the error code,
 * and what to check. Shared by the protocol core's HTTP client and the telemetry uploader, so a
 * person reading `edgetoken: ...` learns the same thing from both.
 *
 * No undici import: the uploader imports this statically and loads undici only on its first request.
 *
 * @internal
 */

/** The service a request was for, as messages name it. */
export interface ServiceName {
  /** E.g. `the identity provider`, `the telemetry API`. */
  name: string
  /** The config key holding its URL, e.g. `authority`, `telemetry.endpoint`. */
  setting: string
}

/** Code of {@link ProxyTunnelError}. */
export const PROXY_TUNNEL_ERROR = 'EDGETOKEN_PROXY_TUNNEL'

/**
 * A request through an HTTP proxy failed before the tunnel to the target was open: the proxy
 * could not be reached, refused `CONNECT`, or dropped the connection.
 *
 * Its `code` is none of undici's, which matters: undici retries a connection that failed with
 * `UND_ERR_SOCKET` without limit (nodejs/undici#3897, a tight loop when a proxy closes the socket
 * on `CONNECT`), but fails the queued requests on any other code.
 */
export class ProxyTunnelError extends Error {
  /** {@link PROXY_TUNNEL_ERROR}. */
  readonly code = PROXY_TUNNEL_ERROR
  /** The proxy's `host:port` (never its credentials). */
  readonly proxy: string
  /** The `host:port` the tunnel was asked for. */
  readonly target: string
  /** The proxy's status answer to `CONNECT`, when it answered. */
  readonly status: number | undefined

  /**
   * @param proxy - the proxy's `host:port`.
   * @param target - the tunnel's `host:port`.
   * @param status - the proxy's answer to `CONNECT`, if any.
   * @param cause - the underlying error.
   */
  constructor(proxy: string, target: string, status: number | undefined, cause: unknown) {
    super(`proxy ${proxy}: tunnel to ${target} failed`, { cause })
    this.name = 'ProxyTunnelError'
    this.proxy = proxy
    this.target = target
    this.status = status
  }
}

/** What {@link describeNetworkFailure} concluded. */
export interface NetworkFailure {
  /** One line naming the service or the proxy, the host, the code and what to check. */
  message: string
  /** False when trying again cannot help (the proxy refused the target with a 4xx). */
  retryable: boolean
}

const CODE = /^[A-Z0-9_]{2,40}$/
/** Node's and OpenSSL's codes for a certificate or handshake refused (`CERT_HAS_EXPIRED`, ...). */
const TLS_CODE = /^(?:ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|HOSTNAME_MISMATCH)/
/**
 * undici's codes for a connection the server closed after it was open: before the answer, or in
 * the middle of its body (fewer bytes than its `content-length`).
 */
const CUT_CODES: ReadonlySet<string> = new Set(['UND_ERR_SOCKET', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'])

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && CODE.test(code) ? code : undefined
}

function proxyHint(target: URL): string {
  return `check ${target.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY'}/NO_PROXY`
}

/**
 * Describes a request that failed without an answer. Only the error code goes into the message,
 * never a body or a header (a proxy's error page, a token).
 *
 * @param err - what undici threw (possibly a {@link ProxyTunnelError}).
 * @param target - the URL requested.
 * @param service - the service, for the message.
 * @returns the message and whether a retry may help.
 */
export function describeNetworkFailure(err: unknown, target: URL, service: ServiceName): NetworkFailure {
  if (err instanceof ProxyTunnelError) {
    const { proxy, status } = err
    // The tunnel was open; the target's certificate was refused (the proxy is not to blame).
    const tls = tlsFailure(err.cause, target, service, ` through the proxy at ${proxy}`)
    if (tls) return tls
    if (status !== undefined) {
      return {
        message: `the proxy at ${proxy} refused CONNECT (${status}) to ${err.target} for ${service.name}: ${proxyHint(target)} and the proxy's rules`,
        // 4xx is the proxy's policy (403 forbidden, 407 credentials): the same answer next time.
        retryable: status >= 500,
      }
    }
    const code = errorCode(err.cause)
    if (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE') {
      return {
        message: `the proxy at ${proxy} closed the connection during CONNECT to ${err.target} (${code}): ${proxyHint(target)} and that the proxy supports CONNECT`,
        retryable: true,
      }
    }
    return {
      message: `the proxy at ${proxy} is unreachable${code ? ` (${code})` : ''} for ${service.name}: ${proxyHint(target)}`,
      retryable: true,
    }
  }
  const tls = tlsFailure(err, target, service, '')
  if (tls) return tls
  const code = errorCode(err)
  if (code !== undefined && CUT_CODES.has(code)) {
    return {
      // It was reached: "unreachable" would send the reader to DNS and routing for nothing.
      message: `${service.name} at ${target.host} closed the connection before answering in full (${code}): ${checkHint(service)}`,
      retryable: true,
    }
  }
  return {
    message: `${service.name} at ${target.host} is unreachable${code ? ` (${code})` : ''}: ${checkHint(service)}`,
    retryable: true,
  }
}

function tlsFailure(
  err: unknown,
  target: URL,
  service: ServiceName,
  via: string,
): NetworkFailure | undefined {
  const code = errorCode(err)
  if (code === undefined || !TLS_CODE.test(code)) return undefined
  return {
    message: `${service.name} at ${target.host}${via} presented a certificate that was refused (${code}): check \`${service.setting}\` in the config and the system clock; to trust a private CA, set NODE_EXTRA_CA_CERTS to its PEM file`,
    // A refused certificate stays refused for the next few seconds.
    retryable: false,
  }
}

/**
 * The message for a request that did not finish within its deadline.
 *
 * @param target - the URL requested.
 * @param service - the service, for the message.
 * @param timeoutMs - the deadline, ms.
 * @returns one line.
 */
export function timeoutMessage(target: URL, service: ServiceName, timeoutMs: number): string {
  const within = timeoutMs < 1000 ? `${timeoutMs} ms` : `${Math.round(timeoutMs / 100) / 10} s`
  return `${service.name} at ${target.host} did not answer within ${within}: ${checkHint(service)}`
}

function checkHint(service: ServiceName): string {
  return `check \`${service.setting}\` in the config, the network and DNS, and HTTPS_PROXY/NO_PROXY`
}
