/**
 * The memoised authority resolution both library clients share.
 *
 * @internal
 */
import { type AuthorizationServer, resolveAuthority } from '../oauth/authority.js'
import type { MetadataCache } from '../oauth/types.js'

/** What {@link authorityResolver} needs of a client's options. */
export interface AuthorityResolverOptions {
  readonly authority: string
  readonly metadataCache?: MetadataCache | undefined
  readonly cacheTtlSeconds?: number | undefined
  readonly timeoutMs?: number | undefined
}

/**
 * Resolves an authority once (discovery, cached) and shares the result between callers; a failure
 * is not remembered, so a later call tries again.
 *
 * @param options - the authority and discovery options.
 * @returns `resolve(signal?)`.
 */
export function authorityResolver(
  options: AuthorityResolverOptions,
): (signal?: AbortSignal) => Promise<AuthorizationServer> {
  let server: Promise<AuthorizationServer> | undefined
  return (signal) => {
    server ??= resolveAuthority(options.authority, {
      cache: options.metadataCache,
      cacheTtlSeconds: options.cacheTtlSeconds,
      timeoutMs: options.timeoutMs,
      signal,
    }).catch((err: unknown) => {
      server = undefined
      throw err
    })
    return server
  }
}
