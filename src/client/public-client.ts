/**
 * `PublicClient`: the library face of the device flow for a public client (a device, a CLI), in
 * the spirit of MSAL's `PublicClientApplication` but exact to RFC 8628. A thin layer over
 * `oauth/`: it resolves the authority once and adds the sign-in scopes.
 *
 * @packageDocumentation
 */
import { type AuthorizationServer, parseAuthority, resolveAuthority } from '../oauth/authority.js'
import {
  type DeviceAuthorization,
  type PollDeviceAuthorizationOptions,
  pollDeviceAuthorization,
  startDeviceAuthorization,
} from '../oauth/device.js'
import { type RefreshOptions, refreshTokenGrant, revokeToken } from '../oauth/refresh.js'
import { signInScopes } from '../oauth/scopes.js'
import { accountFromTokenSet } from '../oauth/tokens.js'
import type { Account, MetadataCache, OAuthClient, TokenSet } from '../oauth/types.js'

/** Options of {@link PublicClient}. */
export interface PublicClientOptions {
  /** The authority: an issuer URL, or `https://login.microsoftonline.com/<tenant>` (Entra ID). */
  authority: string
  /** The registered client_id. */
  clientId: string
  /** Where discovery documents are cached (the CLI passes the state directory's cache). */
  cache?: MetadataCache | undefined
  /** How long discovery documents are cached, seconds. Default 86400. */
  cacheTtlSeconds?: number | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /** TEST ONLY: see `ResolveAuthorityOptions.entraBaseUrl`. */
  entraBaseUrl?: string | undefined
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

/**
 * A public OAuth client that signs in with the device authorization grant.
 *
 * @example
 * ```ts
 * const client = new PublicClient({ authority: 'https://login.microsoftonline.com/contoso.com', clientId })
 * const flow = await client.startDeviceFlow({ scopes: ['api://telemetry/.default'] })
 * console.error(flow.message ?? `Open ${flow.verificationUri} and enter ${flow.userCode}`)
 * const { tokens, account } = await flow.poll({ signal })
 * ```
 */
export class PublicClient {
  readonly #options: PublicClientOptions
  readonly #client: OAuthClient
  #server: Promise<AuthorizationServer> | undefined

  /**
   * @param options - authority, client id, metadata cache.
   * @throws ConfigError `ERR_INSECURE_URL` for a plain-http non-loopback authority, `ERR_CONFIG` for a malformed one.
   */
  constructor(options: PublicClientOptions) {
    parseAuthority(options.authority)
    this.#options = Object.freeze({ ...options })
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
    this.#server ??= resolveAuthority(this.#options.authority, {
      cache: this.#options.cache,
      cacheTtlSeconds: this.#options.cacheTtlSeconds,
      timeoutMs: this.#options.timeoutMs,
      entraBaseUrl: this.#options.entraBaseUrl,
      signal,
    }).catch((err: unknown) => {
      this.#server = undefined
      throw err
    })
    return this.#server
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
    const poll = async (pollOptions: PollDeviceAuthorizationOptions = {}): Promise<SignInResult> => {
      const tokens = await pollDeviceAuthorization(server, client, flow, { timeoutMs, ...pollOptions })
      return { tokens, account: accountFromTokenSet(server, client.clientId, tokens) }
    }
    // The device code stays inside `flow` (private); this object only adds poll().
    return Object.freeze({ ...flow, poll })
  }

  /**
   * Refreshes tokens (RFC 6749 §6).
   *
   * @param refreshToken - the refresh token (secret).
   * @param scopes - the scopes to ask for.
   * @param options - signal, timeout.
   * @returns the new token set (carrying the old refresh token when the server did not rotate it).
   * @throws OAuthServerError `ERR_SIGNIN_REQUIRED` on `invalid_grant`.
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
