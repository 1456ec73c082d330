/**
 * `edgetoken proof --method M --url U [--nonce N]`: a DPoP proof (RFC 9449 §4) for one request a
 * script makes itself with the current access token, e.g.
 *
 *   curl -H "Authorization: DPoP $(edgetoken token)" -H "DPoP: $(edgetoken proof --method POST --url "$URL")" "$URL"
 *
 * The token is the one `token` prints (refreshed first when it is due), so the two calls agree
 * while it is valid; `--json` prints both in one answer, for scripts that want one call.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-7.1
 */
import { ConfigError, EdgeTokenError } from '../../errors.js'
import { isoSeconds } from '../../lib/time.js'
import { acquireTokenSilent } from '../../store/cache.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'
import { openTokenRequest } from '../token-request.js'
import { machineAcquisitionFor, refreshFor } from '../token-source.js'

const HELP = `Usage: edgetoken proof --method METHOD --url URL [--nonce NONCE] [--json]

Prints a DPoP proof (RFC 9449) of this device's key for one request to a protected API that
takes DPoP-bound tokens: send it as the DPoP header, with 'Authorization: DPoP <token>' where
<token> is what 'edgetoken token' prints. Each proof is good for one request: make a new one per
request. The proof carries the hash of the current token (ath), which is refreshed first when it
is due, as 'edgetoken token' would.

Options:
  --method METHOD   the request's HTTP method (GET, POST, ...)
  --url URL         the request's URL (https://, or http:// for loopback; query and fragment
                    are left out of the proof, as RFC 9449 §4.2 says)
  --nonce NONCE     the API's DPoP-Nonce, when it answered use_dpop_nonce
  --json            print {"proof","access_token","token_type","expires_at"} instead

Example:
  curl -H "Authorization: DPoP $(edgetoken token)" \\
       -H "DPoP: $(edgetoken proof --method GET --url https://api.example/v1/items)" \\
       https://api.example/v1/items

Exit codes: 0 ok, 2 usage/config (also: the token is not DPoP-bound), 3 sign-in required,
            5 authorization server unavailable, 6 token store unreadable.`

function usage(message: string, key: string): ConfigError {
  return new ConfigError(message, { key, code: 'ERR_USAGE' })
}

/** RFC 9110 §9.1: a method is a token; proofs carry it as sent (case-sensitive, §4.2). */
function checkedMethod(value: unknown): string {
  if (typeof value !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/.test(value)) {
    throw usage('--method must be an HTTP method such as GET or POST', 'method')
  }
  return value
}

function checkedUrl(value: unknown): URL {
  if (typeof value !== 'string' || value.length === 0 || value.length > 8192) {
    throw usage('--url must be the absolute URL of the request', 'url')
  }
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw usage('--url must be the absolute URL of the request', 'url')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw usage('--url must be an https:// (or http://) URL', 'url')
  }
  if (url.username || url.password) throw usage('--url must not carry credentials', 'url')
  return url
}

function checkedNonce(value: unknown): string | undefined {
  if (value === undefined) return undefined
  // RFC 9449 §8.1: nonce = 1*NQCHAR.
  if (typeof value !== 'string' || !/^[\x21\x23-\x5b\x5d-\x7e]{1,1024}$/.test(value)) {
    throw usage('--nonce must be the DPoP-Nonce value the API sent', 'nonce')
  }
  return value
}

async function run(ctx: CommandContext): Promise<number> {
  if (ctx.args.length > 0) throw usage(`proof takes no arguments (got '${ctx.args[0]}')`, 'url')
  const method = checkedMethod(ctx.options.method)
  const url = checkedUrl(ctx.options.url)
  const nonce = checkedNonce(ctx.options.nonce)
  const request = await openTokenRequest(ctx.options, ctx.env, (line) => ctx.warn(line))
  const { authority, clientId, scopes, store } = request
  const result = await acquireTokenSilent(store, {
    authority,
    clientId,
    scopes,
    signal: ctx.signal,
    refresh: refreshFor(authority, clientId, store, ctx.signal, {
      clientCapabilities: request.config.clientCapabilities,
    }),
    machine: machineAcquisitionFor(request.config, ctx.env, store, ctx.signal),
  })
  if (result.warning) ctx.warn(result.warning)
  if (result.tokenType !== 'DPoP' || result.dpopKey === undefined) {
    throw new EdgeTokenError(
      'ERR_CONFIG',
      "the current access token is a bearer token, not DPoP-bound: send it as 'Authorization: Bearer' (no proof needed), or set dpop and sign in again",
    )
  }
  const { dpopHandle } = await import('../../oauth/dpop.js')
  const handle = await dpopHandle(result.dpopKey)
  const proof = await handle.proof({ method, url, accessToken: result.accessToken, nonce })
  const line = ctx.json
    ? JSON.stringify({
        proof,
        access_token: result.accessToken,
        token_type: 'DPoP',
        expires_at: isoSeconds(result.expiresAt),
      })
    : proof
  ctx.stdout.write(`${line}\n`)
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
