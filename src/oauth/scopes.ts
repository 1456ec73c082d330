/**
 * Scope helpers. No imports: the config loader and the cached `token` path use them.
 *
 * @packageDocumentation
 */

/**
 * Adds `offline_access` to a scope list when absent, so the authorization server issues a refresh
 * token (OpenID Connect Core §11; Entra ID and oidc-provider both require it). Duplicates and
 * empty entries are dropped; the order of the others is kept.
 *
 * @param scopes - the requested scopes.
 * @returns a new frozen list that contains `offline_access`.
 * @example
 * ```ts
 * withOfflineAccess(['api://x/.default']) // ['api://x/.default', 'offline_access']
 * ```
 */
export function withOfflineAccess(scopes: readonly string[]): readonly string[] {
  const out = [...new Set(scopes.map((s) => s.trim()).filter((s) => s.length > 0))]
  if (!out.includes('offline_access')) out.push('offline_access')
  return Object.freeze(out)
}

/**
 * The scopes a sign-in asks for: the configured ones plus `openid` (so an id_token identifies the
 * account), `profile` (so it names the user) and `offline_access` (so a refresh token is issued),
 * as MSAL does.
 *
 * @param scopes - the configured scopes.
 * @returns a new frozen list with `openid profile` first and `offline_access` present.
 */
export function signInScopes(scopes: readonly string[]): readonly string[] {
  const base = withOfflineAccess(scopes)
  const oidc = ['openid', 'profile'].filter((s) => !base.includes(s))
  return Object.freeze([...oidc, ...base])
}

/**
 * Parses a space-delimited `scope` parameter (RFC 6749 §3.3).
 *
 * @param value - the parameter value.
 * @returns the scope tokens, empty strings dropped.
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-3.3
 */
export function parseScope(value: string): string[] {
  return value.split(' ').filter((s) => s.length > 0)
}
