/**
 * `edgetoken logout`: revokes the refresh token at the authorization server when it offers
 * revocation (RFC 7009) to a public client, then removes the account's tokens from the store. A
 * revocation that is not offered, not open to this client, or fails is a warning, not a failure:
 * the local tokens are removed either way, and the output says the refresh token stays valid at
 * the IdP until it expires.
 */
import { loadConfig, requireIdentity } from '../../config/load.js'
import type { MetadataCache } from '../../oauth/types.js'
import { readRefreshToken, removeAccount } from '../../store/cache.js'
import type { TokenStore } from '../../store/token-store.js'
import { openExistingStore } from '../configured-store.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken logout [--json]

Revokes the refresh token at the authorization server (when it offers revocation, RFC 7009, to a
public client) and removes the account's tokens from the local store. Exits 0 even when the token
is not revoked (a warning on stderr says why): the local tokens are gone either way, and the
refresh token stays valid at the IdP until it expires.

Revocation is skipped, without sending the token, when the server has no revocation endpoint or
its discovery document lists revocation_endpoint_auth_methods_supported without "none" (the
endpoint accepts only authenticated clients).

With --json, prints {"event":"signed_out","revoked":bool,"removed":bool}.

Exit codes: 0 ok, 2 config, 6 token store unreadable.`

/**
 * A metadata cache that remembers the last discovery document it handed out or stored: the one
 * the resolved endpoints came from, read here for its revocation auth methods (the validated
 * server object keeps endpoints only).
 */
function recordingCache(cache: MetadataCache, record: (doc: unknown) => void): MetadataCache {
  return {
    async get(key) {
      const value = await cache.get(key)
      record(value)
      return value
    },
    async set(key, value, ttlSeconds) {
      record(value)
      await cache.set(key, value, ttlSeconds)
    },
  }
}

async function revoke(
  ctx: CommandContext,
  authority: string,
  clientId: string,
  store: TokenStore,
  refreshToken: string,
): Promise<boolean> {
  try {
    const [{ resolveAuthority }, { revokeToken, revocationAcceptsClient }, { storeMetadataCache }] =
      await Promise.all([
        import('../../oauth/authority.js'),
        import('../../oauth/grants/refresh.js'),
        import('../../store/metadata-cache.js'),
      ])
    let metadata: unknown
    const server = await resolveAuthority(authority, {
      cache: recordingCache(storeMetadataCache(store), (doc) => {
        metadata = doc
      }),
      signal: ctx.signal,
    })
    const client = { clientId }
    if (server.revocationEndpoint === undefined) {
      ctx.warn('the authorization server offers no revocation (RFC 7009)')
      return false
    }
    if (!revocationAcceptsClient(metadata, client)) {
      ctx.warn(
        "the authorization server's revocation endpoint does not accept public clients (its revocation_endpoint_auth_methods_supported has no 'none'); not revoking",
      )
      return false
    }
    const revoked = await revokeToken(server, client, refreshToken, 'refresh_token', { signal: ctx.signal })
    if (!revoked) ctx.warn('the authorization server cannot revoke refresh tokens (unsupported_token_type)')
    return revoked
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err)
    ctx.warn(`could not revoke the refresh token (${message}); removing it locally anyway`)
    return false
  }
}

async function run(ctx: CommandContext): Promise<number> {
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  const { authority, clientId } = requireIdentity(config)
  let revoked = false
  let removed = false
  let kept = false
  const store = await openExistingStore(config, ctx.env, (line) => ctx.warn(line))
  if (store) {
    const refreshToken = await readRefreshToken(store, { authority, clientId })
    if (refreshToken !== undefined) {
      revoked = await revoke(ctx, authority, clientId, store, refreshToken)
      kept = !revoked
    }
    removed = await removeAccount(store, { authority, clientId }, { signal: ctx.signal })
  }
  ctx.emit({ event: 'signed_out', revoked, removed })
  if (!removed) ctx.say('not signed in: nothing to remove')
  else if (kept) {
    ctx.say(
      'signed out: the tokens were removed here, but the refresh token was not revoked: it stays valid at the IdP until it expires',
    )
  } else ctx.say('signed out: the tokens were removed')
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
