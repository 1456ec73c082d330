/**
 * `edgetoken login` for a machine with no user (`grant` `client_credentials` or
 * `managed_identity`): there is no code to show and nobody to approve, so login proves the
 * credential (or the identity) by acquiring a first token, stores it like a sign-in, and emits
 * `signed_in` with `account` `{"id"}`. `token`, `run` and `upload` would acquire on first use
 * anyway; login is how an operator checks a new credential, and how a daemon that reported
 * "sign-in required" for a rejected credential is told that it works again.
 */
import { assertSaneClock } from '../../agent/clock.js'
import { requireIdentity } from '../../config/load.js'
import type { EdgeTokenConfig } from '../../config/types.js'
import { EdgeTokenError, isEdgeTokenError } from '../../errors.js'
import type { Account } from '../../oauth/types.js'
import type { CommandContext } from '../context.js'
import { ExitCode } from '../exit-codes.js'
import { machineAcquisitionFor } from '../token-source.js'

/**
 * Runs `login` under a machine grant.
 *
 * @param ctx - the command context.
 * @param config - the loaded configuration, with a machine grant.
 * @returns the exit code.
 * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` (exit 3) when the credential is rejected; ConfigError
 *   for an unreadable credential file; UnavailableError (exit 5) when the IdP or the managed
 *   identity endpoint cannot be reached, or an Arc challenge file is refused; `ERR_CANCELLED`.
 */
export async function runMachineLogin(ctx: CommandContext, config: EdgeTokenConfig): Promise<number> {
  assertSaneClock()
  const identity = requireIdentity(config)
  const [{ openTokenStore }, { acquireTokenSilent, readAccountStatus }] = await Promise.all([
    import('../../store/token-store.js'),
    import('../../store/cache.js'),
  ])
  const store = await openTokenStore({
    stateDir: config.stateDir,
    env: ctx.env,
    keyFile: config.keyFile,
    onWarning: ctx.warn,
  })
  const base = machineAcquisitionFor(config, ctx.env, store, ctx.signal)
  if (base === undefined) throw new TypeError('runMachineLogin needs a machine grant')
  let account: Account | undefined
  try {
    await acquireTokenSilent(store, {
      authority: identity.authority,
      clientId: identity.clientId,
      scopes: identity.scopes,
      forceRefresh: true,
      signal: ctx.signal,
      machine: {
        grant: base.grant,
        acquire: async (scopes, context) => {
          const acquired = await base.acquire(scopes, context)
          account = acquired.account
          return acquired
        },
      },
    })
  } catch (err) {
    if (ctx.signal.aborted && !isEdgeTokenError(err, 'ERR_CANCELLED')) {
      throw new EdgeTokenError('ERR_CANCELLED', 'sign-in cancelled', { cause: err })
    }
    throw err
  }
  // Another process acquired after this call began (a forced acquisition shares it): its account.
  const id = account?.id ?? (await readAccountStatus(store, identity)).account?.id ?? identity.clientId
  ctx.emit({ event: 'signed_in', account: { id } })
  ctx.say(
    `edgetoken: ${config.grant === 'managed_identity' ? 'managed identity' : 'client credentials'} work: signed in as ${id}`,
  )
  return ExitCode.ok
}
