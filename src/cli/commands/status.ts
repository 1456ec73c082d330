/**
 * `edgetoken status`: the account, the access token's expiry and the telemetry spool. Reads only:
 * no network, no lock, and no key is generated on a machine that has no store yet. Exits 3 when
 * someone has to sign in, like `gh auth status`, so scripts can test it without parsing.
 */
import { loadConfig } from '../../config/load.js'
import { isoSeconds } from '../../lib/time.js'
import type { AccountStatus } from '../../store/cache.js'
import { readAccountStatus } from '../../store/cache.js'
import { readSpoolStatus } from '../../telemetry/spool/spool-status.js'
import { openExistingStore } from '../configured-store.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'
import { nextCommand } from '../hints.js'

const HELP = `Usage: edgetoken status [--json]

Shows whether this device is signed in, the account, when the cached access token expires, and
how many telemetry records wait in the spool. Makes no network request.

With --json, prints one object:
  {"signed_in":bool,"needs_sign_in":bool,"account":{"id","username"?,"tenant"?}|null,
   "access_token_expires_at":"2026-11-25T10:00:00Z"|null,
   "spool":{"pending":N,"dropped":N,"dead_lettered":N,"last_upload"?:{...}}}

Signed in means the tokens are usable or can be renewed silently. When nobody has signed in, or
the sign-in has to be repeated (the refresh token was rejected), needs_sign_in is true, the next
step is printed (with --json: on stderr), and the exit code is 3. Judged from the local store
alone: after 'edgetoken logout' too.

Exit codes: 0 signed in, 2 config, 3 sign-in required, 6 token store unreadable.`

async function run(ctx: CommandContext): Promise<number> {
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  const identity =
    config.authority !== undefined && config.clientId !== undefined
      ? { authority: config.authority, clientId: config.clientId }
      : undefined
  let status: AccountStatus = {
    account: null,
    signedIn: false,
    needsSignIn: false,
    accessTokenExpiresAt: null,
  }
  const store = await openExistingStore(config, ctx.env, (line) => ctx.warn(line))
  if (store) status = await readAccountStatus(store, identity)
  const spool = await readSpoolStatus(config.stateDir)
  const account = status.account
    ? {
        id: status.account.id,
        ...(status.account.username !== undefined ? { username: status.account.username } : {}),
        ...(status.account.tenant !== undefined ? { tenant: status.account.tenant } : {}),
      }
    : null
  const expiresAt = status.accessTokenExpiresAt === null ? null : isoSeconds(status.accessTokenExpiresAt)
  // "Usable or refreshable": an account without a refresh token is signed in while its access
  // token lasts. Everything else (no store, no account, a rejected refresh token) needs a sign-in.
  const signedIn =
    status.signedIn ||
    (status.account !== null && !status.needsSignIn && (status.accessTokenExpiresAt ?? 0) > Date.now())
  const exitCode = signedIn ? ExitCode.ok : ExitCode.signinRequired
  const why = signedIn
    ? undefined
    : status.needsSignIn
      ? 'sign-in required: the refresh token was rejected'
      : status.account
        ? 'sign-in required: the tokens expired and none can be renewed'
        : 'nobody has signed in'
  const step = `run: ${nextCommand(ctx.options, 'login')}`
  if (ctx.json) {
    ctx.stdout.write(
      `${JSON.stringify({
        signed_in: signedIn,
        needs_sign_in: !signedIn,
        account,
        access_token_expires_at: expiresAt,
        spool: {
          pending: spool.pending,
          dropped: spool.dropped,
          dead_lettered: spool.deadLettered,
          ...(spool.lastUpload ? { last_upload: spool.lastUpload } : {}),
        },
      })}\n`,
    )
    if (why !== undefined) ctx.stderr.write(`edgetoken: ${why}; ${step}\n`)
    return exitCode
  }
  const lines = [`signed in: ${why === undefined ? 'yes' : `no (${why})`}`]
  if (account) lines.push(`account: ${account.username ? `${account.username} (${account.id})` : account.id}`)
  if (expiresAt) {
    const past = (status.accessTokenExpiresAt ?? 0) <= Date.now()
    lines.push(`access token ${past ? 'expired' : 'expires'}: ${expiresAt}`)
  }
  lines.push(`spool: ${spool.pending} pending, ${spool.dropped} dropped, ${spool.deadLettered} dead-lettered`)
  if (spool.lastUpload) lines.push(`last upload: ${spool.lastUpload.at} ${spool.lastUpload.result}`)
  lines.push(`config: ${config.configFile ?? 'none (environment and defaults)'}`)
  lines.push(`state dir: ${config.stateDir}`)
  if (why !== undefined) lines.push(step)
  for (const line of lines) ctx.stdout.write(`${line}\n`)
  return exitCode
}

const command: CommandModule = { help: HELP, run }
export default command
