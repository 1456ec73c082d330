/**
 * The refresh token grant (RFC 6749 §6) and token revocation (RFC 7009).
 *
 * @packageDocumentation
 */
import { OAuthServerError } from '../errors.js'
import type { AuthorizationServer } from './authority.js'
import { applyClientAuth } from './client-auth.js'
import { httpRequest } from './http.js'
import { requestTokens, type TokenRequestOptions } from './token-request.js'
import { errorFromResponse } from './tokens.js'
import type { OAuthClient, TokenSet } from './types.js'

/** Options of {@link refreshTokenGrant} and {@link revokeToken}. */
export interface RefreshOptions extends TokenRequestOptions {}

/**
 * Exchanges a refresh token for a new token set (RFC 6749 §6). When the server does not rotate
 * (no `refresh_token` in the response), the token set carries the refresh token that was used, which
 * stays valid (§6: "the client MUST NOT assume" a new one is issued).
 *
 * @param server - the authorization server.
 * @param client - the client.
 * @param refreshToken - the refresh token (secret).
 * @param scopes - the scopes to ask for (empty: the originally granted ones).
 * @param options - signal, clock, timeout.
 * @returns the new token set (id_token verified when sent; when its signing keys cannot be fetched
 *   the id_token is dropped and `warning` says so, so a rotated refresh token is never lost).
 * @throws {@link OAuthServerError} with `ERR_SIGNIN_REQUIRED` on `invalid_grant` (expired, revoked or
 *   reused refresh token), `ERR_OAUTH` otherwise; `ERR_UNAVAILABLE`; `ERR_INVALID_RESPONSE`.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
 */
export async function refreshTokenGrant(
  server: AuthorizationServer,
  client: OAuthClient,
  refreshToken: string,
  scopes: readonly string[],
  options: RefreshOptions = {},
): Promise<TokenSet> {
  const body = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken })
  if (scopes.length > 0) body.set('scope', scopes.join(' '))
  if (server.dialect === 'entra') body.set('client_info', '1')
  const tokens = await requestTokens(server, client, body, {
    grant: 'refresh_token',
    requestedScopes: scopes,
    now: options.now,
    signal: options.signal,
    timeoutMs: options.timeoutMs,
    sleep: options.sleep,
  })
  return tokens.refreshToken === undefined ? Object.freeze({ ...tokens, refreshToken }) : tokens
}

/**
 * Revokes a token at the server's revocation endpoint (RFC 7009). Revoking a refresh token also
 * ends the grant's access tokens at most servers.
 *
 * @param server - the authorization server.
 * @param client - the client the token was issued to.
 * @param token - the token to revoke (secret).
 * @param hint - RFC 7009 §2.1 `token_type_hint`.
 * @param options - signal, clock, timeout.
 * @returns true when revoked (or already invalid: §2.2 answers 200 either way), false when the
 *   server has no revocation endpoint.
 * @throws {@link OAuthServerError} for an error response; `ERR_UNAVAILABLE` for 429/5xx and network.
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2
 */
export async function revokeToken(
  server: AuthorizationServer,
  client: OAuthClient,
  token: string,
  hint: 'refresh_token' | 'access_token',
  options: RefreshOptions = {},
): Promise<boolean> {
  const endpoint = server.revocationEndpoint
  if (!endpoint) return false
  const body = new URLSearchParams({ token, token_type_hint: hint })
  const headers: Record<string, string> = {}
  await applyClientAuth(client, endpoint, body, headers, { now: options.now })
  const response = await httpRequest(endpoint, {
    body,
    headers,
    signal: options.signal,
    timeoutMs: options.timeoutMs,
  })
  if (response.status === 200) return true
  const err = errorFromResponse(response, 'revocation request', 'other')
  // RFC 7009 §2.2.1: a server that cannot revoke this token type says so; nothing more to do.
  if (err instanceof OAuthServerError && err.error === 'unsupported_token_type') return false
  throw err
}
