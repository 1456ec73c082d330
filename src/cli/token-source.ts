/**
 * Access tokens for commands that call the protected API (`upload`, later `run`): the store's
 * silent acquisition with the refresh grant as its callback. The store, discovery and the refresh
 * grant (undici, jose) are imported only when a token is first asked for.
 */
import type { EdgeTokenConfig } from '../config/types.js'
import { EdgeTokenError } from '../errors.js'
import type { RefreshFunction } from '../store/cache.js'

/**
 * The refresh callback of silent acquisition for one authority and client: discovery (cached in the
 * state directory) and the refresh grant. undici and jose are imported only when it runs, so the
 * cached `token` path never loads them.
 *
 * @param authority - the configured authority.
 * @param clientId - the public client's id.
 * @param stateDir - where the discovery cache lives.
 * @param signal - cancels discovery and the grant.
 * @returns the callback for `acquireTokenSilent`.
 */
export function refreshFor(
  authority: string,
  clientId: string,
  stateDir: string,
  signal: AbortSignal | undefined,
): RefreshFunction {
  return async (refreshToken, scopes) => {
    const [{ resolveAuthority }, { refreshTokenGrant }, { fileMetadataCache }] = await Promise.all([
      import('../oauth/authority.js'),
      import('../oauth/refresh.js'),
      import('../store/metadata-cache.js'),
    ])
    const server = await resolveAuthority(authority, { cache: fileMetadataCache(stateDir), signal })
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

/**
 * A token getter for the configured account and scopes.
 *
 * @param config - the loaded configuration (authority, clientId, scopes, stateDir, keyFile).
 * @param options - environment, signal, warnings.
 * @returns `getAccessToken({ forceRefresh })`, resolving to a valid access token (secret).
 * @throws ConfigError when authority or clientId are missing (at creation); the getter throws
 *   `ERR_SIGNIN_REQUIRED` when no account or refresh token is usable.
 */
export async function createTokenSource(
  config: EdgeTokenConfig,
  options: TokenSourceOptions,
): Promise<(opts: { forceRefresh: boolean }) => Promise<string>> {
  const { requireIdentity } = await import('../config/load.js')
  const { authority, clientId, scopes } = requireIdentity(config)
  let store: import('../store/token-store.js').TokenStore | undefined
  return async ({ forceRefresh }) => {
    const [{ acquireTokenSilent }, { openTokenStore, tokenStoreExists }] = await Promise.all([
      import('../store/cache.js'),
      import('../store/token-store.js'),
    ])
    if (!store) {
      if (!tokenStoreExists(config.stateDir)) {
        throw new EdgeTokenError('ERR_SIGNIN_REQUIRED', "not signed in: run 'edgetoken login'")
      }
      store = await openTokenStore({
        stateDir: config.stateDir,
        env: options.env,
        keyFile: config.keyFile,
        onWarning: options.onWarning,
      })
    }
    const result = await acquireTokenSilent(store, {
      authority,
      clientId,
      scopes,
      minTtlSeconds: options.minTtlSeconds,
      forceRefresh,
      signal: options.signal,
      refresh: refreshFor(authority, clientId, config.stateDir, options.signal),
    })
    if (result.warning) options.onWarning?.(result.warning)
    return result.accessToken
  }
}
