/**
 * The error model of edgetoken: one base class with a stable string `code`, so callers can
 * `switch (err.code)`, and a few subclasses that carry what the failure is about.
 *
 * Anything that could hold a secret (a raw response body, a request) is stored non-enumerable, so
 * `console.log(err)` or `JSON.stringify(err)` never prints it.
 *
 * @packageDocumentation
 */

/**
 * Every stable error code edgetoken throws. New codes may be added in minor versions; existing
 * codes never change meaning.
 */
export type ErrorCode =
  /** A command line or library argument is wrong. */
  | 'ERR_USAGE'
  /** The configuration (file, environment or flags) is invalid; the message names the key. */
  | 'ERR_CONFIG'
  /** A URL is not allowed: plain http to a non-loopback host, or a scheme other than https. */
  | 'ERR_INSECURE_URL'
  /** The authorization server sent an OAuth error response that ends the operation. */
  | 'ERR_OAUTH'
  /** The user denied the authorization (`access_denied`, Entra ID's `authorization_declined`). */
  | 'ERR_ACCESS_DENIED'
  /** The device code expired (`expired_token`, or its lifetime ran out locally). */
  | 'ERR_EXPIRED'
  /** The operation was cancelled through its `AbortSignal` or by the user (Ctrl-C). */
  | 'ERR_CANCELLED'
  /** No usable refresh token: the user has to sign in again (e.g. `invalid_grant`). */
  | 'ERR_SIGNIN_REQUIRED'
  /**
   * The tenant does not allow the device code flow (Entra ID Conditional Access `AADSTS53003`,
   * security defaults `AADSTS530035`): another way in has to be configured.
   */
  | 'ERR_DEVICE_FLOW_BLOCKED'
  /** A server could not be reached or kept failing (network, timeout, 429/5xx after retries). */
  | 'ERR_UNAVAILABLE'
  /** Another process holds what this operation needs (the spool's upload lock): try again later. */
  | 'ERR_BUSY'
  /**
   * A shared token cache (Redis) cannot be reached or did not answer in time: tokens still valid
   * in this process's last copy are served, nothing is refreshed or saved (library only).
   */
  | 'ERR_CACHE_UNAVAILABLE'
  /** A server answered with something that is not a valid response (HTML, bad JSON, missing fields, too large). */
  | 'ERR_INVALID_RESPONSE'
  /** A JWT (id_token) failed verification. */
  | 'ERR_JWT_INVALID'
  /** The encrypted store cannot be read: tampered, truncated, plaintext, foreign, or the wrong key. */
  | 'ERR_STORE_UNREADABLE'
  /** Local input (an NDJSON record, an MQTT payload) was rejected. */
  | 'ERR_INVALID_INPUT'
  /** A local file operation failed (disk full, permission denied). */
  | 'ERR_IO'
  /** A bug or an unexpected state. */
  | 'ERR_INTERNAL'

/**
 * The error codes of the command-line contract's NDJSON `error` events.
 *
 * @see ../shared/CONTRACT.md "Conventions"
 */
export type ErrorCategory =
  | 'denied'
  | 'expired'
  | 'cancelled'
  | 'unavailable'
  | 'config'
  | 'store'
  | 'signin_required'
  | 'internal'

const CATEGORY: Readonly<Record<ErrorCode, ErrorCategory>> = {
  ERR_USAGE: 'config',
  ERR_CONFIG: 'config',
  ERR_INSECURE_URL: 'config',
  ERR_OAUTH: 'unavailable',
  ERR_ACCESS_DENIED: 'denied',
  ERR_EXPIRED: 'expired',
  ERR_CANCELLED: 'cancelled',
  ERR_SIGNIN_REQUIRED: 'signin_required',
  // `config` (exit 2), not `denied` (exit 4): nobody declined this sign-in, the tenant's policy
  // refuses the flow itself, so asking again cannot succeed; only another configured way in can.
  ERR_DEVICE_FLOW_BLOCKED: 'config',
  ERR_UNAVAILABLE: 'unavailable',
  ERR_BUSY: 'unavailable',
  ERR_CACHE_UNAVAILABLE: 'unavailable',
  ERR_INVALID_RESPONSE: 'unavailable',
  ERR_JWT_INVALID: 'unavailable',
  ERR_STORE_UNREADABLE: 'store',
  ERR_INVALID_INPUT: 'config',
  ERR_IO: 'internal',
  ERR_INTERNAL: 'internal',
}

/** Options common to every edgetoken error. */
export interface EdgeTokenErrorOptions {
  /** The underlying error or the rejected value; kept non-enumerable. */
  cause?: unknown
}

function hide(target: object, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: false, writable: false, configurable: true })
}

/**
 * Base class of every error edgetoken throws on purpose.
 *
 * @example
 * ```ts
 * try {
 *   await client.acquireTokenSilent()
 * } catch (err) {
 *   if (err instanceof EdgeTokenError && err.code === 'ERR_SIGNIN_REQUIRED') promptLogin()
 *   else throw err
 * }
 * ```
 */
export class EdgeTokenError extends Error {
  /** A stable code; see {@link ErrorCode}. */
  readonly code: ErrorCode

  /**
   * @param code - the stable code.
   * @param message - one line, naming what was wrong; never a secret.
   * @param options - the cause, kept non-enumerable.
   */
  constructor(code: ErrorCode, message: string, options?: EdgeTokenErrorOptions) {
    super(message)
    this.name = new.target.name
    this.code = code
    if (options && 'cause' in options) hide(this, 'cause', options.cause)
  }

  /** The NDJSON `error` event code of the command-line contract for this error. */
  get category(): ErrorCategory {
    return CATEGORY[this.code]
  }
}

/** Options of {@link OAuthServerError}. */
export interface OAuthServerErrorOptions extends EdgeTokenErrorOptions {
  /** The `error_description` the server sent, if any. */
  errorDescription?: string | undefined
  /** The `error_uri` the server sent, if any. */
  errorUri?: string | undefined
  /** The HTTP status of the response. */
  status: number
  /** The parsed response body; kept non-enumerable. */
  body?: unknown
  /** A message that says more than the server's text (what it means, what to do), if any. */
  message?: string | undefined
}

/**
 * The authorization server answered with an OAuth 2.0 error response (RFC 6749 §5.2).
 *
 * `code` is mapped from `error`: `access_denied` and `authorization_declined` become
 * `ERR_ACCESS_DENIED`, `expired_token` becomes `ERR_EXPIRED`, `invalid_grant` on a refresh becomes
 * `ERR_SIGNIN_REQUIRED`; anything else stays `ERR_OAUTH`.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.2
 */
export class OAuthServerError extends EdgeTokenError {
  /** The `error` parameter the server sent. */
  readonly error: string
  /** The `error_description` parameter, if sent. */
  readonly errorDescription: string | undefined
  /** The `error_uri` parameter, if sent. */
  readonly errorUri: string | undefined
  /** The HTTP status code of the response. */
  readonly status: number
  /** The parsed body (non-enumerable). */
  declare readonly body: unknown

  /**
   * @param code - the stable code this error maps to.
   * @param error - the `error` parameter.
   * @param options - description, status, body.
   */
  constructor(code: ErrorCode, error: string, options: OAuthServerErrorOptions) {
    super(code, options.message ?? oauthMessage(error, options.errorDescription, options.status), options)
    this.error = error
    this.errorDescription = options.errorDescription
    this.errorUri = options.errorUri
    this.status = options.status
    hide(this, 'body', options.body)
  }
}

function oauthMessage(error: string, description: string | undefined, status: number): string {
  // Server text is untrusted: keep it to one printable line of bounded length.
  const clean = (s: string) => s.replace(/[^\x20-\x7e]+/g, ' ').slice(0, 200)
  const desc = description ? `: ${clean(description)}` : ''
  return `authorization server answered ${status} ${clean(error)}${desc}`
}

/**
 * A server answered with something that is not a valid response of its kind: an HTML page where
 * JSON was expected, a missing or wrongly typed field, an oversized body.
 */
export class InvalidResponseError extends EdgeTokenError {
  /** The HTTP status of the response, when there was one. */
  readonly status: number | undefined
  /** The rejected body or value (non-enumerable). */
  declare readonly body: unknown

  /**
   * @param message - what was wrong, naming the field.
   * @param options - the status and the rejected body.
   */
  constructor(message: string, options?: EdgeTokenErrorOptions & { status?: number; body?: unknown }) {
    super('ERR_INVALID_RESPONSE', message, options)
    this.status = options?.status
    hide(this, 'body', options?.body)
  }
}

/** A server could not be reached, timed out, or kept answering 429/5xx. */
export class UnavailableError extends EdgeTokenError {
  /** The HTTP status, when a response was received. */
  readonly status: number | undefined
  /** Seconds the server asked us to wait (`Retry-After`), when it said. */
  readonly retryAfterSeconds: number | undefined

  /**
   * @param message - what failed, naming the host.
   * @param options - status, Retry-After and cause.
   */
  constructor(
    message: string,
    options?: EdgeTokenErrorOptions & { status?: number; retryAfterSeconds?: number | undefined },
  ) {
    super('ERR_UNAVAILABLE', message, options)
    this.status = options?.status
    this.retryAfterSeconds = options?.retryAfterSeconds
  }
}

/** The configuration is invalid; the message names the key and what is wrong. */
export class ConfigError extends EdgeTokenError {
  /** The configuration key at fault (dotted path), when one is. */
  readonly key: string | undefined

  /**
   * @param message - one line naming the key and the problem.
   * @param options - the key and cause.
   */
  constructor(message: string, options?: EdgeTokenErrorOptions & { key?: string; code?: ErrorCode }) {
    super(options?.code ?? 'ERR_CONFIG', message, options)
    this.key = options?.key
  }
}

/** The encrypted store cannot be read or written safely. Never reset silently. */
export class StoreError extends EdgeTokenError {
  /**
   * @param message - one line: what is wrong with which file (never its content).
   * @param options - the cause; `code` defaults to `ERR_STORE_UNREADABLE`.
   */
  constructor(message: string, options?: EdgeTokenErrorOptions & { code?: ErrorCode }) {
    super(options?.code ?? 'ERR_STORE_UNREADABLE', message, options)
  }
}

/**
 * Whether a value is an {@link EdgeTokenError}, optionally of one code.
 *
 * @param value - anything caught.
 * @param code - the code to match.
 * @returns true when it is.
 */
export function isEdgeTokenError(value: unknown, code?: ErrorCode): value is EdgeTokenError {
  return value instanceof EdgeTokenError && (code === undefined || value.code === code)
}
