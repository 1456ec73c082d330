/**
 * URL policy: https everywhere, plain http only to loopback hosts.
 *
 * @internal
 */
import { EdgeTokenError } from '../errors.js'

/**
 * Whether a hostname (as `URL.hostname` gives it) is a loopback address.
 *
 * @param hostname - the host, e.g. `127.0.0.1`, `[::1]`, `localhost`.
 * @returns true for 127.0.0.0/8, ::1 and localhost.
 */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase()
  return h === 'localhost' || h === '[::1]' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h)
}

/**
 * Whether a URL string is https, or http to a loopback host.
 *
 * @param value - the URL text.
 * @returns the parsed URL when allowed, else undefined.
 */
export function secureUrl(value: string): URL | undefined {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return undefined
  }
  if (url.protocol === 'https:') return url
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return url
  return undefined
}

/**
 * Parses a URL and requires https, or http to a loopback host.
 *
 * @param value - the URL text.
 * @param what - what the URL is, for the message (e.g. `authority`).
 * @returns the parsed URL.
 * @throws EdgeTokenError `ERR_INSECURE_URL` naming `what`.
 */
export function assertSecureUrl(value: string, what: string): URL {
  const url = secureUrl(value)
  if (!url) {
    throw new EdgeTokenError(
      'ERR_INSECURE_URL',
      `${what} must be an https:// URL (http:// only for loopback hosts)`,
    )
  }
  return url
}
