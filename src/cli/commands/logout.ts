/**
 * `edgetoken logout`: revokes the refresh token at the authorization server when it offers
 * revocation (RFC 7009), then removes the account's tokens from the store. A failed revocation is
 * a warning, not a failure: the local tokens are removed either way.
 */
import { loadConfig, requireIdentity } from '../../config/load.js'
import { readRefreshToken, removeAccount } from '../../store/cache.js'
import type { TokenStore } from '../../store/token-store.js'
import { openExistingStore } from '../configured-store.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken logout [--json]

Revokes the refresh token at the authorization server (when it offers revocation, RFC 7009) and
removes the account's tokens from the local store. Exits 0 even when revocation fails (warning on
stderr): the local tokens are gone either way.

With --json, prints {"event":"signed_out","revoked":bool,"removed":bool}.

Exit codes: 0 ok, 2 config, 6 token store unreadable.`

async function revoke(
  ctx: CommandContext,
  authority: string,
  clientId: string,
  store: TokenStore,
  refreshToken: string,
): Promise<boolean> {
  try {
    const [{ resolveAuthority }, { revokeToken }, { storeMetadataCache }] = await Promise.all([
      import('../../oauth/authority.js'),
      import('../../oauth/refresh.js'),
      import('../../store/metadata-cache.js'),
    ])
    const server = await resolveAuthority(authority, {
      cache: storeMetadataCache(store),
      signal: ctx.signal,
    })
    const revoked = await revokeToken(server, { clientId }, refreshToken, 'refresh_token', {
      signal: ctx.signal,
    })
    if (!revoked) {
      ctx.warn(
        'the authorization server offers no revocation; the refresh token stays valid until it expires',
      )
    }
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
  const store = await openExistingStore(config, ctx.env, (line) => ctx.warn(line))
  if (store) {
    const refreshToken = await readRefreshToken(store, { authority, clientId })
    if (refreshToken !== undefined) revoked = await revoke(ctx, authority, clientId, store, refreshToken)
    removed = await removeAccount(store, { authority, clientId }, { signal: ctx.signal })
  }
  ctx.emit({ event: 'signed_out', revoked, removed })
  ctx.say(removed ? 'signed out: the tokens were removed' : 'not signed in: nothing to remove')
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
