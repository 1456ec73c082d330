/**
 * What a `token` call asks for (its options, the configuration, the opened store) and the line it
 * prints. Shared by the command and by the executable's cached answer (./cached-token.ts), so the
 * two cannot read a flag, a configuration or a store differently, or print a token differently.
 */
import { assertSaneClock } from '../agent/clock.js'
import { loadConfig, requireIdentity } from '../config/load.js'
import type { EdgeTokenConfig, OptionValues } from '../config/types.js'
import { ConfigError } from '../errors.js'
import { isoSeconds } from '../lib/time.js'
import type { SilentTokenResult } from '../store/cache.js'
import { openTokenStore, type TokenStore } from '../store/token-store.js'
import { openSignedInStore } from './configured-store.js'

/** Reads `--min-ttl-seconds` (or `EDGETOKEN_MIN_TTL_SECONDS`): up to nine digits. */
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

/** The scopes asked for: `--scope` (repeatable, space-separated lists allowed), else the configured ones. */
function requestedScopes(value: unknown, configured: readonly string[]): readonly string[] {
  if (!Array.isArray(value) || value.length === 0) return configured
  // `--scope "a b"` and `--scope a --scope b` mean the same.
  const scopes = value.flatMap((s) => String(s).split(/\s+/)).filter((s) => s.length > 0)
  if (scopes.length === 0)
    throw new ConfigError('--scope must not be empty', { key: 'scope', code: 'ERR_USAGE' })
  return scopes
}

/** A `token` call, ready for silent acquisition. */
export interface TokenRequest {
  /** The configured authority and client id: which account. */
  readonly authority: string
  readonly clientId: string
  /** `--scope`, else the configured scopes. */
  readonly scopes: readonly string[]
  /** `--min-ttl-seconds`, 0 when not given. */
  readonly minTtlSeconds: number
  /** `--force-refresh`. */
  readonly forceRefresh: boolean
  /** The opened token store. */
  readonly store: TokenStore
  /** The configuration (the grant, and a machine's credential or identity). */
  readonly config: EdgeTokenConfig
  /**
   * `--claims`, as given (JSON, or the base64 `claims=` of a challenge): checked by the command,
   * which always asks the authorization server then (`forceRefresh` is true with it).
   */
  readonly claims?: string | undefined
}

/**
 * Reads a `token` call's options and configuration, checks the clock, and opens the store.
 *
 * @param options - the parsed options (flags and their environment variables).
 * @param env - the environment (configuration, key file).
 * @param onWarning - receives the store's one-line warnings (a key file readable by others).
 * @param create - create the store when there is none, for a machine grant (the command does;
 *   the cached answer does not, so it touches no file). Default false.
 * @returns the request.
 * @throws ConfigError for bad options or configuration; EdgeTokenError `ERR_SIGNIN_REQUIRED` when
 *   there is no store; UnavailableError when the clock is before the build date; StoreError when
 *   the key or the state directory is unusable.
 */
export async function openTokenRequest(
  options: OptionValues,
  env: NodeJS.ProcessEnv,
  onWarning: (line: string) => void,
  create = false,
): Promise<TokenRequest> {
  const minTtlSeconds = parseMinTtl(options['min-ttl-seconds'])
  assertSaneClock()
  const config = await loadConfig({ options, env })
  const { authority, clientId, scopes: configured } = requireIdentity(config)
  const scopes = requestedScopes(options.scope, configured)
  // A machine with no user (client credentials, managed identity) acquires on first use: the
  // command creates its store then, as a sign-in would (openTokenStore is already loaded here).
  const store =
    config.grant !== 'device_code' && create
      ? await openTokenStore({ stateDir: config.stateDir, env, keyFile: config.keyFile, onWarning })
      : await openSignedInStore(config, env, onWarning)
  return {
    authority,
    clientId,
    scopes,
    minTtlSeconds,
    // A token that satisfies a claims challenge can only come from the authorization server.
    forceRefresh: options['force-refresh'] === true || typeof options.claims === 'string',
    store,
    config,
    ...(typeof options.claims === 'string' ? { claims: options.claims } : {}),
  }
}

/**
 * What `token` prints: the access token, or with `--json`
 * `{"access_token","expires_at","scope","token_type"}` (`token_type` `Bearer` or `DPoP`).
 *
 * @param result - the silent acquisition's answer.
 * @param json - `--json`.
 * @returns one line, with its newline. Holds a secret: write it to stdout only.
 */
export function tokenLine(result: SilentTokenResult, json: boolean): string {
  const line = json
    ? JSON.stringify({
        access_token: result.accessToken,
        expires_at: isoSeconds(result.expiresAt),
        scope: result.scopes.join(' '),
        // RFC 9449 §7.1: a DPoP token goes out as `Authorization: DPoP` with a proof (`proof`).
        token_type: result.tokenType,
      })
    : result.accessToken
  return `${line}\n`
}
