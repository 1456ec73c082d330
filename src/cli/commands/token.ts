/**
 * `edgetoken token`: prints a valid access token, refreshing silently when needed.
 *
 * The cached path must stay cheap (see ARCHITECTURE "token"): config, store and envelope only.
 * Discovery and the refresh grant (undici, jose) are imported inside the refresh callback
 * ({@link refreshFor}), which runs only when the cached token is not good enough.
 */

import { ConfigError } from '../../errors.js'
import { acquireTokenSilent } from '../../store/cache.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'
import { openTokenRequest, tokenLine } from '../token-request.js'
import { machineAcquisitionFor, preloadRefresh, refreshFor } from '../token-source.js'

const HELP = `Usage: edgetoken token [--scope S]... [--min-ttl-seconds N] [--force-refresh]
                      [--claims CLAIMS] [--json]

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
  --claims CLAIMS        ask for a token that satisfies a claims challenge: the JSON claims
                         request, or the base64 claims="..." value of the API's WWW-Authenticate
                         header as received; always refreshes, and the new token replaces the
                         cached one. A challenge the refresh token cannot meet exits 3
                         (sign in again). Env EDGETOKEN_CLAIMS
  --json                 print {"access_token","expires_at","scope","token_type"} instead;
                         token_type DPoP: send it as 'Authorization: DPoP' with a proof
                         ('edgetoken proof')

Exit codes: 0 ok, 2 usage/config, 3 sign-in required, 5 authorization server unavailable,
            6 token store unreadable.`

/** Checks `--claims` (JSON or a challenge's base64), as a usage error naming the flag. */
async function checkedClaims(value: string): Promise<string> {
  const { claimsFromArgument } = await import('../../oauth/claims.js')
  try {
    return claimsFromArgument(value)
  } catch (err) {
    const what = err instanceof Error ? err.message : String(err)
    throw new ConfigError(`--claims: ${what}`, { key: 'claims', code: 'ERR_USAGE', cause: err })
  }
}

async function run(ctx: CommandContext): Promise<number> {
  const request = await openTokenRequest(ctx.options, ctx.env, (line) => ctx.warn(line), true)
  const { authority, clientId, scopes, minTtlSeconds, forceRefresh, store } = request
  // The executable's cached path stepped aside: a refresh is likely; load its modules before the lock.
  if (request.config.grant === 'device_code') preloadRefresh()
  const claims = request.claims === undefined ? undefined : await checkedClaims(request.claims)
  if (claims !== undefined && request.config.grant !== 'device_code') {
    const grant = request.config.grant
    throw new ConfigError(`--claims needs a signed-in user; the configured grant is ${grant}`, {
      key: 'claims',
      code: 'ERR_USAGE',
    })
  }
  const result = await acquireTokenSilent(store, {
    authority,
    clientId,
    scopes,
    minTtlSeconds,
    forceRefresh,
    signal: ctx.signal,
    refresh: refreshFor(authority, clientId, store, ctx.signal, {
      claims,
      clientCapabilities: request.config.clientCapabilities,
    }),
    machine: machineAcquisitionFor(request.config, ctx.env, store, ctx.signal),
  })
  if (result.warning) ctx.warn(result.warning)
  ctx.stdout.write(tokenLine(result, ctx.json))
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
