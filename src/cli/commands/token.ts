/**
 * `edgetoken token`: prints a valid access token, refreshing silently when needed.
 *
 * The cached path must stay cheap (see ARCHITECTURE "token"): config, store and envelope only.
 * Discovery and the refresh grant (undici, jose) are imported inside the refresh callback
 * ({@link refreshFor}), which runs only when the cached token is not good enough.
 */

import { assertSaneClock } from '../../agent/clock.js'
import { loadConfig, requireIdentity } from '../../config/load.js'
import { ConfigError, EdgeTokenError } from '../../errors.js'
import { isoSeconds } from '../../lib/time.js'
import { acquireTokenSilent } from '../../store/cache.js'
import { openTokenStore, tokenStoreExists } from '../../store/token-store.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'
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

function parseMinTtl(value: unknown): number {
  if (value === undefined) return 0
  if (typeof value !== 'string' || !/^\d{1,9}$/.test(value)) {
    throw new ConfigError(`--min-ttl-seconds must be a whole number of seconds, got '${String(value)}'`, {
      key: 'min-ttl-seconds',
      code: 'ERR_USAGE',
    })
  }
  return Number(value)
}

function requestedScopes(value: unknown, configured: readonly string[]): readonly string[] {
  if (!Array.isArray(value) || value.length === 0) return configured
  // `--scope "a b"` and `--scope a --scope b` mean the same.
  const scopes = value.flatMap((s) => String(s).split(/\s+/)).filter((s) => s.length > 0)
  if (scopes.length === 0)
    throw new ConfigError('--scope must not be empty', { key: 'scope', code: 'ERR_USAGE' })
  return scopes
}

async function run(ctx: CommandContext): Promise<number> {
  const minTtlSeconds = parseMinTtl(ctx.options['min-ttl-seconds'])
  assertSaneClock()
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  const { authority, clientId, scopes: configured } = requireIdentity(config)
  const scopes = requestedScopes(ctx.options.scope, configured)
  if (!tokenStoreExists(config.stateDir)) {
    throw new EdgeTokenError('ERR_SIGNIN_REQUIRED', "not signed in: run 'edgetoken login'")
  }
  const store = await openTokenStore({
    stateDir: config.stateDir,
    env: ctx.env,
    keyFile: config.keyFile,
    onWarning: (line) => ctx.warn(line),
  })
  const result = await acquireTokenSilent(store, {
    authority,
    clientId,
    scopes,
    minTtlSeconds,
    forceRefresh: ctx.options['force-refresh'] === true,
    signal: ctx.signal,
    refresh: refreshFor(authority, clientId, store, ctx.signal),
  })
  if (result.warning) ctx.warn(result.warning)
  const line = ctx.json
    ? JSON.stringify({
        access_token: result.accessToken,
        expires_at: isoSeconds(result.expiresAt),
        scope: result.scopes.join(' '),
      })
    : result.accessToken
  ctx.stdout.write(`${line}\n`)
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
