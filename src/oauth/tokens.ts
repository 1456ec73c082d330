/**
 * Token endpoint responses: RFC 6749 §5.1 success checks, §5.2 error mapping, id_token
 * verification (OpenID Connect Core §3.1.3.7) and the account derived from them.
 *
 * @packageDocumentation
 */
import { createHash } from 'node:crypto'
import {
  EdgeTokenError,
  type ErrorCode,
  InvalidResponseError,
  OAuthServerError,
  UnavailableError,
} from '../errors.js'
import { parseRetryAfter } from '../lib/http/retry-after.js'
import { ASYMMETRIC_JWS_ALGORITHMS } from '../lib/jws.js'
import { isNonEmptyString, isObject, isPrintable, type JsonObject } from '../lib/validate.js'
import { type AuthorizationServer, expectedIssuer } from './authority.js'
import { type HttpResponse, readJson, responseHeader } from './http.js'
import { jwksKeyResolver } from './jwks.js'
import { type SleepFunction, withRetries } from './retry.js'
import { parseScope } from './scopes.js'
import type { Account, TokenSet } from './types.js'

// jose is loaded by the first id_token check, not by `import 'edgetoken'` (see oauth/http.ts).
let jose: typeof import('jose') | undefined

/** Clock skew allowed when checking `exp`, `iat` and `nbf`, seconds. */
export const CLOCK_SKEW_SECONDS = 60
/** Longest access-token lifetime we accept, seconds (a year): anything longer is a broken server. */
const MAX_EXPIRES_IN_SECONDS = 366 * 86400
/** Lifetime assumed when a token response omits `expires_in` (RFC 6749 §5.1 only recommends it). */
export const DEFAULT_EXPIRES_IN_SECONDS = 3600
/** The asymmetric JWS algorithms accepted for id_tokens; `none` and HMAC never. */
export const ID_TOKEN_ALGORITHMS = ASYMMETRIC_JWS_ALGORITHMS

/**
 * Reads a numeric response parameter, normalising the one known quirk: numbers sent as decimal
 * strings (`"expires_in": "3599"`, older Entra ID and some gateways). The single place this is done.
 *
 * @param body - the response object.
 * @param field - the parameter name.
 * @returns the number, `undefined` when absent, or `NaN` when present but not a number.
 */
export function numericParameter(body: JsonObject, field: string): number | undefined {
  const value = body[field]
  if (value === undefined || value === null) return undefined
  if (typeof value === 'number') return value
  if (typeof value === 'string' && /^\s*\d{1,12}(?:\.\d{1,6})?\s*$/.test(value)) return Number(value)
  return Number.NaN
}

/** Which grant a token response answers, for the error mapping. */
export type GrantKind = 'device_code' | 'refresh_token' | 'other'

/**
 * Maps an OAuth `error` code to an edgetoken error code.
 *
 * @param error - the `error` parameter.
 * @param grant - the grant it answers.
 * @returns the stable code.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.2
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.5
 */
export function errorCodeFor(error: string, grant: GrantKind): ErrorCode {
  if (error === 'access_denied' || error === 'authorization_declined') return 'ERR_ACCESS_DENIED'
  if (error === 'expired_token') return 'ERR_EXPIRED'
  if (error === 'invalid_grant' && grant === 'refresh_token') return 'ERR_SIGNIN_REQUIRED'
  // The client is registered or configured wrongly (client_id, secret, scopes, grant not enabled),
  // or `token --scope` asked for a scope the grant does not cover: retrying cannot help, the
  // configuration or the request has to change (exit 2, not 5, so scripts do not retry forever).
  if (CLIENT_CONFIGURATION_ERRORS.has(error)) return 'ERR_CONFIG'
  return 'ERR_OAUTH'
}

/**
 * OAuth errors that mean the client's registration or configuration is wrong (RFC 6749 §5.2,
 * RFC 8707 §2 `invalid_target`), mapped to `ERR_CONFIG`.
 */
export const CLIENT_CONFIGURATION_ERRORS: ReadonlySet<string> = new Set([
  'invalid_client',
  'unauthorized_client',
  'invalid_scope',
  'unsupported_grant_type',
  'invalid_request',
  'invalid_target',
])

/**
 * Entra ID `error_codes` by which a tenant refuses the device code flow itself, whoever signs in:
 * a Conditional Access policy whose "Authentication flows" condition selects device code flow
 * with "Block access" (Microsoft recommends blocking it "wherever possible"), and security
 * defaults, which deem the request unsafe. Any other code (53000-53002: device compliance or app
 * policies, 53004: MFA registration) concerns the user or their device, not the flow.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/reference-error-codes (AADSTS53003
 *   BlockedByConditionalAccess, AADSTS530035 BlockedBySecurityDefaults)
 * @see https://learn.microsoft.com/entra/identity/conditional-access/how-to-policy-authentication-flows
 */
export const ENTRA_DEVICE_FLOW_BLOCKS: ReadonlyMap<number, string> = new Map([
  [53003, 'by Conditional Access'],
  [530035, 'by security defaults'],
])

/**
 * The Entra ID code of a device-flow block in an error body: `error_codes` (an array of numbers),
 * else the `AADSTS<n>:` that starts `error_description` (the same code, in text).
 */
function deviceFlowBlock(body: JsonObject): number | undefined {
  const listed = Array.isArray(body.error_codes) ? body.error_codes : []
  for (const code of listed) if (typeof code === 'number' && ENTRA_DEVICE_FLOW_BLOCKS.has(code)) return code
  const described =
    typeof body.error_description === 'string' ? /^AADSTS(\d{1,9}):/.exec(body.error_description) : null
  const code = Number(described?.[1])
  return ENTRA_DEVICE_FLOW_BLOCKS.has(code) ? code : undefined
}

/**
 * Turns a non-success response of an OAuth endpoint into the error to throw: 429/5xx are
 * {@link UnavailableError} (with `Retry-After`), an RFC 6749 §5.2 body an {@link OAuthServerError}.
 *
 * @param response - the response.
 * @param what - what it answers (`token request`, `device authorization request`).
 * @param grant - for the code mapping.
 * @param now - the clock, for HTTP-date `Retry-After` values.
 * @returns the error (not thrown, so callers can inspect it).
 */
export function errorFromResponse(
  response: HttpResponse,
  what: string,
  grant: GrantKind,
  now: number = Date.now(),
): EdgeTokenError {
  const { status } = response
  if (status === 429 || status >= 500) {
    return new UnavailableError(`${what}: ${response.url.host} answered ${status}`, {
      status,
      retryAfterSeconds: parseRetryAfter(responseHeader(response, 'retry-after'), now),
    })
  }
  const body = readJson(response, what)
  if (!isObject(body) || !isNonEmptyString(body.error) || body.error.length > 200) {
    return new InvalidResponseError(
      `${what}: ${response.url.host} answered ${status} without an OAuth error`,
      {
        status,
        body,
      },
    )
  }
  const description = typeof body.error_description === 'string' ? body.error_description : undefined
  const errorUri = typeof body.error_uri === 'string' ? body.error_uri : undefined
  // Entra ID answers a blocked device code flow at the device authorization request or at a poll,
  // with `invalid_grant`, `access_denied` or another `error`: the code, not `error`, says what it is.
  const blocked = grant === 'device_code' ? deviceFlowBlock(body) : undefined
  if (blocked !== undefined) {
    return new OAuthServerError('ERR_DEVICE_FLOW_BLOCKED', body.error, {
      status,
      errorDescription: description,
      errorUri,
      body,
      message: `the tenant blocks the device code flow ${ENTRA_DEVICE_FLOW_BLOCKS.get(blocked)} (AADSTS${blocked}): sign in with a client certificate or managed identity (config grant), or run 'edgetoken login --browser'`,
    })
  }
  return new OAuthServerError(errorCodeFor(body.error, grant), body.error, {
    status,
    errorDescription: description,
    errorUri,
    body,
  })
}

/** Options of {@link processTokenResponse}. */
export interface ProcessTokenResponseOptions {
  /** The grant answered (error mapping). */
  grant: GrantKind
  /** The scopes requested: the granted ones when the response has no `scope` (RFC 6749 §3.3). */
  requestedScopes: readonly string[]
  /** The client_id, the id_token's audience. */
  clientId: string
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
  /** Cancels a JWKS fetch. */
  signal?: AbortSignal | undefined
  /** Waits between JWKS fetch attempts; inject for tests. Default: a timer. */
  sleep?: SleepFunction | undefined
  /** A DPoP proof was sent: `token_type` `DPoP` is then accepted as well (RFC 9449 §5). */
  dpop?: boolean | undefined
  /**
   * A refresh only: the claims of the account's ID token as stored (the sign-in's, verified with
   * its signature, or a refresh's checked against them). A refreshed id_token must then keep its
   * `iss`, `sub`, `aud`, `azp` and `auth_time` and carry a new `iat` (OpenID Connect Core §12.2);
   * received over TLS from the token endpoint, it is then checked without its signature (§3.1.3.7
   * item 6). Without them, a refreshed id_token is verified like a sign-in's.
   */
  originalIdTokenClaims?: Readonly<Record<string, unknown>> | undefined
}

/** How many times the JWKS is fetched for one token response before giving up. */
export const JWKS_ATTEMPTS = 3

/**
 * Verifies an id_token, fetching the JWKS up to {@link JWKS_ATTEMPTS} times while it is
 * unavailable (network, 429/5xx). The token response it belongs to is already consumed (a device
 * code or refresh token is single-use), so the grant request itself is never repeated for this.
 */
function verifyWithRetries(
  server: AuthorizationServer,
  idToken: string,
  options: ProcessTokenResponseOptions,
): Promise<Readonly<Record<string, unknown>>> {
  return withRetries(
    () => verifyIdToken(server, options.clientId, idToken, { now: options.now, signal: options.signal }),
    { attempts: JWKS_ATTEMPTS, sleep: options.sleep, signal: options.signal },
  )
}

/**
 * Validates a token endpoint response and verifies its id_token. A refresh's id_token, given the
 * account's stored ID token claims, must keep their identity (OpenID Connect Core §12.2) and over
 * https is checked without its signature ({@link ProcessTokenResponseOptions.originalIdTokenClaims}).
 *
 * An id_token whose signing keys cannot be fetched (after {@link JWKS_ATTEMPTS} tries) fails the
 * response with `ERR_UNAVAILABLE`, except on a refresh: there the id_token is optional (OpenID
 * Connect Core §12.2) and the new tokens (a rotated refresh token above all) must not be lost, so
 * the id_token is dropped and {@link TokenSet.warning} says why.
 *
 * @param server - the authorization server (issuer, JWKS).
 * @param response - the HTTP response.
 * @param options - grant, requested scopes, client id, clock.
 * @returns the token set (id_token claims set only after verification).
 * @throws {@link OAuthServerError} for an RFC 6749 §5.2 error; {@link UnavailableError} for 429/5xx;
 *   {@link InvalidResponseError} for a malformed success; `ERR_JWT_INVALID` for a bad id_token.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.1
 */
export async function processTokenResponse(
  server: AuthorizationServer,
  response: HttpResponse,
  options: ProcessTokenResponseOptions,
): Promise<TokenSet> {
  const now = (options.now ?? Date.now)()
  if (response.status !== 200) throw errorFromResponse(response, 'token request', options.grant, now)
  const body = readJson(response, 'token response')
  if (!isObject(body)) throw new InvalidResponseError('token response is not a JSON object', { body })
  const bad = (field: string, why: string) =>
    new InvalidResponseError(`token response: ${field} ${why}`, { status: response.status, body })

  if (!isNonEmptyString(body.access_token)) throw bad('access_token', 'is missing or not a string')
  if (typeof body.token_type !== 'string') throw bad('token_type', 'is missing')
  const tokenType = body.token_type.toLowerCase()
  // RFC 6750 bearer tokens (Entra ID spells it `Bearer`); RFC 9449 §5 DPoP-bound ones only when a
  // proof was sent (a server that ignores DPoP answers `Bearer`, which is kept as such).
  if (tokenType !== 'bearer' && !(tokenType === 'dpop' && options.dpop === true)) {
    throw bad('token_type', options.dpop ? 'is neither Bearer nor DPoP' : 'is not bearer')
  }

  const expiresIn = numericParameter(body, 'expires_in') ?? DEFAULT_EXPIRES_IN_SECONDS
  if (!Number.isFinite(expiresIn) || expiresIn <= 0 || expiresIn > MAX_EXPIRES_IN_SECONDS) {
    throw bad('expires_in', 'is not a positive number of seconds')
  }
  let scopes: readonly string[] = options.requestedScopes
  if (body.scope !== undefined) {
    if (typeof body.scope !== 'string') throw bad('scope', 'is not a string')
    scopes = parseScope(body.scope)
  }
  const optionalString = (field: string): string | undefined => {
    const value = body[field]
    if (value === undefined || value === null) return undefined
    if (!isNonEmptyString(value)) throw bad(field, 'is not a string')
    return value
  }
  const refreshToken = optionalString('refresh_token')
  const idToken = optionalString('id_token')
  const clientInfo = optionalString('client_info')
  const refreshIn = numericParameter(body, 'refresh_in')
  if (refreshIn !== undefined && (!Number.isFinite(refreshIn) || refreshIn <= 0)) {
    throw bad('refresh_in', 'is not a positive number')
  }
  const refreshTokenExpiresIn = numericParameter(body, 'refresh_token_expires_in')
  if (
    refreshTokenExpiresIn !== undefined &&
    (!Number.isFinite(refreshTokenExpiresIn) || refreshTokenExpiresIn <= 0)
  ) {
    throw bad('refresh_token_expires_in', 'is not a positive number')
  }

  let idTokenClaims: Readonly<Record<string, unknown>> | undefined
  let keptIdToken = idToken
  let warning: string | undefined
  if (idToken !== undefined) {
    try {
      idTokenClaims = refreshedOverTls(response, options)
        ? checkIdTokenClaims(server, options.clientId, idToken, now)
        : await verifyWithRetries(server, idToken, options)
      if (options.grant === 'refresh_token' && options.originalIdTokenClaims !== undefined) {
        checkRefreshedIdToken(idTokenClaims, options.originalIdTokenClaims)
      }
    } catch (err) {
      // Unavailable (after the retries) or unreadable (an HTML page from a captive portal): the
      // keys could not be fetched. A verification failure (ERR_JWT_INVALID) is never skipped.
      if (!(err instanceof UnavailableError || err instanceof InvalidResponseError)) throw err
      const host = hostOf(server.jwksUri)
      if (options.grant !== 'refresh_token') {
        throw new EdgeTokenError(
          'ERR_UNAVAILABLE',
          `the authorization server issued tokens, but their id_token cannot be verified: the signing keys at ${host} cannot be fetched (${err.message}); sign in again`,
          { cause: err },
        )
      }
      // OpenID Connect Core §12.2: a refresh response may omit the id_token; an unverified one is
      // treated as omitted, so the rotated refresh token is still returned and stored.
      keptIdToken = undefined
      warning = `the refreshed id_token was not verified and is ignored: the signing keys at ${host} cannot be fetched`
    }
  }

  return Object.freeze({
    accessToken: body.access_token,
    tokenType,
    expiresAt: now + Math.round(expiresIn * 1000),
    scopes: Object.freeze([...scopes]),
    refreshToken,
    idToken: keptIdToken,
    idTokenClaims,
    refreshInSeconds: refreshIn,
    clientInfo,
    ...(refreshTokenExpiresIn === undefined ? {} : { refreshTokenExpiresInSeconds: refreshTokenExpiresIn }),
    ...(warning === undefined ? {} : { warning }),
  })
}

/** Options of {@link verifyIdToken}. */
export interface VerifyIdTokenOptions {
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
  /** Cancels a JWKS fetch. */
  signal?: AbortSignal | undefined
}

/**
 * Verifies an id_token: signature against the server's JWKS with an asymmetric algorithm from
 * its header, `iss` (Entra ID template filled from `tid`), `aud` = client_id, `exp` and `iat`
 * present, {@link CLOCK_SKEW_SECONDS} of skew.
 *
 * @param server - the authorization server.
 * @param clientId - the expected audience.
 * @param idToken - the compact JWS.
 * @param options - clock and signal.
 * @returns the verified claims, frozen.
 * @throws EdgeTokenError `ERR_JWT_INVALID` naming the failed check (never the token).
 * @see https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
 */
export async function verifyIdToken(
  server: AuthorizationServer,
  clientId: string,
  idToken: string,
  options: VerifyIdTokenOptions = {},
): Promise<Readonly<Record<string, unknown>>> {
  if (!server.jwksUri) {
    throw new EdgeTokenError(
      'ERR_JWT_INVALID',
      'id_token cannot be verified: the server publishes no jwks_uri',
    )
  }
  jose ??= await import('jose')
  const { decodeJwt, errors: joseErrors, jwtVerify } = jose
  let unverifiedTid: unknown
  try {
    unverifiedTid = decodeJwt(idToken).tid
  } catch (err) {
    throw new EdgeTokenError('ERR_JWT_INVALID', 'id_token is not a JWT', { cause: err })
  }
  const issuer = expectedIssuer(server, unverifiedTid)
  if (issuer === undefined) {
    throw new EdgeTokenError('ERR_JWT_INVALID', 'id_token has no valid tid claim to fill the issuer template')
  }
  const now = options.now ?? Date.now
  try {
    const { payload } = await jwtVerify(idToken, jwksKeyResolver(server.jwksUri, options), {
      issuer,
      audience: clientId,
      algorithms: [...ID_TOKEN_ALGORITHMS],
      clockTolerance: CLOCK_SKEW_SECONDS,
      currentDate: new Date(now()),
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat'],
    })
    if (typeof payload.iat === 'number' && payload.iat * 1000 > now() + CLOCK_SKEW_SECONDS * 1000) {
      throw new EdgeTokenError('ERR_JWT_INVALID', 'id_token verification failed: iat is in the future')
    }
    return Object.freeze({ ...payload })
  } catch (err) {
    if (err instanceof EdgeTokenError) throw err
    const detail =
      err instanceof joseErrors.JOSEError
        ? `${err.code}${'claim' in err && typeof err.claim === 'string' ? ` (${err.claim})` : ''}`
        : 'unexpected error'
    throw new EdgeTokenError('ERR_JWT_INVALID', `id_token verification failed: ${detail}`, { cause: err })
  }
}

/**
 * Whether a refreshed id_token may be checked without its signature (issue 17: the ES256 check,
 * with WebCrypto's thread-pool hop, was most of a refresh's cost beyond the HTTP round trip, and
 * loading jose for it ~20 ms of a cold process's refresh). Sound when all of these hold:
 *
 * - OpenID Connect Core §3.1.3.7 item 6: an ID token "received via direct communication between
 *   the Client and the Token Endpoint" may have its issuer validated by the TLS server validation
 *   "in place of checking the token signature". So only an `https:` token endpoint, with Node's
 *   certificate checks on (not `NODE_TLS_REJECT_UNAUTHORIZED=0`); a plain-http one (loopback
 *   development IdPs, the tests' oidc-provider) proves nothing about who answered: verified.
 * - A refresh with the account's stored ID token claims to hold it to (§12.2): a refreshed ID token
 *   must name the same `iss`, `sub`, `aud` (and `azp`, `auth_time`) as the original authentication's,
 *   whose ID token was verified with its signature at sign-in (kept for every sign-in grant,
 *   though item 6 would allow the same there). So a refreshed ID token can change no identity the
 *   signature check once established; every claim check of {@link verifyIdToken} still applies.
 */
function refreshedOverTls(response: HttpResponse, options: ProcessTokenResponseOptions): boolean {
  return (
    options.grant === 'refresh_token' &&
    options.originalIdTokenClaims !== undefined &&
    response.url.protocol === 'https:' &&
    process.env.NODE_TLS_REJECT_UNAUTHORIZED !== '0'
  )
}

/** Decodes one base64url JWS part holding a JSON object; undefined for anything else. */
function jsonPart(part: string | undefined): JsonObject | undefined {
  if (part === undefined || !/^[A-Za-z0-9_-]+$/.test(part)) return undefined
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
    return isObject(value) ? value : undefined
  } catch {
    return undefined
  }
}

/**
 * The claim checks of {@link verifyIdToken} without the signature check, for a refreshed id_token
 * received over TLS ({@link refreshedOverTls}): a JWS compact serialization whose `alg` is one we
 * would verify (never `none` or HMAC) and no `crit`; `iss` (Entra ID template filled from `tid`),
 * `aud` containing the client id, `sub`, `exp` and `iat` present, `nbf` and `exp` within
 * {@link CLOCK_SKEW_SECONDS}, `iat` not in the future. No jose: a refresh need not load it.
 *
 * @param server - the authorization server (the expected issuer).
 * @param clientId - the expected audience.
 * @param idToken - the compact JWS.
 * @param now - epoch ms.
 * @returns the claims, frozen.
 * @throws EdgeTokenError `ERR_JWT_INVALID` naming the failed check (never the token).
 * @see https://openid.net/specs/openid-connect-core-1_0.html#IDTokenValidation
 */
function checkIdTokenClaims(
  server: AuthorizationServer,
  clientId: string,
  idToken: string,
  now: number,
): Readonly<Record<string, unknown>> {
  const invalid = (why: string) =>
    new EdgeTokenError('ERR_JWT_INVALID', `id_token verification failed: ${why}`)
  const parts = idToken.split('.')
  const header = parts.length === 3 && parts[2] !== '' ? jsonPart(parts[0]) : undefined
  const payload = header === undefined ? undefined : jsonPart(parts[1])
  if (header === undefined || payload === undefined) {
    throw new EdgeTokenError('ERR_JWT_INVALID', 'id_token is not a JWT')
  }
  if (typeof header.alg !== 'string' || !ID_TOKEN_ALGORITHMS.includes(header.alg)) {
    throw invalid('ERR_JOSE_ALG_NOT_ALLOWED')
  }
  // RFC 7515 §4.1.11: an extension the recipient does not understand makes the JWS invalid.
  if (header.crit !== undefined) throw invalid('ERR_JWS_INVALID (crit)')
  const issuer = expectedIssuer(server, payload.tid)
  if (issuer === undefined) {
    throw new EdgeTokenError('ERR_JWT_INVALID', 'id_token has no valid tid claim to fill the issuer template')
  }
  const seconds = now / 1000
  const { iss, sub, aud, exp, iat, nbf } = payload
  if (iss !== issuer) throw invalid('ERR_JWT_CLAIM_VALIDATION_FAILED (iss)')
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : []
  if (!audiences.includes(clientId)) throw invalid('ERR_JWT_CLAIM_VALIDATION_FAILED (aud)')
  if (!isNonEmptyString(sub)) throw invalid('ERR_JWT_CLAIM_VALIDATION_FAILED (sub)')
  if (typeof exp !== 'number' || !Number.isFinite(exp)) throw invalid('ERR_JWT_CLAIM_VALIDATION_FAILED (exp)')
  if (exp <= seconds - CLOCK_SKEW_SECONDS) throw invalid('ERR_JWT_EXPIRED (exp)')
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw invalid('ERR_JWT_CLAIM_VALIDATION_FAILED (iat)')
  if (iat > seconds + CLOCK_SKEW_SECONDS) throw invalid('iat is in the future')
  if (nbf !== undefined && (typeof nbf !== 'number' || nbf > seconds + CLOCK_SKEW_SECONDS)) {
    throw invalid('ERR_JWT_CLAIM_VALIDATION_FAILED (nbf)')
  }
  return Object.freeze({ ...payload })
}

/** An `aud` claim as a sorted list, for comparing two ID tokens' audiences as sets. */
function audienceSet(aud: unknown): string {
  const list =
    typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud.filter((a) => typeof a === 'string') : []
  return JSON.stringify([...new Set(list)].sort())
}

/**
 * OpenID Connect Core §12.2: what an ID token returned by a refresh must satisfy against the ID
 * token of the original authentication. Its `iss`, `sub` and `aud` are the same; its `iat` is the
 * new token's issue time (not older than the original's: same-second refreshes happen); an
 * `auth_time` is the original authentication's; its `azp` is the same, and absent when the
 * original had none. No `nonce` is compared: the refresh request sent none (§12.1).
 *
 * @param claims - the refreshed ID token's claims, already checked as any ID token's.
 * @param original - the stored claims of the account's ID token.
 * @throws EdgeTokenError `ERR_JWT_INVALID` naming the claim (never a value).
 * @see https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse
 */
function checkRefreshedIdToken(
  claims: Readonly<Record<string, unknown>>,
  original: Readonly<Record<string, unknown>>,
): void {
  const differs = (claim: string) =>
    new EdgeTokenError(
      'ERR_JWT_INVALID',
      `refreshed id_token: ${claim} differs from the signed-in account's ID token (OpenID Connect Core §12.2)`,
    )
  if (claims.iss !== original.iss) throw differs('iss')
  if (claims.sub !== original.sub) throw differs('sub')
  if (audienceSet(claims.aud) !== audienceSet(original.aud)) throw differs('aud')
  if (claims.azp !== original.azp) throw differs('azp')
  if (
    claims.auth_time !== undefined &&
    original.auth_time !== undefined &&
    claims.auth_time !== original.auth_time
  ) {
    throw differs('auth_time')
  }
  if (typeof original.iat === 'number' && typeof claims.iat === 'number' && claims.iat < original.iat) {
    throw new EdgeTokenError(
      'ERR_JWT_INVALID',
      "refreshed id_token: iat is older than the signed-in account's ID token, not a new token (OpenID Connect Core §12.2)",
    )
  }
}

function hostOf(uri: string | undefined): string {
  try {
    return uri === undefined ? 'the server' : new URL(uri).host
  } catch {
    return 'the server'
  }
}

function decodeClientInfo(value: string): { uid: string; utid: string } | undefined {
  try {
    const parsed: unknown = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'))
    if (isObject(parsed) && isNonEmptyString(parsed.uid) && isNonEmptyString(parsed.utid)) {
      const ok = (s: string) => /^[A-Za-z0-9._-]{1,128}$/.test(s)
      if (ok(parsed.uid) && ok(parsed.utid)) return { uid: parsed.uid, utid: parsed.utid }
    }
  } catch {
    // not base64url JSON: ignored, the id_token's sub is used instead
  }
  return undefined
}

function displayString(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 && value.length <= 256 && isPrintable(value)
    ? value
    : undefined
}

/**
 * The account a token set signs in: Entra ID `uid.utid` from `client_info` (stable across
 * tenants' token refreshes), else the verified id_token's `sub`, else a hash of issuer and client.
 *
 * @param server - the authorization server.
 * @param clientId - the client.
 * @param tokenSet - a token set from a grant function (id_token already verified).
 * @returns the account, frozen.
 * @throws EdgeTokenError `ERR_JWT_INVALID` when client_info's `utid` differs from the id_token's `tid`.
 */
export function accountFromTokenSet(
  server: AuthorizationServer,
  clientId: string,
  tokenSet: TokenSet,
): Account {
  const claims = tokenSet.idTokenClaims
  const issuer = typeof claims?.iss === 'string' ? claims.iss : server.issuer
  const username =
    displayString(claims?.preferred_username) ?? displayString(claims?.email) ?? displayString(claims?.name)
  const info =
    server.dialect === 'entra' && tokenSet.clientInfo ? decodeClientInfo(tokenSet.clientInfo) : undefined
  if (info) {
    // client_info is not signed: its tenant must be the verified id_token's, when both are present.
    if (typeof claims?.tid === 'string' && claims.tid.toLowerCase() !== info.utid.toLowerCase()) {
      throw new EdgeTokenError(
        'ERR_JWT_INVALID',
        'client_info names another tenant (utid) than the verified id_token (tid)',
      )
    }
    return Object.freeze({ id: `${info.uid}.${info.utid}`, username, tenant: info.utid, issuer })
  }
  const tid = displayString(claims?.tid)
  const sub = displayString(claims?.sub)
  if (sub) return Object.freeze({ id: sub, username, tenant: tid, issuer })
  const id = createHash('sha256').update(`${server.issuer}\n${clientId}`).digest('hex').slice(0, 32)
  return Object.freeze({ id, username, tenant: tid, issuer })
}
