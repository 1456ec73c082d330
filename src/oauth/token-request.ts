/**
 * One token endpoint request (RFC 6749 §3.2): "send" adds the client's authentication and posts
 * the form, "process" validates the response. Every grant except the device-code poll (which
 * needs its own network back-off, RFC 8628 §3.5) goes through here.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-3.2
 * @packageDocumentation
 */
import type { AuthorizationServer } from './authority.js'
import { applyClientAuth } from './client-auth.js'
import { type HttpResponse, httpRequest } from './http.js'
import type { SleepFunction } from './retry.js'
import { type GrantKind, processTokenResponse } from './tokens.js'
import type { OAuthClient, TokenSet } from './types.js'

/** Options every grant function takes. */
export interface TokenRequestOptions {
  /** Cancels the request (and a JWKS fetch for the id_token). */
  signal?: AbortSignal | undefined
  /** The clock, epoch ms (assertion `iat`, `expiresAt`). Default `Date.now`. */
  now?: (() => number) | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /** Waits between JWKS fetch attempts for the id_token; inject for tests. Default: a timer. */
  sleep?: SleepFunction | undefined
}

/** Options of {@link requestTokens}. */
export interface RequestTokensOptions extends TokenRequestOptions {
  /** The grant, for the error mapping (`invalid_grant` on a refresh means "sign in again"). */
  grant: GrantKind
  /** The scopes requested: the granted ones when the response has no `scope` (RFC 6749 §3.3). */
  requestedScopes: readonly string[]
}

/**
 * Sends a token request: adds the client's authentication (RFC 6749 §2.3) to `body` and POSTs it
 * to the token endpoint. The response is not checked.
 *
 * @param server - the authorization server.
 * @param client - the client and its authentication.
 * @param body - the grant parameters (`grant_type` and the grant's own); completed in place.
 * @param options - signal, clock, timeout.
 * @returns the raw response.
 * @throws EdgeTokenError `ERR_UNAVAILABLE` (network), `ERR_CANCELLED`, `ERR_CONFIG` (unusable key).
 * @example
 * ```ts
 * const response = await sendTokenRequest(server, client, new URLSearchParams({ grant_type: 'client_credentials' }))
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-3.2
 */
export async function sendTokenRequest(
  server: AuthorizationServer,
  client: OAuthClient,
  body: URLSearchParams,
  options: TokenRequestOptions = {},
): Promise<HttpResponse> {
  const headers: Record<string, string> = {}
  await applyClientAuth(client, server.tokenEndpoint, body, headers, { now: options.now })
  return httpRequest(server.tokenEndpoint, {
    body,
    headers,
    signal: options.signal,
    timeoutMs: options.timeoutMs,
  })
}

/**
 * Sends a token request and validates the response (RFC 6749 §5.1/§5.2), verifying an id_token
 * when one is sent.
 *
 * @param server - the authorization server.
 * @param client - the client and its authentication.
 * @param body - the grant parameters; completed in place with the client's authentication.
 * @param options - grant kind, requested scopes, signal, clock, timeout.
 * @returns the validated token set.
 * @throws {@link OAuthServerError} for an error response; `ERR_UNAVAILABLE`; `ERR_INVALID_RESPONSE`;
 *   `ERR_JWT_INVALID`.
 * @example
 * ```ts
 * const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token })
 * const tokens = await requestTokens(server, client, body, { grant: 'refresh_token', requestedScopes: [] })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.1
 */
export async function requestTokens(
  server: AuthorizationServer,
  client: OAuthClient,
  body: URLSearchParams,
  options: RequestTokensOptions,
): Promise<TokenSet> {
  const response = await sendTokenRequest(server, client, body, options)
  return processTokenResponse(server, response, {
    grant: options.grant,
    requestedScopes: options.requestedScopes,
    clientId: client.clientId,
    now: options.now,
    signal: options.signal,
    sleep: options.sleep,
  })
}
