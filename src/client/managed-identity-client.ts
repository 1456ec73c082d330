/**
 * `ManagedIdentityClient`: tokens for an Azure managed identity, in the spirit of MSAL Python's
 * `ManagedIdentityClient.acquire_token_for_client(resource=...)`: the source is chosen from what
 * the environment shows (Azure Arc when `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` are set, else the
 * instance metadata service of an Azure VM), answers of 429 and 5xx are retried (Retry-After
 * honoured), and tokens are cached in memory per resource.
 *
 * @packageDocumentation
 */
import { ConfigError, EdgeTokenError } from '../errors.js'
import type { TokenSet } from '../oauth/types.js'

/** Where a managed identity's tokens come from. */
export type ManagedIdentitySource = 'azure_arc' | 'imds'

/** Options of {@link ManagedIdentityClient}. */
export interface ManagedIdentityClientOptions {
  /**
   * A user-assigned identity's client id; default the system-assigned identity. Azure Arc has
   * only a system-assigned identity (a client id there is a ConfigError, as in MSAL).
   */
  clientId?: string | undefined
  /** The environment the source is chosen from. Default `process.env`. */
  env?: NodeJS.ProcessEnv | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /** Requests in all while the endpoint answers 429/5xx or cannot be reached. Default 3. */
  attempts?: number | undefined
  /** A cached token is reused while it has more than this left, seconds. Default 300 (as MSAL). */
  minTtlSeconds?: number | undefined
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
  /** Waits between retries (tests). Default a timer. */
  sleep?: ((ms: number, signal: AbortSignal | undefined) => Promise<void>) | undefined
  /**
   * The directory the Arc challenge file must be in. Default `/var/opt/azcmagent/tokens`. For
   * tests only: deliberately not read from the environment, since whoever sets it chooses which
   * file a root process reads.
   */
  arcTokenDirectory?: string | undefined
}

/** Options of {@link ManagedIdentityClient.acquireTokenForClient}. */
export interface AcquireManagedIdentityTokenOptions {
  /** The resource (audience), e.g. `https://management.azure.com`; a trailing `/.default` is dropped. */
  resource: string
  /** Skip the cache and ask the endpoint. Default false. */
  forceRefresh?: boolean | undefined
  /** Cancels the requests and the waits between them. */
  signal?: AbortSignal | undefined
}

/**
 * The resource of a scope: `https://vault.azure.net/.default` becomes `https://vault.azure.net`.
 *
 * @param scope - a resource or a `<resource>/.default` scope.
 * @returns the resource.
 */
export function resourceOfScope(scope: string): string {
  return scope.endsWith('/.default') ? scope.slice(0, -'/.default'.length) : scope
}

/**
 * A managed identity client.
 *
 * @example
 * ```ts
 * const mi = new ManagedIdentityClient()                      // system-assigned
 * const { accessToken } = await mi.acquireTokenForClient({ resource: 'https://management.azure.com' })
 * ```
 * @see https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token
 * @see https://learn.microsoft.com/azure/azure-arc/servers/managed-identity-authentication
 */
export class ManagedIdentityClient {
  readonly #options: Readonly<ManagedIdentityClientOptions>
  readonly #env: NodeJS.ProcessEnv
  readonly #tokens = new Map<string, { tokens: TokenSet; renewAt: number }>()

  /**
   * @param options - user-assigned client id, environment, timeouts, clock.
   * @throws ConfigError for a user-assigned identity on Azure Arc, or an empty client id.
   */
  constructor(options: ManagedIdentityClientOptions = {}) {
    this.#env = options.env ?? process.env
    if (options.clientId !== undefined && (typeof options.clientId !== 'string' || options.clientId === '')) {
      throw new ConfigError('managedIdentity.clientId must be a non-empty string', {
        key: 'managedIdentity.clientId',
      })
    }
    this.#options = Object.freeze({ ...options })
    if (options.clientId !== undefined && this.source === 'azure_arc') {
      throw new ConfigError(
        'managedIdentity.clientId: Azure Arc-enabled servers have only a system-assigned identity; remove the client id',
        { key: 'managedIdentity.clientId' },
      )
    }
  }

  /** The source, from the environment: `azure_arc` when `IDENTITY_ENDPOINT` and `IMDS_ENDPOINT` are set, else `imds`. */
  get source(): ManagedIdentitySource {
    return this.#env.IDENTITY_ENDPOINT && this.#env.IMDS_ENDPOINT ? 'azure_arc' : 'imds'
  }

  /**
   * A token for the managed identity, from the cache while it has more than `minTtlSeconds` left
   * (and before the half-life of a token of two hours or more).
   *
   * @param options - resource, forceRefresh, signal.
   * @returns the token set (`scopes` = `[resource]`, no refresh token).
   * @throws UnavailableError (`ERR_UNAVAILABLE`) when the endpoint cannot be reached or keeps
   *   answering 429/5xx, or an Arc challenge file is refused (`ArcChallengeError`, never read);
   *   OAuthServerError `ERR_CONFIG` for an error answer (unknown identity or resource);
   *   InvalidResponseError for a malformed answer; `ERR_CANCELLED`.
   * @example
   * ```ts
   * const tokens = await new ManagedIdentityClient({ clientId }).acquireTokenForClient({ resource: 'api://telemetry' })
   * ```
   * @see https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token
   */
  async acquireTokenForClient(options: AcquireManagedIdentityTokenOptions): Promise<TokenSet> {
    if (typeof options.resource !== 'string' || options.resource.length === 0) {
      throw Object.assign(new TypeError('resource must be a non-empty string'), {
        code: 'ERR_INVALID_ARG_VALUE',
      })
    }
    const resource = resourceOfScope(options.resource)
    const now = this.#options.now ?? Date.now
    const hit = this.#tokens.get(resource)
    if (hit && options.forceRefresh !== true && now() < hit.renewAt) return hit.tokens
    const tokens = await this.#request(resource, options.signal)
    const obtained = now()
    const minTtlMs = (this.#options.minTtlSeconds ?? 300) * 1000
    let renewAt = tokens.expiresAt - Math.min(minTtlMs, (tokens.expiresAt - obtained) / 2)
    if (tokens.refreshInSeconds !== undefined)
      renewAt = Math.min(renewAt, obtained + tokens.refreshInSeconds * 1000)
    this.#tokens.set(resource, { tokens, renewAt })
    return tokens
  }

  /**
   * Forgets every cached token.
   *
   * @example
   * ```ts
   * mi.clearCache()
   * ```
   */
  clearCache(): void {
    this.#tokens.clear()
  }

  async #request(resource: string, signal: AbortSignal | undefined): Promise<TokenSet> {
    const [{ withRetries }, arc, imds] = await Promise.all([
      import('../oauth/retry.js'),
      import('../identity/managed-identity-arc.js'),
      import('../identity/managed-identity-imds.js'),
    ])
    const now = this.#options.now ?? Date.now
    const common = { resource, env: this.#env, timeoutMs: this.#options.timeoutMs, signal, now }
    const attempt =
      this.source === 'azure_arc'
        ? () => arc.requestArcToken({ ...common, tokenDirectory: this.#options.arcTokenDirectory })
        : () => imds.requestImdsToken({ ...common, clientId: this.#options.clientId })
    try {
      return await withRetries(attempt, {
        attempts: this.#options.attempts,
        sleep: this.#options.sleep,
        signal,
      })
    } catch (err) {
      if (err instanceof EdgeTokenError) throw err
      throw new EdgeTokenError('ERR_INTERNAL', 'managed identity: unexpected failure', { cause: err })
    }
  }
}
