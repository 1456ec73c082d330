/**
 * The refresh token grant (RFC 6749 §6) and token revocation (RFC 7009).
 *
 * @packageDocumentation
 */
import { type EdgeTokenError, InvalidResponseError, OAuthServerError } from '../../errors.js'
import { isObject } from '../../lib/validate.js'
import type { AuthorizationServer } from '../authority.js'
import { applyClientAuth } from '../client-auth.js'
import { type HttpResponse, httpRequest } from '../http.js'
import { requestTokens, type TokenRequestOptions } from '../token-request.js'
import { errorFromResponse } from '../tokens.js'
import type { OAuthClient, TokenSet } from '../types.js'

/** Options of {@link refreshTokenGrant} and {@link revokeToken}. */
export interface RefreshOptions extends TokenRequestOptions {
  /**
   * A claims request to satisfy (compact JSON from `mergeClaims`: a claims challenge and/or client
   * capabilities), sent as the `claims` parameter. Refresh only; {@link revokeToken} ignores it.
   *
   * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
   */
  claims?: string | undefined
  /**
   * The account's stored ID token claims (`idTokenClaims` of the sign-in, or of the last refresh).
   * With them, an id_token in the answer must keep the account's `iss`, `sub`, `aud`, `azp` and
   * `auth_time` with a new `iat` (OpenID Connect Core §12.2), and over an https token endpoint is
   * checked without its signature (§3.1.3.7 item 6: the TLS server validation stands in for it).
   * Without them, it is verified with its signature, as a sign-in's. Refresh only.
   *
   * @see https://openid.net/specs/openid-connect-core-1_0.html#RefreshTokenResponse
   */
  originalIdTokenClaims?: Readonly<Record<string, unknown>> | undefined
}

/**
 * Exchanges a refresh token for a new token set (RFC 6749 §6). When the server does not rotate
 * (no `refresh_token` in the response), the token set carries the refresh token that was used, which
 * stays valid (§6: "the client MUST NOT assume" a new one is issued).
 *
 * @param server - the authorization server.
 * @param client - the client.
 * @param refreshToken - the refresh token (secret).
 * @param scopes - the scopes to ask for (empty: the originally granted ones).
 * @param options - claims, signal, clock, timeout.
 * @returns the new token set (id_token checked when sent, see `originalIdTokenClaims`; when its
 *   signing keys cannot be fetched the id_token is dropped and `warning` says so, so a rotated
 *   refresh token is never lost).
 * @throws {@link OAuthServerError} with `ERR_SIGNIN_REQUIRED` on `invalid_grant` (expired, revoked or
 *   reused refresh token) and, when claims were asked for, on `interaction_required` (the claims
 *   need the user: MFA, a compliant device; a new sign-in with them); `ERR_OAUTH` otherwise;
 *   `ERR_UNAVAILABLE`; `ERR_INVALID_RESPONSE`.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
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
  if (options.claims !== undefined) body.set('claims', options.claims)
  let tokens: TokenSet
  try {
    tokens = await requestTokens(server, client, body, {
      grant: 'refresh_token',
      requestedScopes: scopes,
      now: options.now,
      signal: options.signal,
      timeoutMs: options.timeoutMs,
      sleep: options.sleep,
      dpop: options.dpop,
      originalIdTokenClaims: options.originalIdTokenClaims,
    })
  } catch (err) {
    throw options.claims === undefined ? err : claimsNotMet(err)
  }
  return tokens.refreshToken === undefined ? Object.freeze({ ...tokens, refreshToken }) : tokens
}

/**
 * A refresh asked for claims and the server wants the user for them (`interaction_required`:
 * MFA, a compliant device, a new sign-in): the refresh token cannot satisfy the challenge, so the
 * answer is "sign in again", as `invalid_grant` already is.
 */
function claimsNotMet(err: unknown): unknown {
  if (!(err instanceof OAuthServerError) || err.code === 'ERR_SIGNIN_REQUIRED') return err
  if (err.error !== 'interaction_required') return err
  return new OAuthServerError('ERR_SIGNIN_REQUIRED', err.error, {
    status: err.status,
    errorDescription: err.errorDescription,
    errorUri: err.errorUri,
    body: err.body,
    cause: err,
    message: `${err.message}; the claims challenge needs a new sign-in`,
  })
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
  const err = revocationError(response)
  // RFC 7009 §2.2.1: a server that cannot revoke this token type says so; nothing more to do.
  if (err instanceof OAuthServerError && err.error === 'unsupported_token_type') return false
  throw err
}

/**
 * The error of a failed revocation request. A body that is no OAuth error at all (a 401 with an
 * empty body, a proxy's text page) is reported by its status first: "answered 401 with an empty
 * body" says what happened, where "content-type "", not JSON" only says what did not.
 */
function revocationError(response: HttpResponse): EdgeTokenError {
  const what = 'revocation request'
  try {
    return errorFromResponse(response, what, 'other')
  } catch (err) {
    if (!(err instanceof InvalidResponseError)) throw err
    const { status } = response
    const prefix = `${what}: ${response.url.host} answered `
    const detail =
      response.body.trim() === ''
        ? 'with an empty body'
        : err.message.startsWith(prefix)
          ? err.message.slice(prefix.length)
          : 'without an OAuth error'
    return new InvalidResponseError(`${prefix}${status} ${detail}`.replace(/[^\x20-\x7e]/g, ''), {
      status,
      body: response.body,
      cause: err,
    })
  }
}

/**
 * Whether a revocation endpoint accepts the client's authentication method, judged from the
 * discovery document's `revocation_endpoint_auth_methods_supported` (RFC 8414 §2). A public
 * client authenticates with `none` (RFC 7009 §2.1 asks public clients to send `client_id` only);
 * when the server lists its methods without it, a revocation request can only fail, so the caller
 * should not send the refresh token there.
 *
 * RFC 8414 §2 makes `client_secret_basic` the default when the list is omitted, but servers that
 * revoke public clients' tokens often omit it: only a list that is present (and not empty) rules a
 * client out, and a malformed one is ignored (the request then says what the server thinks).
 *
 * @param metadata - the discovery document (`unknown`: it is read, not trusted).
 * @param client - the client and its authentication method (default `none`).
 * @returns false when the document lists methods and the client's is not among them.
 * @see https://www.rfc-editor.org/rfc/rfc8414#section-2
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 */
export function revocationAcceptsClient(metadata: unknown, client: OAuthClient): boolean {
  const methods = isObject(metadata) ? metadata.revocation_endpoint_auth_methods_supported : undefined
  if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string')) {
    return true
  }
  return methods.includes(client.auth?.method ?? 'none')
}
