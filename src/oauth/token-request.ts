/**
 * One token endpoint request (RFC 6749 §3.2): "send" adds the client's authentication and posts
 * the form, "process" validates the response. Every grant goes through here (the device-code poll
 * sends through it and keeps its own network back-off, RFC 8628 §3.5), and with it the DPoP proof
 * and the one retry after `use_dpop_nonce` (RFC 9449 §5, §8).
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-3.2
 * @packageDocumentation
 */
import { isObject, parseJson } from '../lib/validate.js'
import type { AuthorizationServer } from './authority.js'
import { applyClientAuth } from './client-auth.js'
import type { DPoPHandle } from './dpop.js'
import { type HttpResponse, httpRequest, responseHeader } from './http.js'
import type { SleepFunction } from './retry.js'
import { type GrantKind, type ProcessTokenResponseOptions, processTokenResponse } from './tokens.js'
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
  /**
   * Sends a DPoP proof of this key with the request (RFC 9449 §5), so the tokens are bound to it;
   * a `use_dpop_nonce` answer is retried once with the server's nonce (§8).
   */
  dpop?: DPoPHandle | undefined
}

/** Options of {@link requestTokens}. */
export interface RequestTokensOptions extends TokenRequestOptions {
  /** The grant, for the error mapping (`invalid_grant` on a refresh means "sign in again"). */
  grant: GrantKind
  /** The scopes requested: the granted ones when the response has no `scope` (RFC 6749 §3.3). */
  requestedScopes: readonly string[]
  /**
   * A refresh only: the account's stored ID token claims, to hold a refreshed id_token to (OpenID
   * Connect Core §12.2); see {@link ProcessTokenResponseOptions.originalIdTokenClaims}.
   */
  originalIdTokenClaims?: Readonly<Record<string, unknown>> | undefined
}

/**
 * Whether a token endpoint answer asks for a DPoP nonce: 400 `{"error":"use_dpop_nonce"}` (RFC 9449 §8).
 */
function asksForNonce(response: HttpResponse): boolean {
  if (response.status !== 400) return false
  const body = parseJson(response.body)
  return isObject(body) && body.error === 'use_dpop_nonce'
}

/**
 * Sends a token request: adds the client's authentication (RFC 6749 §2.3) to `body` and POSTs it
 * to the token endpoint. The response is not checked. With `options.dpop`, each request carries
 * a fresh DPoP proof, and a `use_dpop_nonce` answer that brings a new nonce is sent once more
 * (a fresh client assertion and proof; the grant is not consumed by an answer asking for a nonce).
 *
 * @param server - the authorization server.
 * @param client - the client and its authentication.
 * @param body - the grant parameters (`grant_type` and the grant's own); completed in place.
 * @param options - signal, clock, timeout, DPoP key.
 * @returns the raw response (the retry's, after a `use_dpop_nonce`).
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-8
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
  const { dpop } = options
  const grant = new URLSearchParams(body)
  const send = async (form: URLSearchParams): Promise<HttpResponse> => {
    const headers: Record<string, string> = {}
    await applyClientAuth(client, server.tokenEndpoint, form, headers, { now: options.now })
    if (dpop) headers.dpop = await dpop.proof({ method: 'POST', url: server.tokenEndpoint })
    return httpRequest(server.tokenEndpoint, {
      body: form,
      headers,
      signal: options.signal,
      timeoutMs: options.timeoutMs,
    })
  }
  const first = await send(body)
  if (!dpop) return first
  const fresh = dpop.rememberNonce(server.tokenEndpoint, responseHeader(first, 'dpop-nonce'))
  // RFC 9449 §8: one retry with the nonce; a second refusal is the server's final answer.
  if (!fresh || !asksForNonce(first)) return first
  const second = await send(grant)
  dpop.rememberNonce(server.tokenEndpoint, responseHeader(second, 'dpop-nonce'))
  return second
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
    dpop: options.dpop !== undefined,
    originalIdTokenClaims: options.originalIdTokenClaims,
  })
}
