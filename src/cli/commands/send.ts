/**
 * `edgetoken send`: reads NDJSON records from stdin and appends them durably to the spool.
 * Exit 0 means every accepted record is on disk (fsynced).
 */
import { loadConfig } from '../../config/load.js'
import { ConfigError, EdgeTokenError } from '../../errors.js'
import { readNdjson } from '../../telemetry/ndjson.js'
import { openSpool } from '../../telemetry/spool.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken send [--on-invalid reject|skip] [--json] < records.ndjson

Reads one JSON object per line from stdin (at most 64 KiB per line) and appends the records to
the telemetry spool in <state-dir>/spool. Exit 0 means they are on disk; 'edgetoken upload' or
'edgetoken run' delivers them.

Options:
  --on-invalid reject   (default) any bad line rejects the whole input: nothing is spooled,
                        every bad line is named on stderr, exit 2 (the records are held in
                        memory until the end of the input)
  --on-invalid skip     spool the good lines as they come, warn about each bad one, exit 0
  --json                NDJSON events on stdout: {"event":"invalid_line","line","message"}...,
                        then {"event":"spooled","records","skipped"}

Exit codes: 0 on disk, 1 disk error (e.g. disk full; nothing of the failed write is kept),
            2 invalid input or config.`

/** Records handed to the spool at once in skip mode (bounded memory for endless input). */
const CHUNK_RECORDS = 2000
/** Bad lines named individually; the rest are only counted. */
const MAX_NAMED = 100

async function run(ctx: CommandContext): Promise<number> {
  const mode = ctx.options['on-invalid'] ?? 'reject'
  if (mode !== 'reject' && mode !== 'skip') {
    throw new ConfigError(`--on-invalid must be 'reject' or 'skip', got '${String(mode)}'`, {
      key: 'on-invalid',
      code: 'ERR_USAGE',
    })
  }
  const config = await loadConfig({ options: ctx.options, env: ctx.env })
  const spool = await openSpool(config.stateDir, { maxBytes: config.telemetry?.spoolMaxBytes })
  try {
    let records: Record<string, unknown>[] = []
    let spooled = 0
    let bad = 0
    for await (const item of readNdjson(ctx.stdin)) {
      if ('error' in item) {
        bad++
        ctx.emit({ event: 'invalid_line', line: item.line, message: item.error })
        if (bad <= MAX_NAMED) {
          const line = `line ${item.line}: ${item.error}`
          if (mode === 'skip') ctx.warn(`${line} (skipped)`)
          else ctx.stderr.write(`edgetoken: ${line}\n`)
        }
        // In reject mode nothing will be spooled: stop holding records, keep naming bad lines.
        if (mode === 'reject') records = []
        continue
      }
      if (mode === 'reject' && bad > 0) continue
      records.push(item.record)
      if (mode === 'skip' && records.length >= CHUNK_RECORDS) {
        await spool.append(records)
        spooled += records.length
        records = []
      }
    }
    if (bad > MAX_NAMED) ctx.stderr.write(`edgetoken: ... and ${bad - MAX_NAMED} more invalid lines\n`)
    if (mode === 'reject' && bad > 0) {
      throw new EdgeTokenError(
        'ERR_INVALID_INPUT',
        `${bad} invalid line${bad === 1 ? '' : 's'}; nothing was spooled (use --on-invalid skip to keep the good ones)`,
      )
    }
    // Queued together, the chunks share the spool's group commits.
    const chunks: Promise<void>[] = []
    for (let i = 0; i < records.length; i += CHUNK_RECORDS) {
      chunks.push(spool.append(records.slice(i, i + CHUNK_RECORDS)))
    }
    const results = await Promise.allSettled(chunks)
    const failed = results.find((r) => r.status === 'rejected')
    if (failed) throw failed.reason
    spooled += records.length
    ctx.emit({ event: 'spooled', records: spooled, skipped: bad })
    if (!ctx.json)
      ctx.say(`spooled ${spooled} record${spooled === 1 ? '' : 's'}${bad ? `, skipped ${bad}` : ''}`)
    return ExitCode.ok
  } finally {
    await spool.close()
  }
}

const command: CommandModule = { help: HELP, run }
export default command
