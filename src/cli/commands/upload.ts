/**
 * `edgetoken upload`: uploads everything pending in the spool, then exits. 0 = drained; any other
 * exit leaves every undelivered record in the spool.
 */

import { assertSaneClock } from '../../agent/clock.js'
import { loadConfig } from '../../config/load.js'
import { ConfigError } from '../../errors.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken upload [--json]

Uploads every record pending in the telemetry spool to telemetry.endpoint, in batches, with the
signed-in account's access token, then exits. A failed batch is retried a few times with
back-off (Retry-After honoured). Batches the API rejects for their content or size (400, 413,
422) go to <state-dir>/spool/dead-letter.ndjson; any other refusal (403, 404, 405, 410, 415, ...)
means the endpoint or the token's scope is wrong: nothing is dead-lettered, upload stops at once
with exit 5 and a message naming the status.

Options:
  --json   NDJSON events on stdout: {"event":"retry",...}, {"event":"dead_letter",...},
           then {"event":"uploaded","records","batches","dead_lettered","pending"}

While 'edgetoken run' is delivering the same spool, upload waits up to 30 s for it to finish.

Exit codes: 0 spool drained, 2 config (or a state or spool directory that is a symbolic link,
            another user's, or writable by others), 3 sign-in required, 5 API unavailable, endpoint
            refused (403, 404, ...), a captive portal answered, or another process kept uploading
            for 30 s, 6 a spool file is a symbolic link or not a regular file; with any non-zero
            code the spool keeps what was not delivered.`

/** How long to wait for another uploader (the daemon) that holds the spool's upload lock, ms. */
const UPLOAD_LOCK_WAIT_MS = 30_000

async function run(ctx: CommandContext): Promise<number> {
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  assertSaneClock()
  const telemetry = config.telemetry
  const endpoint = telemetry?.endpoint
  if (!endpoint) {
    throw new ConfigError(
      'config: telemetry.endpoint is not set (config file key telemetry.endpoint or EDGETOKEN_TELEMETRY_ENDPOINT)',
      { key: 'telemetry.endpoint' },
    )
  }
  const [{ openSpool }, { Uploader }, { createTokenSource }] = await Promise.all([
    import('../../telemetry/spool/spool.js'),
    import('../../telemetry/upload/uploader.js'),
    import('../token-source.js'),
  ])
  const getAccessToken = await createTokenSource(config, {
    env: ctx.env,
    signal: ctx.signal,
    onWarning: (line) => ctx.warn(line),
  })
  // The daemon holds the upload lock only while it delivers: wait for it to finish (then nothing is
  // left, exit 0) rather than fail at once; it keeps the lock while the API is down (then exit 5).
  const spool = await openSpool(config.stateDir, {
    maxBytes: telemetry?.spoolMaxBytes,
    uploadLockWaitMs: UPLOAD_LOCK_WAIT_MS,
    signal: ctx.signal,
    onWarning: (line) => ctx.warn(line),
  })
  const uploader = new Uploader({
    spool,
    endpoint,
    deviceId: config.deviceId,
    getAccessToken,
    batchMaxRecords: telemetry?.batchMaxRecords,
    backoffBaseMs: 500,
    backoffCapMs: 10_000,
    onEvent: (event) => {
      switch (event.type) {
        case 'retry':
          ctx.emit({
            event: 'retry',
            batch_id: event.batchId,
            attempt: event.attempt,
            delay_ms: event.delayMs,
            ...(event.status === undefined ? {} : { status: event.status }),
            message: event.reason,
          })
          ctx.warn(`${event.reason}; retrying in ${Math.ceil(event.delayMs / 1000)} s`)
          break
        case 'dead-letter':
          ctx.emit({
            event: 'dead_letter',
            batch_id: event.batchId,
            records: event.records,
            status: event.status,
            message: event.reason,
          })
          ctx.warn(`the API rejected batch ${event.batchId} (${event.reason}); moved to the dead-letter file`)
          break
        default:
          break
      }
    },
  })
  try {
    const result = await uploader.drain({ signal: ctx.signal })
    const { pending } = await spool.stats()
    ctx.emit({
      event: 'uploaded',
      records: result.delivered,
      batches: result.batches,
      dead_lettered: result.deadLettered,
      pending,
    })
    if (!ctx.json) {
      ctx.say(
        `uploaded ${result.delivered} record${result.delivered === 1 ? '' : 's'} in ${result.batches} batch${result.batches === 1 ? '' : 'es'}` +
          (result.deadLettered ? `, ${result.deadLettered} dead-lettered` : ''),
      )
    }
    return ExitCode.ok
  } finally {
    await uploader.close()
    await spool.close()
  }
}

const command: CommandModule = { help: HELP, run }
export default command
