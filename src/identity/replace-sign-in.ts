/**
 * Saving a person's sign-in over whatever the store held, for every way a person signs in
 * (`login` with a device code or `--browser`, the daemon's pair sign-in): the refresh token the
 * new sign-in replaces is never used again, so it is revoked at the IdP (RFC 7009), same account
 * or another. Best effort and after the save: a revocation that fails, or an IdP that offers
 * none, is a warning; it never delays or stops the save.
 *
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 * @packageDocumentation
 */
import type { AuthorizationServer } from '../oauth/authority.js'
import type { OAuthClient } from '../oauth/types.js'
import type { SaveSignInOptions } from '../store/cache.js'
import type { TokenStore } from '../store/token-store.js'

/** Bound of a revocation request, ms: it runs after the sign-in, never in its way. */
export const REVOKE_TIMEOUT_MS = 5000

/** Where the outcome of a best-effort revocation is told. */
export interface RevocationReport {
  /** One line when the token was revoked. Default: nothing. */
  onRevoked?: ((line: string) => void) | undefined
  /** One line when it was not (no endpoint, refused, unreachable). */
  onWarning: (line: string) => void
}

function reason(err: unknown): string {
  // One line, printable ASCII: an error message here may carry the IdP's own description.
  return (err instanceof Error ? err.message : String(err)).replace(/[^\x20-\x7e]/g, ' ').slice(0, 300)
}

/**
 * Revokes a refresh token at the server (RFC 7009 §2.1), best effort: never throws.
 *
 * @param server - the authorization server.
 * @param client - the client the token was issued to.
 * @param token - the refresh token. Secret: never in a message.
 * @param what - how the lines name it ("the replaced refresh token").
 * @param report - where the outcome goes.
 * @returns true when the server confirmed the revocation (§2.2: 200, also for a token already invalid).
 * @example
 * ```ts
 * await revokeRefreshTokenBestEffort(server, { clientId }, previous, 'the replaced refresh token', { onWarning: warn })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 */
export async function revokeRefreshTokenBestEffort(
  server: AuthorizationServer,
  client: OAuthClient,
  token: string,
  what: string,
  report: RevocationReport,
): Promise<boolean> {
  try {
    const { revokeToken } = await import('../oauth/grants/refresh.js')
    const revoked = await revokeToken(server, client, token, 'refresh_token', {
      timeoutMs: REVOKE_TIMEOUT_MS,
    })
    if (revoked) report.onRevoked?.(`revoked ${what}`)
    else
      report.onWarning(`the authorization server offers no revocation; ${what} stays valid until it expires`)
    return revoked
  } catch (err) {
    report.onWarning(`could not revoke ${what} (${reason(err)}); it stays valid until it expires`)
    return false
  }
}

/** Options of {@link saveReplacingSignIn}. */
export interface SaveReplacingSignInOptions extends SaveSignInOptions, RevocationReport {
  /** The authorization server (its revocation endpoint). */
  server: AuthorizationServer
  /** The client the tokens were issued to. */
  client: OAuthClient
}

/**
 * Saves a person's sign-in ({@link saveSignIn}) and then revokes the refresh token it replaced,
 * when the store held one that differs from the new one (same account signing in again, or
 * another account).
 *
 * @param store - the opened store.
 * @param options - what {@link saveSignIn} takes, the server and client, and where to report.
 * @returns when the sign-in is saved and the revocation attempted.
 * @throws StoreError when the save fails (then nothing is revoked: the old token is still the one stored).
 * @example
 * ```ts
 * await saveReplacingSignIn(store, { ...identity, account, tokenSet, requestedScopes, dpopKey, server, client, onWarning: ctx.warn })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc7009#section-2.1
 */
export async function saveReplacingSignIn(
  store: TokenStore,
  options: SaveReplacingSignInOptions,
): Promise<void> {
  const { server, client, onRevoked, onWarning, ...save } = options
  const { readRefreshToken, saveSignIn } = await import('../store/cache.js')
  const previous = await readRefreshToken(store, save)
  await saveSignIn(store, save)
  if (previous !== undefined && previous !== save.tokenSet.refreshToken) {
    await revokeRefreshTokenBestEffort(server, client, previous, 'the replaced refresh token', {
      onRevoked,
      onWarning,
    })
  }
}
