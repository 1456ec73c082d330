/**
 * `edgetoken run`: the agent daemon ({@link runDaemon}): silent renewal ahead of expiry, MQTT
 * ingest, the upload loop, systemd notifications, until SIGTERM.
 */
import { keepWasmOnBaselineCompiler } from '../../agent/daemon/daemon-memory.js'
import { loadConfig } from '../../config/load.js'
import { EdgeTokenError } from '../../errors.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken run [--config FILE] [--state-dir DIR] [--json] [--debug]

The agent daemon. Runs until SIGTERM or SIGINT:
  - renews the access token silently ahead of its expiry (with random jitter, so a fleet does
    not renew in lock-step), backing off while the authorization server is unreachable;
  - subscribes to <topicPrefix>/<deviceId>/readings (when mqtt.url is configured), validates
    each reading and appends it durably to the spool; invalid ones are dropped and counted;
  - uploads the spool to telemetry.endpoint (when configured) in order, backing off while the
    API is down; nothing is lost while it is; a claims challenge (401 insufficient_claims) is
    answered with one refresh asking for those claims (and clientCapabilities, sent with every
    refresh);
  - publishes retained 'online' on <topicPrefix>/<deviceId>/status (last will 'offline');
  - when the refresh token is dead, says so on stderr (and in the systemd status), keeps
    spooling, and resumes once the device is signed in again: by 'edgetoken login', or by a pair
    request on <topicPrefix>/<deviceId>/pair when mqtt.allowPair is true (the code is shown on
    stderr and the companion display). Pair requests are ignored while the device is signed in,
    and their sign-in is refused (its new tokens revoked) when it is for another account than
    the stored one: switching accounts takes 'edgetoken login' on the device;
  - stops with exit 6 when the token store cannot be read (another key, tampered, another
    machine's), at the start or later, after closing MQTT and the uploads: retrying cannot
    help, and systemd does not restart it (RestartPreventExitStatus=6);
  - under systemd (Type=notify) sends READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1.
SIGTERM flushes and exits 0 within 10 seconds.

Log (stderr; the journal under systemd): changes of state and problems, and every 10 minutes
one summary line ('last 10 min: received N readings, uploaded N records in M batches,
K renewals; spool P pending').

Options:
  --json     NDJSON events on stdout: {"event":"ready"}, {"event":"renewed","expires_at",...},
             {"event":"uploaded","batch_id","seq","records"}, {"event":"signin_required"},
             {"event":"signed_in"}, {"event":"stopped"}, one per event at every log level;
             log lines go to stderr
  --debug    also a line per uploaded batch and per token renewal (config logLevel "debug",
             env EDGETOKEN_LOG_LEVEL=debug, does the same without stack traces)
  --config FILE, --state-dir DIR   see 'edgetoken --help'

Exit codes: 0 stopped by a signal, 2 usage/config, 6 token store unreadable, 1 internal error.`

async function run(ctx: CommandContext): Promise<number> {
  // Before anything can load undici: optimizing its WebAssembly HTTP parser, after the first
  // upload, was a 30-35 MiB RSS peak outside the JS heap (daemon-memory.ts).
  keepWasmOnBaselineCompiler()
  if (ctx.args.length > 0)
    throw new EdgeTokenError('ERR_USAGE', `run takes no arguments (got '${ctx.args[0]}')`)
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  const [{ runDaemon }, { createNotifier }, { refreshFor, machineAcquisitionFor }] = await Promise.all([
    import('../../agent/daemon/daemon.js'),
    import('../../agent/notify.js'),
    import('../token-source.js'),
  ])
  const notifier = createNotifier(ctx.env, { onError: (err) => ctx.warn(`systemd notify: ${err.message}`) })
  const log = (line: string) => ctx.stderr.write(`${line}\n`)
  // --debug (stack traces too) or logLevel debug (the per-event lines alone).
  const debug = ctx.debug || config.logLevel === 'debug'
  await runDaemon({
    config,
    env: ctx.env,
    signal: ctx.signal,
    log,
    warn: ctx.warn,
    ...(debug ? { debug: log } : {}),
    emit: ctx.emit,
    // agent/ does not import cli/: the one refresh callback is handed in; the daemon adds a claims
    // challenge and the configured clientCapabilities to each refresh it builds.
    refreshFor,
    machineFor:
      config.grant === 'device_code'
        ? undefined
        : (store, signal) => machineAcquisitionFor(config, ctx.env, store, signal),
    notifier,
  })
  return ExitCode.ok
}

const command: CommandModule = { help: HELP, run }
export default command
