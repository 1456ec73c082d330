/**
 * Access tokens for commands that call the protected API (`upload`, later `run`): the store's
 * silent acquisition with the refresh grant as its callback. The store, discovery and the refresh
 * grant (undici, jose) are imported only when a token is first asked for.
 */
import type { EdgeTokenConfig } from '../config/types.js'
import type { MachineAcquisition, RefreshFunction } from '../store/cache.js'
import type { TokenStore } from '../store/token-store.js'

/**
 * The refresh callback of silent acquisition for one authority and client: discovery (cached in the
 * store's state directory, authenticated with its key) and the refresh grant. undici and jose are
 * imported when it first runs (or by {@link preloadRefresh}), so the cached `token` path never loads them.
 *
 * @param authority - the configured authority.
 * @param clientId - the public client's id.
 * @param store - the token store, whose directory and key hold the discovery cache.
 * @param signal - cancels discovery and the grant.
 * @param claims - a claims challenge to satisfy (checked compact JSON) and the configured client
 *   capabilities (`xms_cc`), sent merged as the `claims` parameter.
 * @returns the callback for `acquireTokenSilent`.
 */
export function refreshFor(
  authority: string,
  clientId: string,
  store: TokenStore,
  signal: AbortSignal | undefined,
  claims: RefreshClaims = {},
): RefreshFunction {
  return async (refreshToken, scopes, context) => {
    const [{ resolveAuthority }, { refreshTokenGrant }, { storeMetadataCache }, { mergeClaims }, dpopModule] =
      await refreshModules()
    const server = await resolveAuthority(authority, { cache: storeMetadataCache(store), signal })
    // A refresh token bound at sign-in is refreshed with a proof of the same key (RFC 9449 §5).
    const key = context?.dpopKey
    const dpop = key === undefined ? undefined : await dpopModule.dpopHandle(key)
    return refreshTokenGrant(server, { clientId }, refreshToken, scopes, {
      signal,
      claims: mergeClaims(claims.claims, claims.clientCapabilities),
      dpop,
      originalIdTokenClaims: context?.idTokenClaims,
    })
  }
}

let loading: ReturnType<typeof loadRefreshModules> | undefined

function loadRefreshModules() {
  return Promise.all([
    import('../oauth/authority.js'),
    import('../oauth/grants/refresh.js'),
    import('../store/metadata-cache.js'),
    import('../oauth/claims.js'),
    import('../oauth/dpop.js'),
  ])
}

/** The modules of a refresh (undici and jose among them), loaded once. */
function refreshModules(): ReturnType<typeof loadRefreshModules> {
  loading ??= loadRefreshModules()
  return loading
}

/**
 * Starts loading what a refresh needs (discovery, the grant: undici and jose) without waiting.
 * A refresh runs under the store's lock, and loading these there (tens of ms here, over a second
 * on an emulated or slow ARM core) makes every other process wait that much longer for the lock:
 * a short-lived command that will probably refresh calls this before it takes the lock. The daemon
 * does not, so an idle one loads them only at its first renewal.
 */
export function preloadRefresh(): void {
  // A failed import is reported by the refresh that awaits it, not as an unhandled rejection.
  refreshModules().catch(() => {})
}

/** The claims a refresh asks for (issue 13): a challenge's, and the client's capabilities. */
export interface RefreshClaims {
  /** A claims request (compact JSON, already checked), e.g. an API's claims challenge. */
  readonly claims?: string | undefined
  /** Client capabilities (`cp1`), from the `clientCapabilities` config key. */
  readonly clientCapabilities?: readonly string[] | undefined
}

/**
 * The acquisition of a machine with no user (`grant` `client_credentials` or `managed_identity`),
 * for silent acquisition's `machine` option; undefined for `device_code`. The credential files,
 * the HTTP client and jose are loaded only when a token is acquired, so the cached `token` path
 * never loads or reads them.
 *
 * @param config - the loaded configuration.
 * @param env - the environment (managed identity endpoints).
 * @param store - the token store (its directory caches discovery).
 * @param signal - cancels the requests.
 * @returns the acquisition, or undefined.
 */
export function machineAcquisitionFor(
  config: EdgeTokenConfig,
  env: NodeJS.ProcessEnv,
  store: TokenStore,
  signal: AbortSignal | undefined,
): MachineAcquisition | undefined {
  const { grant } = config
  if (grant === 'client_credentials') {
    const { clientCredential, authority, clientId } = config
    return {
      grant,
      acquire: async (scopes, context) => {
        const [{ clientCredentialAcquisition }, { storeMetadataCache }] = await Promise.all([
          import('../identity/client-credential-source.js'),
          import('../store/metadata-cache.js'),
        ])
        // loadConfig and requireIdentity have checked these; the types cannot say so.
        if (clientCredential === undefined || authority === undefined || clientId === undefined) {
          throw new TypeError('client_credentials without its configuration')
        }
        const source = clientCredentialAcquisition({
          authority,
          clientId,
          credential: clientCredential,
          metadataCache: storeMetadataCache(store),
          signal,
          dpop: config.dpop,
        })
        // The app's DPoP key (RFC 9449) comes from the store and goes back with the token.
        return source.acquire(scopes, context)
      },
    }
  }
  if (grant === 'managed_identity') {
    const identity = config.managedIdentity
    return {
      grant,
      acquire: async (scopes) => {
        const { managedIdentityAcquisition } = await import('../identity/managed-identity-source.js')
        if (identity === undefined) throw new TypeError('managed_identity without its configuration')
        return managedIdentityAcquisition({ identity, env, signal }).acquire(scopes)
      },
    }
  }
  return undefined
}

/** Options of {@link createTokenSource}. */
export interface TokenSourceOptions {
  /** The environment (key file location). */
  env: NodeJS.ProcessEnv
  /** Cancels store-lock waits and token requests. */
  signal?: AbortSignal | undefined
  /** Receives store and expiry warnings (one line each). */
  onWarning?: ((line: string) => void) | undefined
  /** The token must stay valid this long, seconds. Default 0: the store's expiry margin applies. */
  minTtlSeconds?: number | undefined
}

/** An access token, its type, and for a DPoP-bound one the key of its proofs (the uploader's credential). */
export interface TokenCredential {
  /** The access token. Secret. */
  readonly accessToken: string
  /** `DPoP` or `Bearer`. */
  readonly tokenType: 'Bearer' | 'DPoP'
  /** The DPoP key, with `DPoP`. Secret. */
  readonly dpopKey?: import('../oauth/dpop.js').DPoPKeyRecord | undefined
}

/** How long a token read from the store is reused before the store is read again, ms. */
const REUSE_MS = 30_000
/** A token is not reused from memory when it expires within this, ms (the store renews it). */
const REUSE_MIN_TTL_MS = 60_000

/**
 * A token getter for the configured account and scopes. The uploader asks it once per batch: the
 * answer is reused from memory for up to 30 s (while it has over a minute to live), so a fast
 * upload does not read and decrypt the store per batch, and a token renewed by another process
 * (`run`) is picked up within 30 s, long before the old one expires.
 *
 * @param config - the loaded configuration (authority, clientId, scopes, stateDir, keyFile).
 * @param options - environment, signal, warnings.
 * @returns `getAccessToken({ forceRefresh, rejected, claims })`, resolving to a valid access token
 *   (secret) with its type and, for a DPoP-bound one, its key; with `claims` (a claims challenge,
 *   checked JSON) it always refreshes, asking for them.
 * @throws ConfigError when authority or clientId are missing (at creation); the getter throws
 *   `ERR_SIGNIN_REQUIRED` when no account or refresh token is usable.
 */
export async function createTokenSource(
  config: EdgeTokenConfig,
  options: TokenSourceOptions,
): Promise<
  (opts: {
    forceRefresh: boolean
    rejected?: string | undefined
    claims?: string | undefined
  }) => Promise<TokenCredential>
> {
  const { requireIdentity } = await import('../config/load.js')
  const { authority, clientId, scopes } = requireIdentity(config)
  let store: import('../store/token-store.js').TokenStore | undefined
  let reuse: { token: TokenCredential; until: number } | undefined
  return async ({ forceRefresh: force, rejected, claims }) => {
    // A claims challenge is met only by a token the authorization server issues now.
    const forceRefresh = force || claims !== undefined
    // After a 401 the store is read again: another process may have renewed the token.
    if (!forceRefresh && reuse && reuse.token.accessToken !== rejected && Date.now() < reuse.until)
      return reuse.token
    reuse = undefined
    const [{ acquireTokenSilent }, { openSignedInStore }, { openTokenStore }] = await Promise.all([
      import('../store/cache.js'),
      import('./configured-store.js'),
      import('../store/token-store.js'),
    ])
    // A machine with no user needs no sign-in first: its store is created on first use.
    store ??=
      config.grant === 'device_code'
        ? await openSignedInStore(config, options.env, options.onWarning)
        : await openTokenStore({
            stateDir: config.stateDir,
            env: options.env,
            keyFile: config.keyFile,
            onWarning: options.onWarning,
          })
    const result = await acquireTokenSilent(store, {
      authority,
      clientId,
      scopes,
      minTtlSeconds: options.minTtlSeconds,
      forceRefresh,
      signal: options.signal,
      refresh: refreshFor(authority, clientId, store, options.signal, {
        claims,
        clientCapabilities: config.clientCapabilities,
      }),
      machine: machineAcquisitionFor(config, options.env, store, options.signal),
    })
    if (result.warning) options.onWarning?.(result.warning)
    const now = Date.now()
    const token: TokenCredential = {
      accessToken: result.accessToken,
      tokenType: result.tokenType,
      dpopKey: result.dpopKey,
    }
    reuse = { token, until: Math.min(now + REUSE_MS, result.expiresAt - REUSE_MIN_TTL_MS) }
    return token
  }
}
