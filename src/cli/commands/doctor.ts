/**
 * `edgetoken doctor [--json]`: is this gateway ready? One line per check (ok / warn / fail, with
 * the fix), NDJSON with `--json`; exit 0 only when nothing fails. The checks run concurrently,
 * each within 5 s; they send no token and no secret anywhere it would not go anyway (see
 * ../doctor/network.ts for exactly what is sent).
 */
import { loadConfig } from '../../config/load.js'
import type { EdgeTokenConfig } from '../../config/types.js'
import type { CommandContext, CommandModule } from '../context.js'
import { checkBroker } from '../doctor/broker.js'
import { checkClockAgainst, checkCredential, checkKey, checkProxy, checkStateDir } from '../doctor/local.js'
import { checkIdp, checkTelemetry } from '../doctor/network.js'
import { type CheckName, type CheckResult, type DoctorInput, describe, result } from '../doctor/types.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken doctor [--json]

Checks that this gateway is ready, one line per check, in this order:
  config     the config file and environment load (the loader's message when not)
  clock      not before this build, and within 60 s (warn) / 300 s (fail) of the servers' Date
  key        the store key is there (key file, systemd credential, or generated), >= 32 bytes,
             readable, mode 0600 or stricter
  state_dir  the state directory is ours and not writable by others (or can be created)
  credential client_credentials only: the credential files are there and readable
  idp        discovery, and the endpoints the configured grant needs, answer
             (managed_identity: the Arc or instance metadata endpoint answers)
  broker     when mqtt.url is set: a connection with the configured TLS files and credentials
  telemetry  the ingest URL answers 401 to a request without a token
  proxy      which HTTP proxy each service is reached through (HTTPS_PROXY, NO_PROXY)

Each line is 'ok', 'warn' or 'FAIL', the check, what was found, and the fix. With --json, one
NDJSON object per check: {"event":"check","check","status":"ok"|"warn"|"fail","message","fix"?}.

Nothing secret is sent: the IdP gets a discovery GET and empty POSTs (no client id, no
credential), the API an empty POST without Authorization, the broker the configured credentials.
The checks run concurrently, each within 5 s. Run it in the service's environment (its
EDGETOKEN_* variables, systemd credentials and proxy settings) to check what the service sees.

Exit codes: 0 nothing failed (warnings allowed), 2 a local check failed (config, key, state dir,
credential, proxy), 5 only network checks (or the clock) failed.`

/** Each check's budget, ms. */
export const CHECK_TIMEOUT_MS = 5000

const ORDER: readonly CheckName[] = [
  'config',
  'clock',
  'key',
  'state_dir',
  'credential',
  'idp',
  'broker',
  'telemetry',
  'proxy',
]
const LOCAL: ReadonlySet<CheckName> = new Set(['config', 'key', 'state_dir', 'credential', 'proxy'])

/** Runs a check, turning anything it throws into its failure. */
async function guarded<T extends CheckResult | undefined>(
  check: CheckName,
  run: () => Promise<T>,
): Promise<T | CheckResult> {
  try {
    return await run()
  } catch (err) {
    return result(check, 'fail', describe(err), 'run with --debug and report it')
  }
}

async function runChecks(
  config: EdgeTokenConfig,
  ctx: CommandContext,
  configResult: CheckResult,
): Promise<CheckResult[]> {
  const input: DoctorInput = { config, env: ctx.env, signal: ctx.signal, timeoutMs: CHECK_TIMEOUT_MS }
  const [key, stateDir, credential, idp, broker, telemetry] = await Promise.all([
    guarded('key', () => checkKey(input)),
    guarded('state_dir', () => checkStateDir(input)),
    guarded('credential', () => checkCredential(input)),
    checkIdp(input),
    guarded('broker', () => checkBroker(input)),
    checkTelemetry(input),
  ])
  const targets: [string, URL][] = []
  if (config.grant !== 'managed_identity' && config.authority !== undefined)
    targets.push(['IdP', new URL(config.authority)])
  if (config.telemetry?.endpoint !== undefined) targets.push(['API', new URL(config.telemetry.endpoint)])
  const proxy = await guarded('proxy', () => checkProxy(input, targets))
  const clock = checkClockAgainst([...idp.dates, ...telemetry.dates])
  return [configResult, clock, key, stateDir, credential, idp.result, broker, telemetry.result, proxy].filter(
    (r): r is CheckResult => r !== undefined,
  )
}

function line(r: CheckResult): string {
  const status = r.status === 'fail' ? 'FAIL' : r.status
  return `${status.padEnd(4)}  ${r.check.padEnd(10)} ${r.message}${r.fix === undefined ? '' : `; fix: ${r.fix}`}`
}

async function run(ctx: CommandContext): Promise<number> {
  const warnings: string[] = []
  let results: CheckResult[]
  try {
    const config = await loadConfig({ options: ctx.options, env: ctx.env, warn: (w) => warnings.push(w) })
    const where = config.configFile ?? 'no config file (environment and defaults)'
    const configResult =
      warnings.length > 0
        ? result(
            'config',
            'warn',
            `${where}: ${warnings[0]}`,
            'chmod 600 the file, or move the password to mqtt.passwordFile',
          )
        : result(
            'config',
            'ok',
            `${where} (grant ${config.grant ?? 'device_code'}, device ${config.deviceId})`,
          )
    results = await runChecks(config, ctx, configResult)
  } catch (err) {
    // Nothing else can be judged without a configuration; the clock still can.
    const fix = 'fix the key named: edgetoken config set KEY VALUE (or config unset KEY)'
    results = [result('config', 'fail', describe(err), fix), checkClockAgainst([])]
  } finally {
    // Close the HTTP connections the checks opened, so the process ends at once.
    const { setHttpDispatcher } = await import('../../oauth/http.js')
    setHttpDispatcher(undefined)
  }
  results.sort((a, b) => ORDER.indexOf(a.check) - ORDER.indexOf(b.check))
  for (const r of results) {
    if (ctx.json) ctx.stdout.write(`${JSON.stringify({ event: 'check', ...r })}\n`)
    else ctx.stdout.write(`${line(r)}\n`)
  }
  const failed = results.filter((r) => r.status === 'fail')
  if (failed.length === 0) return ExitCode.ok
  return failed.some((r) => LOCAL.has(r.check)) ? ExitCode.usage : ExitCode.unavailable
}

const command: CommandModule = { help: HELP, run }
export default command
