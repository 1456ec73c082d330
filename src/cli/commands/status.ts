/**
 * `edgetoken status`: the account, the access token's expiry and the telemetry spool. Reads only:
 * no network, no lock, and no key is generated on a machine that has no store yet.
 */
import { loadConfig } from '../../config/load.js'
import { isoSeconds } from '../../lib/time.js'
import type { AccountStatus } from '../../store/cache.js'
import { readAccountStatus } from '../../store/cache.js'
import { readSpoolStatus } from '../../telemetry/spool-status.js'
import { openExistingStore } from '../configured-store.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken status [--json]

Shows whether this device is signed in, the account, when the cached access token expires, and
how many telemetry records wait in the spool. Makes no network request.

With --json, prints one object:
  {"signed_in":bool,"needs_sign_in":bool,"account":{"id","username"?,"tenant"?}|null,
   "access_token_expires_at":"2026-11-25T10:00:00Z"|null,
   "spool":{"pending":N,"dropped":N,"dead_lettered":N,"last_upload"?:{...}}}

Exit codes: 0 ok, 2 config, 6 token store unreadable.`

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
  if (ctx.json) {
    ctx.stdout.write(
      `${JSON.stringify({
        signed_in: status.signedIn,
        needs_sign_in: status.needsSignIn,
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
    return ExitCode.ok
  }
  const signedIn = status.signedIn
    ? 'yes'
    : status.needsSignIn
      ? "no (sign-in required: run 'edgetoken login')"
      : 'no'
  const lines = [`signed in: ${signedIn}`]
  if (account) lines.push(`account: ${account.username ? `${account.username} (${account.id})` : account.id}`)
  if (expiresAt) {
    const past = (status.accessTokenExpiresAt ?? 0) <= Date.now()
    lines.push(`access token ${past ? 'expired' : 'expires'}: ${expiresAt}`)
  }
  lines.push(`spool: ${spool.pending} pending, ${spool.dropped} dropped, ${spool.deadLettered} dead-lettered`)
  if (spool.lastUpload) lines.push(`last upload: ${spool.lastUpload.at} ${spool.lastUpload.result}`)
  for (const line of lines) ctx.stdout.write(`${line}\n`)
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
