/**
 * `PublicClient`: the library face of the device flow for a public client (a device, a CLI), in
 * the spirit of MSAL's `PublicClientApplication` but exact to RFC 8628. A thin layer over
 * `oauth/`: it resolves the authority once, adds the sign-in scopes, and keeps each signed-in
 * account in its token cache for {@link PublicClient.acquireTokenSilent}.
 *
 * @packageDocumentation
 */
import { type AuthorizationServer, parseAuthority } from '../oauth/authority.js'
import { mergeClaims } from '../oauth/claims.js'
import {
  type DeviceAuthorization,
  type PollDeviceAuthorizationOptions,
  pollDeviceAuthorization,
  startDeviceAuthorization,
} from '../oauth/grants/device.js'
import { type RefreshOptions, refreshTokenGrant, revokeToken } from '../oauth/grants/refresh.js'
import { signInScopes } from '../oauth/scopes.js'
import { accountFromTokenSet } from '../oauth/tokens.js'
import type { Account, MetadataCache, OAuthClient, TokenSet } from '../oauth/types.js'
import { MemoryTokenCache } from '../store/partitions/memory.js'
import {
  type AccountTokenResult,
  type AcquireAccountTokenOptions,
  TokenCacheEngine,
} from '../store/partitions/silent.js'
import type { TokenCache } from '../store/partitions/token-cache.js'
import { redeemAuthorization, startAuthorization } from './authorization-code.js'
import { authorityResolver } from './resolver.js'
import { TokenCacheClient } from './token-cache-client.js'

/** Options of {@link PublicClient}. */
export interface PublicClientOptions {
  /** The authority: an issuer URL, or `https://login.microsoftonline.com/<tenant>` (Entra ID). */
  authority: string
  /** The registered client_id. */
  clientId: string
  /** Where discovery documents are cached (the CLI passes the state directory's cache). */
  metadataCache?: MetadataCache | undefined
  /**
   * Where signed-in accounts and their tokens are kept: {@link MemoryTokenCache} (the default, a
   * new one per client), `FileTokenCache` (the encrypted store file), `RedisTokenCache` (several
   * instances).
   */
  cache?: TokenCache | undefined
  /**
   * How long a refresh token lasts when the token response does not say
   * (`refresh_token_expires_in`), seconds: the cache keeps an account that long. Default 90 days
   * (Entra ID's default).
   */
  refreshTokenLifetimeSeconds?: number | undefined
  /** How long discovery documents are cached, seconds. Default 86400. */
  cacheTtlSeconds?: number | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /**
   * Client capabilities (`cp1`: Entra ID issues Continuous Access Evaluation tokens), sent as the
   * `xms_cc` claims request with authorization code sign-ins and refreshes. Default none.
   * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
   */
  clientCapabilities?: readonly string[] | undefined
}

/** Options of {@link PublicClient.startDeviceFlow}. */
export interface StartDeviceFlowOptions {
  /** The scopes; `openid` and `offline_access` are added when absent. */
  scopes: readonly string[]
  /** Cancels discovery and the device authorization request. */
  signal?: AbortSignal | undefined
}

/** The outcome of an approved device flow. */
export interface SignInResult {
  /** The validated tokens. */
  tokens: TokenSet
  /** The signed-in account (from client_info or the verified id_token). */
  account: Account
}

/** A started device flow: what to show the user, and `poll()` to wait for the outcome. */
export interface DeviceFlow extends DeviceAuthorization {
  /**
   * Polls until approved (RFC 8628 §3.5); see `pollDeviceAuthorization` for the rules.
   *
   * @param options - signal (cancel), and sleep/clock injection for tests.
   * @returns the tokens and account.
   * @throws EdgeTokenError `ERR_ACCESS_DENIED`, `ERR_EXPIRED`, `ERR_CANCELLED`, `ERR_UNAVAILABLE`, ...
   */
  poll(options?: PollDeviceAuthorizationOptions): Promise<SignInResult>
}

/** Options of {@link PublicClient.getAuthorizationUrl}. */
export interface GetAuthorizationUrlOptions {
  /** The scopes; `openid` and `offline_access` are added when absent. */
  scopes: readonly string[]
  /** The registered redirect URI (e.g. `http://127.0.0.1:8400/cb`, RFC 8252 §7.3). */
  redirectUri: string
  /**
   * OpenID Connect `prompt`. Providers that follow OpenID Connect Core §11 strictly (e.g.
   * oidc-provider) issue a refresh token for `offline_access` only with `consent`; Entra ID does not
   * need it.
   */
  prompt?: string | undefined
  /** OpenID Connect `login_hint`. */
  loginHint?: string | undefined
  /** A claims request (JSON), e.g. from an API's claims challenge; sent again at redemption. */
  claims?: string | undefined
  /** Cancels discovery. */
  signal?: AbortSignal | undefined
}

/** Options of {@link PublicClient.acquireTokenByCode}. */
export interface AcquireTokenByCodeOptions {
  /** Cancels discovery, the token request and a JWKS fetch. */
  signal?: AbortSignal | undefined
}

/**
 * A pending authorization code request: open `url` in a browser, keep the rest until the redirect
 * comes back. `codeVerifier` is a secret: keep it in memory (or encrypted), never log it.
 */
export interface AuthorizationRequest {
  /** The authorization URL to open. */
  readonly url: string
  /** The redirect URI it names. */
  readonly redirectUri: string
  /** The scopes it asks for. */
  readonly scopes: readonly string[]
  /** The `state` it carries (RFC 6749 §10.12). */
  readonly state: string
  /** The OpenID Connect `nonce` it carries. */
  readonly nonce: string
  /** The PKCE code_verifier (RFC 7636 §4.1). Secret. */
  readonly codeVerifier: string
  /** The claims request sent (a challenge's and the client capabilities), if any. */
  readonly claims?: string | undefined
}

/**
 * A public OAuth client that signs in with the device authorization grant, or with the
 * authorization code grant and PKCE when a browser is available somewhere.
 *
 * @example
 * ```ts
 * const client = new PublicClient({ authority: 'https://login.microsoftonline.com/contoso.com', clientId })
 * const flow = await client.startDeviceFlow({ scopes: ['api://telemetry/.default'] })
 * console.error(flow.message ?? `Open ${flow.verificationUri} and enter ${flow.userCode}`)
 * const { tokens, account } = await flow.poll({ signal })
 * ```
 */
export class PublicClient extends TokenCacheClient {
  readonly #options: PublicClientOptions
  readonly #client: OAuthClient
  readonly #resolve: (signal?: AbortSignal) => Promise<AuthorizationServer>

  /**
   * @param options - authority, client id, token cache, metadata cache.
   * @throws ConfigError `ERR_INSECURE_URL` for a plain-http non-loopback authority, `ERR_CONFIG` for a malformed one.
   */
  constructor(options: PublicClientOptions) {
    parseAuthority(options.authority)
    super(
      new TokenCacheEngine({
        cache: options.cache ?? new MemoryTokenCache(),
        authority: options.authority,
        clientId: options.clientId,
        timeoutMs: options.timeoutMs,
        refreshTokenLifetimeSeconds: options.refreshTokenLifetimeSeconds,
      }),
    )
    this.#options = Object.freeze({ ...options })
    this.#resolve = authorityResolver(this.#options)
    this.#client = Object.freeze({ clientId: options.clientId, auth: { method: 'none' } as const })
  }

  /** The authority this client signs in with. */
  get authority(): string {
    return this.#options.authority
  }

  /** The client_id. */
  get clientId(): string {
    return this.#options.clientId
  }

  /**
   * Resolves the authority (discovery, cached); a failure is not remembered, so a later call retries.
   *
   * @param signal - cancels discovery.
   * @returns the authorization server.
   */
  resolve(signal?: AbortSignal): Promise<AuthorizationServer> {
    return this.#resolve(signal)
  }

  /**
   * Starts a device authorization (RFC 8628 §3.1).
   *
   * @param options - scopes and signal.
   * @returns the flow: fields to display and `poll()`.
   */
  async startDeviceFlow(options: StartDeviceFlowOptions): Promise<DeviceFlow> {
    const server = await this.resolve(options.signal)
    const flow = await startDeviceAuthorization(server, this.#client, signInScopes(options.scopes), {
      signal: options.signal,
      timeoutMs: this.#options.timeoutMs,
    })
    const client = this.#client
    const timeoutMs = this.#options.timeoutMs
    const scopes = flow.scopes
    const poll = async (pollOptions: PollDeviceAuthorizationOptions = {}): Promise<SignInResult> => {
      const tokens = await pollDeviceAuthorization(server, client, flow, { timeoutMs, ...pollOptions })
      // The polls took minutes: the request that got the tokens was sent a moment ago.
      const requestedAt = Date.now()
      const account = accountFromTokenSet(server, client.clientId, tokens)
      await this.tokens.saveSignIn(account, tokens, scopes, requestedAt)
      return { tokens, account }
    }
    // The device code stays inside `flow` (private); this object only adds poll().
    return Object.freeze({ ...flow, poll })
  }

  /**
   * Starts an authorization code sign-in with PKCE (RFC 7636, S256), `state` and `nonce`.
   *
   * @param options - scopes, redirect URI, prompt, login hint, signal.
   * @returns the request: open `url`, keep the rest for {@link PublicClient.acquireTokenByCode}.
   * @throws EdgeTokenError `ERR_CONFIG` when the server has no authorization endpoint;
   *   `ERR_INSECURE_URL` for a remote http redirect URI.
   * @example
   * ```ts
   * const request = await client.getAuthorizationUrl({ scopes: ['api://x/.default'], redirectUri: 'http://127.0.0.1:8400/cb' })
   * openBrowser(request.url)
   * const { tokens } = await client.acquireTokenByCode(request, await waitForCallback())
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.1
   * @see https://www.rfc-editor.org/rfc/rfc8252#section-7.3
   */
  async getAuthorizationUrl(options: GetAuthorizationUrlOptions): Promise<AuthorizationRequest> {
    const server = await this.resolve(options.signal)
    return startAuthorization(server, this.#options.clientId, options, this.#options.clientCapabilities)
  }

  /**
   * Completes an authorization code sign-in: checks the redirect (`iss`, then `state`, RFC 9207 /
   * RFC 6749 §4.1.2), redeems the code with the PKCE verifier and checks the id_token's nonce.
   *
   * @param request - what {@link PublicClient.getAuthorizationUrl} returned.
   * @param callbackUrl - the URL the browser was redirected to.
   * @param options - signal.
   * @returns the tokens and account (saved in the token cache).
   * @throws InvalidResponseError `ERR_INVALID_RESPONSE` for a state or issuer mismatch;
   *   OAuthServerError (`ERR_ACCESS_DENIED` when the user declined, `invalid_grant` for a used code
   *   or wrong verifier); `ERR_JWT_INVALID` for a nonce mismatch.
   * @example
   * ```ts
   * const { tokens, account } = await client.acquireTokenByCode(request, 'http://127.0.0.1:8400/cb?code=...&state=...')
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3
   * @see https://www.rfc-editor.org/rfc/rfc7636#section-4.5
   */
  async acquireTokenByCode(
    request: AuthorizationRequest,
    callbackUrl: string | URL,
    options: AcquireTokenByCodeOptions = {},
  ): Promise<SignInResult> {
    const server = await this.resolve(options.signal)
    const { tokens, account, requestedAt } = await redeemAuthorization(
      server,
      this.#client,
      request,
      callbackUrl,
      {
        signal: options.signal,
        timeoutMs: this.#options.timeoutMs,
      },
    )
    await this.tokens.saveSignIn(account, tokens, request.scopes, requestedAt)
    return { tokens, account }
  }

  /**
   * An access token for a signed-in account, without the user: the cached one while it is good
   * enough (expiry margin 300 s capped at half its lifetime, `minTtlSeconds`, Entra ID's
   * `refresh_in`), else one refresh of its refresh token, shared by every caller in this process
   * and leased against other instances sharing the cache.
   *
   * @param options - account, scopes, forceRefresh, claims, minTtlSeconds, signal.
   * @returns the token, its expiry and scopes, whether it came from the cache, and the account.
   * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when the cache holds no sign-in for the account or
   *   its refresh token is rejected (`invalid_grant`; the account is kept, marked); the cache's
   *   `ERR_CACHE_UNAVAILABLE`; the refresh's `ERR_UNAVAILABLE`, OAuthServerError.
   * @example
   * ```ts
   * const { accessToken } = await client.acquireTokenSilent({ account, scopes: ['api://telemetry/.default'] })
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
   */
  acquireTokenSilent(options: AcquireAccountTokenOptions): Promise<AccountTokenResult> {
    return this.tokens.acquireTokenSilent(options, (refreshToken, scopes, { idTokenClaims, ...rest }) =>
      this.refresh(refreshToken, signInScopes(scopes), { ...rest, originalIdTokenClaims: idTokenClaims }),
    )
  }

  /**
   * Refreshes tokens (RFC 6749 §6).
   *
   * @param refreshToken - the refresh token (secret).
   * @param scopes - the scopes to ask for.
   * @param options - claims (a claims challenge, JSON), signal, timeout.
   * @returns the new token set (carrying the old refresh token when the server did not rotate it).
   * @throws OAuthServerError `ERR_SIGNIN_REQUIRED` on `invalid_grant`, and on
   *   `interaction_required` when claims were asked for (sign in again with them).
   */
  async refresh(
    refreshToken: string,
    scopes: readonly string[],
    options: RefreshOptions = {},
  ): Promise<TokenSet> {
    const server = await this.resolve(options.signal)
    return refreshTokenGrant(server, this.#client, refreshToken, scopes, {
      timeoutMs: this.#options.timeoutMs,
      ...options,
      claims: mergeClaims(options.claims, this.#options.clientCapabilities),
    })
  }

  /**
   * Revokes a token (RFC 7009), when the server offers revocation.
   *
   * @param token - the token (secret).
   * @param hint - its type.
   * @param options - signal, timeout.
   * @returns true when revoked, false when the server has no revocation endpoint.
   */
  async revoke(
    token: string,
    hint: 'refresh_token' | 'access_token',
    options: RefreshOptions = {},
  ): Promise<boolean> {
    const server = await this.resolve(options.signal)
    return revokeToken(server, this.#client, token, hint, { timeoutMs: this.#options.timeoutMs, ...options })
  }

  /**
   * The account a token set signs in (for token sets from {@link PublicClient.refresh}).
   *
   * @param tokens - a token set from this client.
   * @returns the account.
   */
  async accountOf(tokens: TokenSet): Promise<Account> {
    return accountFromTokenSet(await this.resolve(), this.#options.clientId, tokens)
  }
}
