/**
 * The OAuth 2.0 Device Authorization Grant (RFC 8628): the device authorization request and its
 * validation (§3.1-3.2), and the polling state machine (§3.4-3.5).
 *
 * @see https://www.rfc-editor.org/rfc/rfc8628
 * @packageDocumentation
 */
import { EdgeTokenError, InvalidResponseError, OAuthServerError, UnavailableError } from '../../errors.js'
import { secureUrl } from '../../lib/url.js'
import { isNonEmptyString, isObject, isPrintable, type JsonObject } from '../../lib/validate.js'
import type { AuthorizationServer } from '../authority.js'
import { applyClientAuth } from '../client-auth.js'
import type { DPoPHandle } from '../dpop.js'
import { type HttpResponse, httpRequest, NetworkError, readJson } from '../http.js'
import { type SleepFunction, sleepOrCancel as sleepOrCancelRetry, withRetries } from '../retry.js'
import { sendTokenRequest } from '../token-request.js'
import { errorFromResponse, numericParameter, processTokenResponse } from '../tokens.js'
import type { OAuthClient, TokenSet } from '../types.js'

/** RFC 8628 §3.4 grant type. */
export const DEVICE_CODE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:device_code'
/** RFC 8628 §3.2: the polling interval when the server sends none, seconds. */
export const DEFAULT_INTERVAL_SECONDS = 5
/** RFC 8628 §3.5: what `slow_down` adds to the interval, seconds. */
export const SLOW_DOWN_SECONDS = 5
/** Largest `interval` accepted, seconds; more is a broken server, not a policy. */
export const MAX_INTERVAL_SECONDS = 3600
/** Largest `expires_in` accepted for a device code, seconds (a day). */
export const MAX_DEVICE_CODE_LIFETIME_SECONDS = 86400
/** Largest user code accepted, characters (it is typed by a human). */
export const MAX_USER_CODE_LENGTH = 64
/** Largest `message` accepted, characters. */
export const MAX_MESSAGE_LENGTH = 1024
/** Largest verification URI accepted, characters. */
export const MAX_URI_LENGTH = 2048
/** Longest wait between polls after back-off on network failures, seconds. */
export const MAX_BACKOFF_INTERVAL_SECONDS = 300

/**
 * A validated device authorization response (RFC 8628 §3.2), with the lifetime made absolute.
 * The `device_code` is held privately: not a property, never serialised or logged.
 */
export interface DeviceAuthorization {
  /** The code the user enters (printable, at most {@link MAX_USER_CODE_LENGTH} characters). */
  readonly userCode: string
  /** Where the user enters it (https, or http on loopback). */
  readonly verificationUri: string
  /** A URI that includes the user code (for a QR code), when the server sent one. */
  readonly verificationUriComplete?: string | undefined
  /** When the device code expires, epoch ms. */
  readonly expiresAt: number
  /** The minimum polling interval, seconds (§3.2 default 5). */
  readonly intervalSeconds: number
  /** The server's human-readable instruction (Entra ID sends one), when sent. */
  readonly message?: string | undefined
  /** The scopes requested. */
  readonly scopes: readonly string[]
}

const deviceCodes = new WeakMap<DeviceAuthorization, string>()

/** Options of {@link startDeviceAuthorization}. */
export interface StartDeviceAuthorizationOptions {
  /** Cancels the request. */
  signal?: AbortSignal | undefined
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /**
   * Waits between attempts while the server is unavailable (network, 429/5xx; up to 3 attempts,
   * `Retry-After` honoured up to 30 s); inject for tests. Default: a timer.
   */
  sleep?: SleepFunction | undefined
}

/**
 * Sends the device authorization request (RFC 8628 §3.1) and validates the response (§3.2).
 * Scopes are sent as given (see `signInScopes` to add `openid` and `offline_access`).
 *
 * @param server - the authorization server; must have a device authorization endpoint.
 * @param client - the client.
 * @param scopes - the scopes to request.
 * @param options - signal, clock, timeout, sleep.
 * @returns the validated device authorization.
 * @throws `ERR_CONFIG` when the server has no device endpoint or rejects the client's
 *   configuration (`invalid_client`, `invalid_scope`, ...); `ERR_DEVICE_FLOW_BLOCKED` when an Entra
 *   ID tenant blocks the flow (AADSTS53003, 530035); {@link OAuthServerError} for another
 *   error response; {@link InvalidResponseError} for an invalid one; `ERR_UNAVAILABLE` after the
 *   retries.
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.1
 */
export async function startDeviceAuthorization(
  server: AuthorizationServer,
  client: OAuthClient,
  scopes: readonly string[],
  options: StartDeviceAuthorizationOptions = {},
): Promise<DeviceAuthorization> {
  const endpoint = server.deviceAuthorizationEndpoint
  if (!endpoint) {
    throw new EdgeTokenError('ERR_CONFIG', `${server.issuer} does not offer the device authorization grant`)
  }
  // No device code exists until a response is accepted, so a failed request is safe to repeat.
  return withRetries(
    async () => {
      const body = new URLSearchParams()
      const headers: Record<string, string> = {}
      await applyClientAuth(client, server.tokenEndpoint, body, headers, { now: options.now })
      if (scopes.length > 0) body.set('scope', scopes.join(' '))
      const response = await httpRequest(endpoint, {
        body,
        headers,
        signal: options.signal,
        timeoutMs: options.timeoutMs,
      })
      return processDeviceAuthorizationResponse(response, { now: options.now, scopes })
    },
    { sleep: options.sleep, signal: options.signal },
  )
}

/** Options of {@link processDeviceAuthorizationResponse}. */
export interface ProcessDeviceAuthorizationOptions {
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
  /** The scopes that were requested. */
  scopes?: readonly string[] | undefined
}

/**
 * Validates a device authorization response (RFC 8628 §3.2): every required field present and
 * typed, `expires_in` and `interval` positive and bounded (decimal strings normalised), URIs https
 * (http only for loopback), user code and message printable and bounded.
 *
 * @param response - the HTTP response.
 * @param options - clock and requested scopes.
 * @returns the device authorization, frozen, with the device code held privately.
 * @throws {@link InvalidResponseError} naming the field; {@link OAuthServerError} for an error body;
 *   {@link UnavailableError} for 429/5xx.
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.2
 */
export function processDeviceAuthorizationResponse(
  response: HttpResponse,
  options: ProcessDeviceAuthorizationOptions = {},
): DeviceAuthorization {
  const now = (options.now ?? Date.now)()
  // 'device_code': an Entra ID tenant that blocks the flow says so here already (53003).
  if (response.status !== 200) {
    throw errorFromResponse(response, 'device authorization request', 'device_code', now)
  }
  const body = readJson(response, 'device authorization response')
  if (!isObject(body))
    throw new InvalidResponseError('device authorization response is not a JSON object', { body })
  const bad = (field: string, why: string) =>
    new InvalidResponseError(`device authorization response: ${field} ${why}`, {
      status: response.status,
      body,
    })

  const deviceCode = body.device_code
  if (!isNonEmptyString(deviceCode) || deviceCode.length > 4096 || !isPrintable(deviceCode)) {
    throw bad('device_code', 'is missing or not a printable string')
  }
  const userCode = body.user_code
  if (!isNonEmptyString(userCode) || userCode.trim().length === 0) throw bad('user_code', 'is missing')
  if (userCode.length > MAX_USER_CODE_LENGTH) throw bad('user_code', `is longer than ${MAX_USER_CODE_LENGTH}`)
  if (!isPrintable(userCode)) throw bad('user_code', 'contains control or invisible format characters')

  // Google and pre-RFC servers spell it `verification_url`; the RFC name wins when both are sent.
  const verificationUri = uri(
    body,
    body.verification_uri === undefined ? 'verification_url' : 'verification_uri',
    bad,
  )
  if (verificationUri === undefined) throw bad('verification_uri', 'is missing')
  const verificationUriComplete = uri(body, 'verification_uri_complete', bad)

  const expiresIn = numericParameter(body, 'expires_in')
  if (expiresIn === undefined) throw bad('expires_in', 'is missing')
  if (!Number.isFinite(expiresIn) || expiresIn <= 0 || expiresIn > MAX_DEVICE_CODE_LIFETIME_SECONDS) {
    throw bad('expires_in', `is not a number of seconds in 1..${MAX_DEVICE_CODE_LIFETIME_SECONDS}`)
  }
  // RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
  const interval = numericParameter(body, 'interval') ?? DEFAULT_INTERVAL_SECONDS
  // Never feed 0 (busy polling) or a day-long wait into the poll loop.
  if (!Number.isFinite(interval) || interval < 1 || interval > MAX_INTERVAL_SECONDS) {
    throw bad('interval', `is not a number of seconds in 1..${MAX_INTERVAL_SECONDS}`)
  }

  let message: string | undefined
  if (body.message !== undefined && body.message !== null) {
    if (typeof body.message !== 'string' || body.message.length > MAX_MESSAGE_LENGTH) {
      throw bad('message', `is not a string of at most ${MAX_MESSAGE_LENGTH} characters`)
    }
    if (!isPrintable(body.message)) throw bad('message', 'contains control or invisible format characters')
    message = body.message
  }

  const flow: DeviceAuthorization = Object.freeze({
    userCode,
    verificationUri,
    verificationUriComplete,
    expiresAt: now + Math.round(expiresIn * 1000),
    intervalSeconds: interval,
    message,
    scopes: Object.freeze([...(options.scopes ?? [])]),
  })
  deviceCodes.set(flow, deviceCode)
  return flow
}

function uri(
  body: JsonObject,
  field: string,
  bad: (field: string, why: string) => InvalidResponseError,
): string | undefined {
  const value = body[field]
  if (value === undefined || value === null) return undefined
  if (!isNonEmptyString(value) || value.length > MAX_URI_LENGTH || !isPrintable(value)) {
    throw bad(field, 'is not a printable string')
  }
  // Never show the user a javascript:, data:, file: or plain-http link to a remote host.
  const url = secureUrl(value)
  if (!url || url.username || url.password) {
    throw bad(field, 'must be an https:// URL (http:// only for loopback hosts)')
  }
  // The serialised URL, not the server's text: an internationalised host is shown as punycode
  // (xn--...), so look-alike letters cannot pass for another domain.
  return url.href
}

/**
 * A pending device authorization in a form that can be kept (encrypted) and resumed after a
 * restart: everything {@link DeviceAuthorization} holds, the device code included, and the
 * interval last asked for (a `slow_down` is kept). Secret: it holds the device code.
 */
export interface SavedDeviceAuthorization {
  /** The device code. Secret. */
  readonly deviceCode: string
  readonly userCode: string
  readonly verificationUri: string
  readonly verificationUriComplete?: string | undefined
  /** Epoch ms. */
  readonly expiresAt: number
  /** The interval in force, seconds (the server's, plus every `slow_down`). */
  readonly intervalSeconds: number
  readonly message?: string | undefined
  readonly scopes: readonly string[]
}

/**
 * The keepable form of a device authorization, with its device code, for resuming it later
 * (RFC 8628 §3.2 codes live minutes: a reboot need not cost the user a new one).
 *
 * @param flow - a flow from {@link startDeviceAuthorization} or {@link restoreDeviceAuthorization}.
 * @param intervalSeconds - the interval in force now (after `slow_down`); default the flow's.
 * @returns the saved form. Secret: keep it only in the encrypted store.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when the flow did not come from this module.
 */
export function saveDeviceAuthorization(
  flow: DeviceAuthorization,
  intervalSeconds: number = flow.intervalSeconds,
): SavedDeviceAuthorization {
  const deviceCode = deviceCodes.get(flow)
  if (deviceCode === undefined) throw notOurFlow('saveDeviceAuthorization')
  return {
    deviceCode,
    userCode: flow.userCode,
    verificationUri: flow.verificationUri,
    ...(flow.verificationUriComplete === undefined
      ? {}
      : { verificationUriComplete: flow.verificationUriComplete }),
    expiresAt: flow.expiresAt,
    intervalSeconds,
    ...(flow.message === undefined ? {} : { message: flow.message }),
    scopes: [...flow.scopes],
  }
}

/**
 * A device authorization again from its saved form, to be polled by {@link pollDeviceAuthorization}.
 * The saved values are checked as strictly as a server's response (they come from a file).
 *
 * @param saved - from {@link saveDeviceAuthorization} (read back from the store).
 * @returns the device authorization, frozen, with the device code held privately.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when a field is missing or out of range.
 */
export function restoreDeviceAuthorization(saved: SavedDeviceAuthorization): DeviceAuthorization {
  const ok =
    isNonEmptyString(saved.deviceCode) &&
    saved.deviceCode.length <= 4096 &&
    isPrintable(saved.deviceCode) &&
    isNonEmptyString(saved.userCode) &&
    saved.userCode.length <= MAX_USER_CODE_LENGTH &&
    isPrintable(saved.userCode) &&
    isNonEmptyString(saved.verificationUri) &&
    secureUrl(saved.verificationUri) !== undefined &&
    (saved.verificationUriComplete === undefined || secureUrl(saved.verificationUriComplete) !== undefined) &&
    Number.isFinite(saved.expiresAt) &&
    Number.isFinite(saved.intervalSeconds) &&
    saved.intervalSeconds >= 1 &&
    saved.intervalSeconds <= MAX_BACKOFF_INTERVAL_SECONDS + MAX_INTERVAL_SECONDS &&
    Array.isArray(saved.scopes) &&
    saved.scopes.every((scope) => typeof scope === 'string')
  if (!ok) {
    throw Object.assign(
      new TypeError('restoreDeviceAuthorization: the saved device authorization is invalid'),
      {
        code: 'ERR_INVALID_ARG_VALUE' as const,
      },
    )
  }
  const flow: DeviceAuthorization = Object.freeze({
    userCode: saved.userCode,
    verificationUri: saved.verificationUri,
    verificationUriComplete: saved.verificationUriComplete,
    expiresAt: saved.expiresAt,
    intervalSeconds: saved.intervalSeconds,
    message: saved.message,
    scopes: Object.freeze([...saved.scopes]),
  })
  deviceCodes.set(flow, saved.deviceCode)
  return flow
}

function notOurFlow(fn: string): TypeError {
  return Object.assign(new TypeError(`${fn}: flow did not come from startDeviceAuthorization`), {
    code: 'ERR_INVALID_ARG_VALUE' as const,
  })
}

export type { SleepFunction } from '../retry.js'

/** One poll's outcome, for progress reporting and diagnostics. */
export interface PollEvent {
  /** When the poll was sent, epoch ms (the injected clock). */
  at: number
  /** `pending`, `slow_down`, `unavailable` (network, 429, 5xx), or `done`. */
  outcome: 'pending' | 'slow_down' | 'unavailable' | 'done'
  /** The interval in force for the next poll, seconds. */
  intervalSeconds: number
}

/** Options of {@link pollDeviceAuthorization}. */
export interface PollDeviceAuthorizationOptions {
  /**
   * Cancels polling (`ERR_CANCELLED`). Whatever the signal, polling ends at the code's expiry with
   * `ERR_EXPIRED`: no request is sent after it (RFC 8628 §3.5), so without a signal the code's
   * lifetime is the limit (like openid-client's default signal).
   */
  signal?: AbortSignal | undefined
  /** Waits between polls; inject for tests. Default: `node:timers/promises` setTimeout. */
  sleep?: SleepFunction | undefined
  /**
   * The clock, epoch ms; inject for tests together with `sleep`. Default `Date.now`, with the
   * code's expiry then judged on the monotonic clock (`performance.now`); an injected clock judges
   * both.
   */
  now?: (() => number) | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /** Called after every poll (e.g. to keep the interval of a resumable flow up to date). */
  onPoll?: ((event: PollEvent) => unknown) | undefined
  /**
   * Sends a DPoP proof of this key with every poll, so the tokens are bound to it (RFC 9449 §5);
   * a `use_dpop_nonce` answer is retried at once with the server's nonce (§8).
   */
  dpop?: DPoPHandle | undefined
}

function cancelled(cause?: unknown): EdgeTokenError {
  return new EdgeTokenError('ERR_CANCELLED', 'device authorization was cancelled', { cause })
}

/**
 * Polls the token endpoint until the user approves, denies, or the code expires (RFC 8628 §3.4-3.5):
 *
 * - the first poll is sent one interval after the call, not at once;
 * - `authorization_pending`: keep polling at the interval;
 * - `slow_down`: the interval grows by 5 s for this and every later poll;
 * - a connection failure or timeout (and 429/5xx without `Retry-After`): the interval doubles
 *   (capped at {@link MAX_BACKOFF_INTERVAL_SECONDS}); a `Retry-After` is honoured for the next wait;
 * - any other error ends polling: `access_denied`/`authorization_declined` -> `ERR_ACCESS_DENIED`,
 *   `expired_token` -> `ERR_EXPIRED`, others `ERR_OAUTH`;
 * - no poll is sent at or after the code's expiry: polling ends with `ERR_EXPIRED` at that moment.
 *   Without an injected `now`, the code's remaining life is counted on the monotonic clock from
 *   the start of polling, so a wall-clock step (NTP after boot) neither ends nor prolongs it.
 *
 * @param server - the authorization server.
 * @param client - the client that started the flow.
 * @param flow - the device authorization from {@link startDeviceAuthorization}.
 * @param options - signal, sleep, clock, timeout, progress callback.
 * @returns the validated token set (id_token verified).
 * @throws EdgeTokenError `ERR_ACCESS_DENIED`, `ERR_EXPIRED`, `ERR_CANCELLED`, `ERR_INVALID_RESPONSE`,
 *   `ERR_JWT_INVALID`, `ERR_OAUTH`; `ERR_DEVICE_FLOW_BLOCKED` when an Entra ID tenant blocks the
 *   flow (AADSTS53003, 530035).
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.5
 */
export async function pollDeviceAuthorization(
  server: AuthorizationServer,
  client: OAuthClient,
  flow: DeviceAuthorization,
  options: PollDeviceAuthorizationOptions = {},
): Promise<TokenSet> {
  const deviceCode = deviceCodes.get(flow)
  if (deviceCode === undefined) throw notOurFlow('pollDeviceAuthorization')
  const { sleep } = options
  const now = options.now ?? Date.now
  const { signal } = options
  let intervalSeconds = flow.intervalSeconds
  let waitMs = intervalSeconds * 1000
  const expired = () =>
    new EdgeTokenError('ERR_EXPIRED', 'the device code expired before the sign-in was completed')
  // The code's remaining life is measured on a monotonic clock, anchored once to the wall clock
  // here: NTP stepping a gateway's clock forward after boot (or back) must neither end a sign-in
  // the IdP still honours nor keep polling a dead code. The wall clock stays in charge of what it
  // means to others: assertion `iat`, the tokens' `expiresAt`. An injected `now` is taken as both.
  // The trade-off: CLOCK_MONOTONIC (performance.now) stands still while the machine is suspended,
  // so after a resume past the expiry one more poll goes out and the IdP ends polling with
  // `expired_token` (RFC 8628 §3.5 lets the client poll until the server says so).
  const elapsed = options.now ?? (() => performance.now())
  const deadline = elapsed() + (flow.expiresAt - now())

  for (;;) {
    if (signal?.aborted) throw cancelled(signal.reason)
    const remaining = deadline - elapsed()
    if (waitMs >= remaining) {
      // RFC 8628 §3.5: no poll after expiry. Wait out the code's life (the user may still be
      // looking at it), then report it expired.
      if (remaining > 0) await sleepOrCancel(sleep, remaining, signal)
      throw expired()
    }
    await sleepOrCancel(sleep, waitMs, signal)
    if (elapsed() >= deadline) throw expired()

    const at = now()
    const body = new URLSearchParams({ grant_type: DEVICE_CODE_GRANT_TYPE, device_code: deviceCode })
    // Entra ID: client_info=1 returns the stable `uid.utid` account id.
    if (server.dialect === 'entra') body.set('client_info', '1')

    let outcome: PollEvent['outcome']
    let retryAfterSeconds: number | undefined
    let response: HttpResponse | undefined
    try {
      response = await sendTokenRequest(server, client, body, {
        now,
        signal,
        timeoutMs: options.timeoutMs,
        dpop: options.dpop,
      })
    } catch (err) {
      // RFC 8628 §3.5: on a connection timeout, reduce the polling frequency (exponential back-off).
      if (!(err instanceof NetworkError)) throw err
    }
    if (response?.status === 200) {
      // The device code is spent from here on: whatever goes wrong while validating the tokens
      // (the JWKS unreachable, after its own retries), it is never polled again.
      const tokens = await processTokenResponse(server, response, {
        grant: 'device_code',
        requestedScopes: flow.scopes,
        clientId: client.clientId,
        now,
        signal,
        sleep,
        dpop: options.dpop !== undefined,
      })
      const reported = options.onPoll?.({ at, outcome: 'done', intervalSeconds })
      if (reported instanceof Promise) await reported
      return tokens
    }
    const err =
      response === undefined ? undefined : errorFromResponse(response, 'token request', 'device_code', now())
    if (err instanceof OAuthServerError && err.error === 'authorization_pending') {
      outcome = 'pending'
    } else if (err instanceof OAuthServerError && err.error === 'slow_down') {
      // RFC 8628 §3.5: "the interval MUST be increased by 5 seconds for this and all subsequent requests".
      outcome = 'slow_down'
      intervalSeconds += SLOW_DOWN_SECONDS
    } else if (err === undefined || err instanceof UnavailableError) {
      // No answer (network), or 429/5xx: back off; a Retry-After, when sent, sets the next wait.
      outcome = 'unavailable'
      retryAfterSeconds = err?.retryAfterSeconds
      if (retryAfterSeconds === undefined) {
        intervalSeconds = Math.min(intervalSeconds * 2, MAX_BACKOFF_INTERVAL_SECONDS)
      }
    } else {
      throw err
    }
    // Awaited only when it returns a promise: a synchronous callback costs no extra tick.
    const reported = options.onPoll?.({ at, outcome, intervalSeconds })
    if (reported instanceof Promise) await reported
    waitMs = Math.max(intervalSeconds, retryAfterSeconds ?? 0) * 1000
  }
}

async function sleepOrCancel(
  sleep: SleepFunction | undefined,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  try {
    await sleepOrCancelRetry(sleep, ms, signal)
  } catch (err) {
    // Keep this module's message for a cancelled device flow.
    if (err instanceof EdgeTokenError && err.code === 'ERR_CANCELLED') throw cancelled(err.cause)
    throw err
  }
}
