/**
 * Access tokens for commands that call the protected API (`upload`, later `run`): the store's
 * silent acquisition with the refresh grant as its callback. The store, discovery and the refresh
 * grant (undici, jose) are imported only when a token is first asked for.
 */
import type { EdgeTokenConfig } from '../config/types.js'
import type { RefreshFunction } from '../store/cache.js'
import type { TokenStore } from '../store/token-store.js'

/**
 * The refresh callback of silent acquisition for one authority and client: discovery (cached in the
 * store's state directory, authenticated with its key) and the refresh grant. undici and jose are imported only when it runs, so the
 * cached `token` path never loads them.
 *
 * @param authority - the configured authority.
 * @param clientId - the public client's id.
 * @param store - the token store, whose directory and key hold the discovery cache.
 * @param signal - cancels discovery and the grant.
 * @returns the callback for `acquireTokenSilent`.
 */
export function refreshFor(
  authority: string,
  clientId: string,
  store: TokenStore,
  signal: AbortSignal | undefined,
): RefreshFunction {
  return async (refreshToken, scopes) => {
    const [{ resolveAuthority }, { refreshTokenGrant }, { storeMetadataCache }] = await Promise.all([
      import('../oauth/authority.js'),
      import('../oauth/refresh.js'),
      import('../store/metadata-cache.js'),
    ])
    const server = await resolveAuthority(authority, { cache: storeMetadataCache(store), signal })
    return refreshTokenGrant(server, { clientId }, refreshToken, scopes, { signal })
  }
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
 * @returns `getAccessToken({ forceRefresh, rejected })`, resolving to a valid access token (secret).
 * @throws ConfigError when authority or clientId are missing (at creation); the getter throws
 *   `ERR_SIGNIN_REQUIRED` when no account or refresh token is usable.
 */
export async function createTokenSource(
  config: EdgeTokenConfig,
  options: TokenSourceOptions,
): Promise<(opts: { forceRefresh: boolean; rejected?: string | undefined }) => Promise<string>> {
  const { requireIdentity } = await import('../config/load.js')
  const { authority, clientId, scopes } = requireIdentity(config)
  let store: import('../store/token-store.js').TokenStore | undefined
  let reuse: { token: string; until: number } | undefined
  return async ({ forceRefresh, rejected }) => {
    // After a 401 the store is read again: another process may have renewed the token.
    if (!forceRefresh && reuse && reuse.token !== rejected && Date.now() < reuse.until) return reuse.token
    reuse = undefined
    const [{ acquireTokenSilent }, { openSignedInStore }] = await Promise.all([
      import('../store/cache.js'),
      import('./configured-store.js'),
    ])
    store ??= await openSignedInStore(config, options.env, options.onWarning)
    const result = await acquireTokenSilent(store, {
      authority,
      clientId,
      scopes,
      minTtlSeconds: options.minTtlSeconds,
      forceRefresh,
      signal: options.signal,
      refresh: refreshFor(authority, clientId, store, options.signal),
    })
    if (result.warning) options.onWarning?.(result.warning)
    const now = Date.now()
    reuse = {
      token: result.accessToken,
      until: Math.min(now + REUSE_MS, result.expiresAt - REUSE_MIN_TTL_MS),
    }
    return result.accessToken
  }
}
