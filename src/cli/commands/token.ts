/**
 * `edgetoken token`: prints a valid access token, refreshing silently when needed.
 *
 * The cached path must stay cheap (see ARCHITECTURE "token"): config, store and envelope only.
 * Discovery and the refresh grant (undici, jose) are imported inside the refresh callback
 * ({@link refreshFor}), which runs only when the cached token is not good enough.
 */

import { acquireTokenSilent } from '../../store/cache.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'
import { openTokenRequest, tokenLine } from '../token-request.js'
import { refreshFor } from '../token-source.js'

const HELP = `Usage: edgetoken token [--scope S]... [--min-ttl-seconds N] [--force-refresh] [--json]

Prints a valid access token on stdout (one line), refreshing it silently when the cached one
expires within 5 minutes (or half its lifetime, when that is shorter).

Options:
  --scope S              ask for these scopes instead of the configured ones (repeatable);
                         tokens are cached per scope set, all from the same refresh token
  --min-ttl-seconds N    the token must stay valid at least N seconds; if the authorization
                         server cannot issue one that lives that long, the freshest is printed
                         with a warning on stderr (exit 0)
  --force-refresh        refresh even when the cached token is valid (concurrent calls may
                         share one refresh that started after they were called)
  --json                 print {"access_token","expires_at","scope"} instead

Exit codes: 0 ok, 2 usage/config, 3 sign-in required, 5 authorization server unavailable,
            6 token store unreadable.`

async function run(ctx: CommandContext): Promise<number> {
  const request = await openTokenRequest(ctx.options, ctx.env, (line) => ctx.warn(line))
  const { authority, clientId, scopes, minTtlSeconds, forceRefresh, store } = request
  const result = await acquireTokenSilent(store, {
    authority,
    clientId,
    scopes,
    minTtlSeconds,
    forceRefresh,
    signal: ctx.signal,
    refresh: refreshFor(authority, clientId, store, ctx.signal),
  })
  if (result.warning) ctx.warn(result.warning)
  ctx.stdout.write(tokenLine(result, ctx.json))
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
