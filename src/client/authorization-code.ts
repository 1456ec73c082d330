/**
 * The authorization code flow both library clients share: the request (PKCE S256, `state`,
 * `nonce`, the client's capabilities merged into `claims`) and its completion (the response
 * checked before the code is redeemed, the id_token's nonce after). The clients differ only in how
 * they authenticate and where the response arrives (a loopback URL, a `form_post` body).
 *
 * @internal
 * @packageDocumentation
 */
import type { AuthorizationServer } from '../oauth/authority.js'
import { mergeClaims } from '../oauth/claims.js'
import { authorizationCodeGrant } from '../oauth/grants/grants.js'
import {
  buildAuthorizationUrl,
  codeChallengeS256,
  generateCodeVerifier,
  generateNonce,
  generateState,
  validateAuthorizationResponse,
  validateFormPostResponse,
} from '../oauth/grants/pkce.js'
import { signInScopes } from '../oauth/scopes.js'
import { accountFromTokenSet } from '../oauth/tokens.js'
import type { Account, OAuthClient, TokenSet } from '../oauth/types.js'

/** What a client asks of {@link startAuthorization}. */
export interface AuthorizationStart {
  /** The scopes; `openid`, `profile` and `offline_access` are added. */
  readonly scopes: readonly string[]
  /** The registered redirect URI. */
  readonly redirectUri: string
  /** OpenID Connect `prompt`. */
  readonly prompt?: string | undefined
  /** OpenID Connect `login_hint`. */
  readonly loginHint?: string | undefined
  /** A claims request (JSON). */
  readonly claims?: string | undefined
  /** `response_mode`, when not the default (query). */
  readonly responseMode?: 'query' | 'form_post' | undefined
}

/** A pending request: what both clients' request types hold. */
export interface PendingAuthorization {
  readonly url: string
  readonly redirectUri: string
  readonly scopes: readonly string[]
  readonly state: string
  readonly nonce: string
  readonly codeVerifier: string
  readonly claims?: string | undefined
  readonly responseMode?: 'query' | 'form_post' | undefined
}

/**
 * Builds an authorization request with fresh PKCE verifier, `state` and `nonce`.
 *
 * @param server - the authorization server.
 * @param clientId - the client id.
 * @param options - scopes, redirect URI, prompt, login hint, claims, response mode.
 * @param clientCapabilities - merged into `claims` as `xms_cc`.
 * @returns the frozen request (its verifier is secret).
 * @throws as `buildAuthorizationUrl`.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.1
 * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.3
 */
export function startAuthorization(
  server: AuthorizationServer,
  clientId: string,
  options: AuthorizationStart,
  clientCapabilities: readonly string[] | undefined,
): PendingAuthorization {
  const scopes = signInScopes(options.scopes)
  const codeVerifier = generateCodeVerifier()
  const state = generateState()
  const nonce = generateNonce()
  const claims = mergeClaims(options.claims, clientCapabilities)
  const url = buildAuthorizationUrl(server, {
    clientId,
    redirectUri: options.redirectUri,
    scopes,
    state,
    nonce,
    codeChallenge: codeChallengeS256(codeVerifier),
    prompt: options.prompt,
    loginHint: options.loginHint,
    claims,
    responseMode: options.responseMode,
  })
  return Object.freeze({
    url: url.href,
    redirectUri: options.redirectUri,
    ...(options.responseMode === undefined ? {} : { responseMode: options.responseMode }),
    scopes,
    state,
    nonce,
    codeVerifier,
    claims,
  })
}

/** What {@link redeemAuthorization} returns: the sign-in and when its token request was sent. */
export interface RedeemedAuthorization {
  readonly tokens: TokenSet
  readonly account: Account
  /** Epoch ms, for the cache entry's `obtainedAt`. */
  readonly requestedAt: number
}

/**
 * Checks an authorization response (`iss` when sent, then `state`: RFC 9207, RFC 6749 §4.1.2) and
 * redeems its code with the PKCE verifier, checking the id_token's nonce.
 *
 * @param server - the authorization server.
 * @param client - the client (and its authentication).
 * @param request - the pending request.
 * @param response - the redirect URL (query), or the POST body (`form_post`).
 * @param options - signal, clock, timeout.
 * @returns the tokens, the account and the request time.
 * @throws InvalidResponseError for a state or issuer mismatch (the code is not redeemed);
 *   OAuthServerError; `ERR_JWT_INVALID`.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3
 * @see https://openid.net/specs/oauth-v2-form-post-response-mode-1_0.html
 */
export async function redeemAuthorization(
  server: AuthorizationServer,
  client: OAuthClient,
  request: PendingAuthorization,
  response: string | URL | URLSearchParams,
  options: {
    signal?: AbortSignal | undefined
    now?: (() => number) | undefined
    timeoutMs?: number | undefined
  },
): Promise<RedeemedAuthorization> {
  const checks = { expectedState: request.state, issuer: server.issuer, redirectUri: request.redirectUri }
  const { code } =
    request.responseMode === 'form_post'
      ? validateFormPostResponse(response instanceof URL ? response.search : response, checks)
      : validateAuthorizationResponse(response instanceof URLSearchParams ? '' : response, checks)
  const requestedAt = (options.now ?? Date.now)()
  const tokens = await authorizationCodeGrant(server, client, {
    code,
    redirectUri: request.redirectUri,
    codeVerifier: request.codeVerifier,
    scopes: request.scopes,
    expectedNonce: request.nonce,
    claims: request.claims,
    signal: options.signal,
    now: options.now,
    timeoutMs: options.timeoutMs,
  })
  return { tokens, account: accountFromTokenSet(server, client.clientId, tokens), requestedAt }
}
