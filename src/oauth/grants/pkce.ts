/**
 * The front channel of the authorization code flow: PKCE (RFC 7636, S256 only), `state` and
 * `nonce`, the authorization request URL (RFC 6749 §4.1.1) and the checks on the redirect that
 * comes back (RFC 6749 §4.1.2, RFC 9207 `iss`).
 *
 * @see https://www.rfc-editor.org/rfc/rfc7636
 * @see https://www.rfc-editor.org/rfc/rfc9207
 * @packageDocumentation
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { EdgeTokenError, InvalidResponseError, OAuthServerError } from '../../errors.js'
import { isLoopbackHost } from '../../lib/url.js'
import { isPrintable } from '../../lib/validate.js'
import type { AuthorizationServer } from '../authority.js'
import { errorCodeFor } from '../tokens.js'

/** RFC 7636 §4.1: a code_verifier is 43 to 128 characters of `[A-Za-z0-9-._~]`. */
const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
/** Longest `state` or `nonce` accepted, characters. */
const MAX_STATE_LENGTH = 512

function invalidArg(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_VALUE' })
}

/**
 * A fresh high-entropy random string: 32 random bytes, base64url (43 characters), as RFC 7636
 * §4.1 recommends for verifiers and which serves as `state` and `nonce` too.
 */
function randomToken(): string {
  return randomBytes(32).toString('base64url')
}

/**
 * Creates a PKCE code_verifier: 32 random octets, base64url-encoded (43 characters).
 *
 * @returns the verifier; a secret until the code is redeemed.
 * @example
 * ```ts
 * const verifier = generateCodeVerifier()
 * const challenge = codeChallengeS256(verifier)
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.1
 */
export function generateCodeVerifier(): string {
  return randomToken()
}

/**
 * The S256 code_challenge of a verifier: `BASE64URL(SHA256(ASCII(code_verifier)))`.
 *
 * @param codeVerifier - the verifier (43-128 unreserved characters).
 * @returns the challenge.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when the verifier breaks RFC 7636 §4.1.
 * @example
 * ```ts
 * codeChallengeS256('dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')
 * // 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.2
 */
export function codeChallengeS256(codeVerifier: string): string {
  assertCodeVerifier(codeVerifier)
  return createHash('sha256').update(codeVerifier, 'ascii').digest('base64url')
}

/**
 * Checks a code_verifier's syntax (RFC 7636 §4.1).
 *
 * @param codeVerifier - the verifier.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` (the message never contains the verifier).
 * @example
 * ```ts
 * assertCodeVerifier(generateCodeVerifier()) // passes
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.1
 */
export function assertCodeVerifier(codeVerifier: string): void {
  if (typeof codeVerifier !== 'string' || !VERIFIER.test(codeVerifier)) {
    throw invalidArg('a PKCE code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.1)')
  }
}

/**
 * Creates an opaque `state` value binding an authorization response to the request (RFC 6749
 * §10.12): 32 random bytes, base64url.
 *
 * @returns the state.
 * @example
 * ```ts
 * const state = generateState()
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-10.12
 */
export function generateState(): string {
  return randomToken()
}

/**
 * Creates an OpenID Connect `nonce` binding the id_token to the request: 32 random bytes, base64url.
 *
 * @returns the nonce.
 * @example
 * ```ts
 * const nonce = generateNonce()
 * ```
 * @see https://openid.net/specs/openid-connect-core-1_0.html#NonceNotes
 */
export function generateNonce(): string {
  return randomToken()
}

/** Parameters of {@link buildAuthorizationUrl}. */
export interface AuthorizationUrlParameters {
  /** The client_id. */
  clientId: string
  /** The registered redirect URI: absolute, no fragment; plain http only to a loopback host. */
  redirectUri: string
  /** The scopes (`openid` for an id_token). */
  scopes: readonly string[]
  /** The `state` from {@link generateState}. */
  state: string
  /** The OpenID Connect `nonce` from {@link generateNonce}, when an id_token is expected. */
  nonce?: string | undefined
  /** The S256 challenge from {@link codeChallengeS256}. */
  codeChallenge: string
  /** OpenID Connect `prompt` (`login`, `consent`, `select_account`, `none`). */
  prompt?: string | undefined
  /** OpenID Connect `login_hint`. */
  loginHint?: string | undefined
  /** RFC 8707 resource indicator. */
  resource?: string | undefined
  /**
   * An OpenID Connect claims request (§5.5), compact JSON from `mergeClaims`: a claims challenge
   * and/or client capabilities (`xms_cc`).
   */
  claims?: string | undefined
  /**
   * How the server returns the response: `query` (the default for `code`, RFC 6749 §4.1.2), or
   * `form_post` (an auto-submitted HTML form POSTed to the redirect URI: OAuth 2.0 Form Post
   * Response Mode), which keeps the code out of the URL, its logs and the Referer header.
   */
  responseMode?: 'query' | 'form_post' | undefined
}

/**
 * Checks a redirect URI: absolute, no fragment (RFC 6749 §3.1.2), and plain http only to a
 * loopback host (RFC 8252 §7.3); private-use schemes (RFC 8252 §7.1) pass.
 *
 * @param redirectUri - the URI.
 * @returns the parsed URI.
 * @throws TypeError `ERR_INVALID_ARG_VALUE`; EdgeTokenError `ERR_INSECURE_URL` for remote http.
 */
function parseRedirectUri(redirectUri: string): URL {
  let url: URL
  try {
    url = new URL(redirectUri)
  } catch {
    throw invalidArg('redirectUri must be an absolute URI (RFC 6749 §3.1.2)')
  }
  if (url.hash || redirectUri.includes('#')) {
    throw invalidArg('redirectUri must not include a fragment (RFC 6749 §3.1.2)')
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    throw new EdgeTokenError(
      'ERR_INSECURE_URL',
      'redirectUri must be https:// (http:// only for loopback hosts, RFC 8252 §7.3)',
    )
  }
  return url
}

function assertOpaque(value: string, what: string): void {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > MAX_STATE_LENGTH ||
    !isPrintable(value)
  ) {
    throw invalidArg(`${what} must be a printable string of 1-${MAX_STATE_LENGTH} characters`)
  }
}

/**
 * Builds the authorization request URL (RFC 6749 §4.1.1) with PKCE S256 (RFC 7636 §4.3): the
 * server's authorization endpoint (its own query kept, §3.1) plus `response_type=code`,
 * `client_id`, `redirect_uri`, `scope`, `state`, `code_challenge`, `code_challenge_method=S256`
 * and `nonce`, `prompt`, `login_hint`, `resource`, `claims` (OpenID Connect Core §5.5) when given.
 *
 * @param server - the authorization server (must publish an authorization endpoint).
 * @param parameters - client, redirect URI, scopes, state, nonce, challenge.
 * @returns the URL to open in a browser.
 * @throws EdgeTokenError `ERR_CONFIG` when the server has no authorization endpoint,
 *   `ERR_INSECURE_URL` for a remote http redirect URI; TypeError `ERR_INVALID_ARG_VALUE` for a
 *   malformed redirect URI, state, nonce or challenge.
 * @example
 * ```ts
 * const verifier = generateCodeVerifier()
 * const state = generateState()
 * const url = buildAuthorizationUrl(server, {
 *   clientId, redirectUri: 'http://127.0.0.1:8400/cb', scopes: ['openid'], state,
 *   codeChallenge: codeChallengeS256(verifier),
 * })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.1
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.3
 */
export function buildAuthorizationUrl(
  server: AuthorizationServer,
  parameters: AuthorizationUrlParameters,
): URL {
  if (!server.authorizationEndpoint) {
    throw new EdgeTokenError('ERR_CONFIG', 'the authorization server publishes no authorization_endpoint')
  }
  parseRedirectUri(parameters.redirectUri)
  assertOpaque(parameters.state, 'state')
  if (parameters.nonce !== undefined) assertOpaque(parameters.nonce, 'nonce')
  // RFC 7636 §4.2: an S256 challenge is 43 base64url characters (a SHA-256 digest).
  if (!/^[A-Za-z0-9_-]{43}$/.test(parameters.codeChallenge)) {
    throw invalidArg('codeChallenge must be an S256 challenge (RFC 7636 §4.2)')
  }
  const url = new URL(server.authorizationEndpoint)
  const q = url.searchParams
  q.set('response_type', 'code')
  q.set('client_id', parameters.clientId)
  q.set('redirect_uri', parameters.redirectUri)
  q.set('scope', parameters.scopes.join(' '))
  q.set('state', parameters.state)
  q.set('code_challenge', parameters.codeChallenge)
  q.set('code_challenge_method', 'S256')
  if (parameters.nonce !== undefined) q.set('nonce', parameters.nonce)
  if (parameters.prompt !== undefined) q.set('prompt', parameters.prompt)
  if (parameters.loginHint !== undefined) q.set('login_hint', parameters.loginHint)
  if (parameters.resource !== undefined) q.set('resource', parameters.resource)
  if (parameters.claims !== undefined) q.set('claims', parameters.claims)
  if (parameters.responseMode !== undefined) q.set('response_mode', parameters.responseMode)
  return url
}

/** Options of {@link validateAuthorizationResponse}. */
export interface ValidateAuthorizationResponseOptions {
  /** The `state` sent in the request. */
  expectedState: string
  /**
   * The server's issuer. When given and the response carries `iss` (RFC 9207), they must be
   * equal; Entra ID's `{tenantid}` template matches any tenant GUID.
   */
  issuer?: string | undefined
  /** The redirect URI of the request: when given, the callback must be at it (origin and path). */
  redirectUri?: string | undefined
}

/** A validated successful authorization response. */
export interface AuthorizationResponse {
  /** The authorization code (secret, single use). */
  readonly code: string
  /** The `state`, equal to the expected one. */
  readonly state: string
  /** The RFC 9207 `iss`, when the server sent it. */
  readonly iss?: string | undefined
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8')
  const y = Buffer.from(b, 'utf8')
  return x.length === y.length && timingSafeEqual(x, y)
}

function issuerMatches(iss: string, issuer: string): boolean {
  if (!issuer.includes('{tenantid}')) return iss === issuer
  const [before = '', after = ''] = issuer.split('{tenantid}')
  if (!iss.startsWith(before) || !iss.endsWith(after)) return false
  return GUID.test(iss.slice(before.length, iss.length - after.length))
}

/**
 * Validates the redirect an authorization server sent the browser back with (query response
 * mode), in this order: no repeated parameter (RFC 6749 §3.1), `iss` equal to the issuer when
 * present (RFC 9207 §2.4), `state` equal to the one sent (RFC 6749 §4.1.2, §10.12), then the
 * error (§4.1.2.1) or the code.
 *
 * @param callbackUrl - the full URL the browser was redirected to.
 * @param options - expected state, issuer and redirect URI.
 * @returns the code and state.
 * @throws {@link InvalidResponseError} (`ERR_INVALID_RESPONSE`) for a state or issuer mismatch, a
 *   repeated parameter, a missing code or a foreign callback; {@link OAuthServerError} when the
 *   server answered with an error (`access_denied` -> `ERR_ACCESS_DENIED`; `status` is 302, the
 *   redirect). Messages never contain the code or the state.
 * @example
 * ```ts
 * const { code } = validateAuthorizationResponse(callbackUrl, { expectedState: state, issuer: server.issuer })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.2
 * @see https://www.rfc-editor.org/rfc/rfc9207#section-2.4
 */
export function validateAuthorizationResponse(
  callbackUrl: string | URL,
  options: ValidateAuthorizationResponseOptions,
): AuthorizationResponse {
  let url: URL
  try {
    url = new URL(callbackUrl)
  } catch {
    throw new InvalidResponseError('authorization response: the callback is not a URL')
  }
  return validateResponseParameters(url, options)
}

/**
 * Validates a `form_post` authorization response (OAuth 2.0 Form Post Response Mode): the
 * `application/x-www-form-urlencoded` body the browser POSTed to the redirect URI, with the same
 * checks, in the same order, as {@link validateAuthorizationResponse}.
 *
 * @param body - the POST body (text, or parsed).
 * @param options - expected state, issuer; `redirectUri` is where the form was posted.
 * @returns the code and state.
 * @throws as {@link validateAuthorizationResponse}.
 * @example
 * ```ts
 * const { code } = validateFormPostResponse(await readBody(req), { expectedState: state, issuer: server.issuer })
 * ```
 * @see https://openid.net/specs/oauth-v2-form-post-response-mode-1_0.html
 * @see https://www.rfc-editor.org/rfc/rfc9207#section-2.4
 */
export function validateFormPostResponse(
  body: string | URLSearchParams,
  options: ValidateAuthorizationResponseOptions,
): AuthorizationResponse {
  const url = new URL(options.redirectUri ?? 'urn:form-post:')
  url.search = new URLSearchParams(body).toString()
  return validateResponseParameters(url, { ...options, redirectUri: undefined })
}

function validateResponseParameters(
  url: URL,
  options: ValidateAuthorizationResponseOptions,
): AuthorizationResponse {
  if (options.redirectUri !== undefined) {
    const expected = new URL(options.redirectUri)
    if (url.origin !== expected.origin || url.pathname !== expected.pathname) {
      throw new InvalidResponseError('authorization response: the callback is not at the redirect URI')
    }
  }
  const params = url.searchParams
  // RFC 6749 §3.1: response parameters MUST NOT be included more than once.
  for (const name of new Set(params.keys())) {
    if (params.getAll(name).length > 1) {
      throw new InvalidResponseError(`authorization response: parameter ${clip(name)} is repeated`)
    }
  }
  const iss = params.get('iss') ?? undefined
  if (iss !== undefined && options.issuer !== undefined && !issuerMatches(iss, options.issuer)) {
    // RFC 9207 §2.4: a mismatch means a mix-up attack; the response MUST be rejected.
    throw new InvalidResponseError(
      `authorization response: iss ${clip(iss)} is not the expected issuer ${clip(options.issuer)}`,
    )
  }
  const state = params.get('state')
  if (state === null || !sameSecret(state, options.expectedState)) {
    throw new InvalidResponseError(
      'authorization response: state does not match the request (forged or replayed redirect?)',
    )
  }
  const error = params.get('error')
  if (error !== null) {
    throw new OAuthServerError(errorCodeFor(error, 'other'), error, {
      status: 302,
      errorDescription: params.get('error_description') ?? undefined,
      errorUri: params.get('error_uri') ?? undefined,
    })
  }
  const code = params.get('code')
  if (code === null || code.length === 0) {
    throw new InvalidResponseError('authorization response: no code and no error')
  }
  return Object.freeze({ code, state, iss })
}

function clip(value: string): string {
  return value.replace(/[^\x20-\x7e]/g, '').slice(0, 120)
}
