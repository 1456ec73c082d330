/**
 * The grants of confidential clients and browser sign-ins: client credentials (RFC 6749 §4.4),
 * authorization code with PKCE (RFC 6749 §4.1.3, RFC 7636 §4.5), Entra ID's on-behalf-of flow and
 * OAuth 2.0 Token Exchange (RFC 8693) for other servers. Each builds its request and hands it to
 * {@link requestTokens}; the response checks are the shared ones.
 *
 * @packageDocumentation
 */
import { EdgeTokenError, InvalidResponseError } from '../../errors.js'
import { isNonEmptyString, isObject } from '../../lib/validate.js'
import type { AuthorizationServer } from '../authority.js'
import { readJson } from '../http.js'
import { requestTokens, sendTokenRequest, type TokenRequestOptions } from '../token-request.js'
import { processTokenResponse } from '../tokens.js'
import type { OAuthClient, TokenSet } from '../types.js'
import { assertCodeVerifier } from './pkce.js'

/**
 * The JWT bearer grant type Entra ID's on-behalf-of flow uses (RFC 7523 §2.1).
 *
 * @example
 * ```ts
 * if (params.get('grant_type') === JWT_BEARER_GRANT_TYPE) handleOnBehalfOf(params)
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7523#section-2.1
 */
export const JWT_BEARER_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
/**
 * The token exchange grant type.
 *
 * @example
 * ```ts
 * body.set('grant_type', TOKEN_EXCHANGE_GRANT_TYPE)
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc8693#section-2.1
 */
export const TOKEN_EXCHANGE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange'
/**
 * The token type identifier of an access token.
 *
 * @example
 * ```ts
 * await tokenExchangeGrant(server, client, { subjectToken, subjectTokenType: ACCESS_TOKEN_TYPE })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc8693#section-3
 */
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

function invalidArg(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_VALUE' })
}

function confidentialOnly(client: OAuthClient, grant: string, section: string): void {
  if ((client.auth?.method ?? 'none') === 'none') {
    throw invalidArg(`the ${grant} grant needs an authenticated (confidential) client (${section})`)
  }
}

/** Options of {@link clientCredentialsGrant}. */
export interface ClientCredentialsGrantOptions extends TokenRequestOptions {
  /** The scopes (Entra ID: exactly one `<resource>/.default`). */
  scopes: readonly string[]
  /** RFC 8707 resource indicator, for servers that take one. */
  resource?: string | undefined
  /** A claims request (compact JSON from `mergeClaims`): a claims challenge, client capabilities. */
  claims?: string | undefined
}

/**
 * Gets an app-only token with the client's own credentials (RFC 6749 §4.4.2).
 *
 * @param server - the authorization server.
 * @param client - a confidential client (secret or private_key_jwt).
 * @param options - scopes, resource, signal, clock, timeout.
 * @returns the token set (no refresh token: §4.4.3 says one SHOULD NOT be issued).
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for a public client (§4.4: "MUST only be used by
 *   confidential clients"); {@link OAuthServerError} (`invalid_client`, `invalid_scope`, ...);
 *   `ERR_UNAVAILABLE`; `ERR_INVALID_RESPONSE`.
 * @example
 * ```ts
 * const tokens = await clientCredentialsGrant(server, { clientId, auth: { method: 'client_secret_basic', clientSecret } }, {
 *   scopes: ['api://telemetry/.default'],
 * })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.4
 */
export async function clientCredentialsGrant(
  server: AuthorizationServer,
  client: OAuthClient,
  options: ClientCredentialsGrantOptions,
): Promise<TokenSet> {
  confidentialOnly(client, 'client_credentials', 'RFC 6749 §4.4')
  const body = new URLSearchParams({ grant_type: 'client_credentials' })
  if (options.scopes.length > 0) body.set('scope', options.scopes.join(' '))
  if (options.resource !== undefined) body.set('resource', options.resource)
  if (options.claims !== undefined) body.set('claims', options.claims)
  return requestTokens(server, client, body, { ...options, grant: 'other', requestedScopes: options.scopes })
}

/** Options of {@link authorizationCodeGrant}. */
export interface AuthorizationCodeGrantOptions extends TokenRequestOptions {
  /** The authorization code from the redirect (secret, single use). */
  code: string
  /** The redirect URI of the authorization request; RFC 6749 §4.1.3 requires the same value. */
  redirectUri: string
  /** The PKCE code_verifier whose challenge was sent (secret). */
  codeVerifier: string
  /** The scopes of the authorization request (the granted ones when the response has no `scope`). */
  scopes: readonly string[]
  /**
   * The `nonce` of the authorization request: the id_token must carry it, and must be present
   * (OpenID Connect Core §3.1.3.7 step 11).
   */
  expectedNonce?: string | undefined
  /** A claims request (compact JSON from `mergeClaims`), sent again at redemption as MSAL does. */
  claims?: string | undefined
}

/**
 * Redeems an authorization code with its PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.5).
 *
 * @param server - the authorization server.
 * @param client - the client (public, or confidential for web apps).
 * @param options - code, redirect URI, verifier, scopes, expected nonce, signal, clock, timeout.
 * @returns the token set, id_token verified (and its nonce checked when one was sent).
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for a malformed verifier; {@link OAuthServerError}
 *   (`invalid_grant` for a used, expired or foreign code or a wrong verifier: `ERR_OAUTH`);
 *   `ERR_JWT_INVALID` for a missing id_token or a nonce mismatch; `ERR_UNAVAILABLE`.
 * @example
 * ```ts
 * const { code } = validateAuthorizationResponse(callbackUrl, { expectedState: state, issuer: server.issuer })
 * const tokens = await authorizationCodeGrant(server, { clientId }, { code, redirectUri, codeVerifier, scopes, expectedNonce: nonce })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.5
 */
export async function authorizationCodeGrant(
  server: AuthorizationServer,
  client: OAuthClient,
  options: AuthorizationCodeGrantOptions,
): Promise<TokenSet> {
  assertCodeVerifier(options.codeVerifier)
  if (!isNonEmptyString(options.code)) throw invalidArg('code must be a non-empty string')
  const body = new URLSearchParams({
    grant_type: 'authorization_code',
    code: options.code,
    redirect_uri: options.redirectUri,
    code_verifier: options.codeVerifier,
  })
  if (server.dialect === 'entra') {
    // Entra ID's v2.0 endpoint takes the scopes again at redemption, and client_info for the account.
    if (options.scopes.length > 0) body.set('scope', options.scopes.join(' '))
    body.set('client_info', '1')
  }
  if (options.claims !== undefined) body.set('claims', options.claims)
  const tokens = await requestTokens(server, client, body, {
    ...options,
    grant: 'other',
    requestedScopes: options.scopes,
  })
  if (options.expectedNonce !== undefined) {
    if (tokens.idTokenClaims === undefined) {
      throw new EdgeTokenError('ERR_JWT_INVALID', 'token response has no id_token, but a nonce was sent')
    }
    // OpenID Connect Core §3.1.3.7 step 11: the nonce MUST equal the one sent.
    if (tokens.idTokenClaims.nonce !== options.expectedNonce) {
      throw new EdgeTokenError(
        'ERR_JWT_INVALID',
        'id_token verification failed: nonce does not match the request',
      )
    }
  }
  return tokens
}

/** Options of {@link onBehalfOfGrant}. */
export interface OnBehalfOfGrantOptions extends TokenRequestOptions {
  /** The access token the middle-tier API received (its audience is this client). Secret. */
  assertion: string
  /** The downstream scopes (`api://downstream/.default` or named scopes). */
  scopes: readonly string[]
}

/**
 * Entra ID's on-behalf-of flow: a middle-tier API trades the user's access token it received for
 * one to a downstream API, as the same user (`grant_type` JWT bearer, `requested_token_use=on_behalf_of`).
 *
 * @param server - an Entra ID authorization server.
 * @param client - the middle-tier API as a confidential client.
 * @param options - the incoming token, downstream scopes, signal, clock, timeout.
 * @returns the downstream token set.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for a public client or a non-Entra server (use
 *   {@link tokenExchangeGrant}); {@link OAuthServerError} (`invalid_grant` when the incoming token
 *   is expired or foreign, `interaction_required` when the user must satisfy MFA or consent).
 * @example
 * ```ts
 * const tokens = await onBehalfOfGrant(server, client, { assertion: incomingAccessToken, scopes: ['https://graph.microsoft.com/.default'] })
 * ```
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
 * @see https://www.rfc-editor.org/rfc/rfc7523#section-2.1
 */
export async function onBehalfOfGrant(
  server: AuthorizationServer,
  client: OAuthClient,
  options: OnBehalfOfGrantOptions,
): Promise<TokenSet> {
  if (server.dialect !== 'entra') {
    throw invalidArg('the on-behalf-of grant is Entra ID only; use tokenExchangeGrant (RFC 8693) elsewhere')
  }
  confidentialOnly(client, 'on-behalf-of', 'Entra ID')
  if (!isNonEmptyString(options.assertion)) throw invalidArg('assertion must be a non-empty string')
  const body = new URLSearchParams({
    grant_type: JWT_BEARER_GRANT_TYPE,
    assertion: options.assertion,
    requested_token_use: 'on_behalf_of',
    scope: options.scopes.join(' '),
    client_info: '1',
  })
  return requestTokens(server, client, body, { ...options, grant: 'other', requestedScopes: options.scopes })
}

/** Options of {@link tokenExchangeGrant}. */
export interface TokenExchangeGrantOptions extends TokenRequestOptions {
  /** The token that represents the subject (e.g. the incoming access token). Secret. */
  subjectToken: string
  /** Its RFC 8693 §3 type. Default {@link ACCESS_TOKEN_TYPE}. */
  subjectTokenType?: string | undefined
  /** A token that represents the acting party (delegation, §1.1). Secret. */
  actorToken?: string | undefined
  /** Its type; required with `actorToken` (§2.1). */
  actorTokenType?: string | undefined
  /** RFC 8707 resource(s) the token is for. */
  resource?: string | readonly string[] | undefined
  /** Logical name(s) of the target service (§2.1 `audience`). */
  audience?: string | readonly string[] | undefined
  /** The scopes asked for. Default none. */
  scopes?: readonly string[] | undefined
}

/** A token set from {@link tokenExchangeGrant}, with the RFC 8693 `issued_token_type`. */
export interface TokenExchangeResult extends TokenSet {
  /** RFC 8693 §2.2.1 `issued_token_type` (an access token: {@link ACCESS_TOKEN_TYPE}). */
  readonly issuedTokenType: string
}

/**
 * OAuth 2.0 Token Exchange (RFC 8693 §2.1): trades a subject token (and optionally an actor token)
 * for an access token to another resource; the standard counterpart of Entra ID's on-behalf-of.
 * Only access tokens are asked for (`requested_token_type` = access_token), so the response is an
 * RFC 6749 §5.1 bearer token response plus `issued_token_type`.
 *
 * @param server - the authorization server.
 * @param client - the client (usually confidential).
 * @param options - subject and actor tokens, resource, audience, scopes, signal, clock, timeout.
 * @returns the token set and `issuedTokenType`.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for an actor token without its type;
 *   {@link OAuthServerError} (`invalid_request`, `invalid_target`, ...); {@link InvalidResponseError}
 *   when `issued_token_type` is missing or not an access token.
 * @example
 * ```ts
 * const tokens = await tokenExchangeGrant(server, client, {
 *   subjectToken: incomingAccessToken, audience: 'https://downstream.example', scopes: ['read'],
 * })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc8693#section-2.1
 * @see https://www.rfc-editor.org/rfc/rfc8693#section-2.2.1
 */
export async function tokenExchangeGrant(
  server: AuthorizationServer,
  client: OAuthClient,
  options: TokenExchangeGrantOptions,
): Promise<TokenExchangeResult> {
  if (!isNonEmptyString(options.subjectToken)) throw invalidArg('subjectToken must be a non-empty string')
  // RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present, and MUST NOT be otherwise.
  if ((options.actorToken === undefined) !== (options.actorTokenType === undefined)) {
    throw invalidArg('actorToken and actorTokenType go together (RFC 8693 §2.1)')
  }
  const scopes = options.scopes ?? []
  const body = new URLSearchParams({
    grant_type: TOKEN_EXCHANGE_GRANT_TYPE,
    subject_token: options.subjectToken,
    subject_token_type: options.subjectTokenType ?? ACCESS_TOKEN_TYPE,
    requested_token_type: ACCESS_TOKEN_TYPE,
  })
  if (options.actorToken !== undefined && options.actorTokenType !== undefined) {
    body.set('actor_token', options.actorToken)
    body.set('actor_token_type', options.actorTokenType)
  }
  for (const resource of [options.resource ?? []].flat()) body.append('resource', resource)
  for (const audience of [options.audience ?? []].flat()) body.append('audience', audience)
  if (scopes.length > 0) body.set('scope', scopes.join(' '))

  const response = await sendTokenRequest(server, client, body, options)
  const tokens = await processTokenResponse(server, response, {
    grant: 'other',
    requestedScopes: scopes,
    clientId: client.clientId,
    now: options.now,
    signal: options.signal,
  })
  // Parsed again only for the one field RFC 8693 adds; the shared checks above already passed.
  const parsed = readJson(response, 'token response')
  const issued = isObject(parsed) ? parsed.issued_token_type : undefined
  if (issued !== ACCESS_TOKEN_TYPE) {
    throw new InvalidResponseError(
      isNonEmptyString(issued)
        ? 'token response: issued_token_type is not an access token (RFC 8693 §2.2.1)'
        : 'token response: issued_token_type is missing (RFC 8693 §2.2.1)',
      { status: response.status },
    )
  }
  return Object.freeze({ ...tokens, issuedTokenType: issued })
}
