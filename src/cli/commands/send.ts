/**
 * `edgetoken send`: reads NDJSON records from stdin and appends them durably to the spool.
 * Exit 0 means every accepted record is on disk (fsynced).
 */
import { loadConfig } from '../../config/load.js'
import { ConfigError, EdgeTokenError } from '../../errors.js'
import { readNdjson } from '../../telemetry/ndjson.js'
import { FRAME_HEADER_BYTES } from '../../telemetry/spool/record-format.js'
import { openSpool, type Spool } from '../../telemetry/spool/spool.js'
import type { CommandContext, CommandModule } from '../context.js'
import { ExitCode } from '../exit-codes.js'

const HELP = `Usage: edgetoken send [--on-invalid reject|skip] [--json] < records.ndjson

Reads one JSON object per line from stdin (at most 64 KiB per line, nested at most 64 levels
deep) and appends the records to the telemetry spool in <state-dir>/spool. Exit 0 means they
are on disk; 'edgetoken upload' or 'edgetoken run' delivers them.

Options:
  --on-invalid reject   (default) any bad line rejects the whole input: nothing is spooled,
                        every bad line is named on stderr, exit 2 (the records are held in
                        memory until the end of the input)
  --on-invalid skip     spool the good lines as they come, warn about each bad one, exit 0
  --json                NDJSON events on stdout: {"event":"invalid_line","line","message"}...,
                        then {"event":"spooled","records","skipped"}

The records are written in chunks of at most a quarter of the spool bound. If a write fails
after earlier chunks are on disk, those first records stay spooled: the error says how many
(with --json, {"event":"spooled","records":N} comes before the error event) and the rest of
the input from there on was not spooled.

Exit codes: 0 on disk, 1 disk error (e.g. disk full, or a record too large for the spool;
            nothing of the failed chunk is kept), 2 invalid input or config (also a state or spool
            directory that is a symbolic link, another user's, or writable by others), 6 a spool
            file is a symbolic link or not a regular file (nothing is written through it).`
/** Records per append at most (bounds the memory skip mode holds for endless input). */
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
  const spool = await openSpool(config.stateDir, {
    maxBytes: config.telemetry?.spoolMaxBytes,
    onWarning: (line) => ctx.warn(line),
  })
  const chunker = new Chunker(spool)
  try {
    let records: Record<string, unknown>[] = []
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
      // Skip mode spools as it reads (bounded memory for endless input).
      if (mode === 'skip') await chunker.add(item.record)
      else records.push(item.record)
    }
    if (bad > MAX_NAMED) ctx.stderr.write(`edgetoken: ... and ${bad - MAX_NAMED} more invalid lines\n`)
    if (mode === 'reject' && bad > 0) {
      throw new EdgeTokenError(
        'ERR_INVALID_INPUT',
        `${bad} invalid line${bad === 1 ? '' : 's'}; nothing was spooled (use --on-invalid skip to keep the good ones)`,
      )
    }
    for (const record of records) await chunker.add(record)
    await chunker.flush()
    const spooled = chunker.spooled
    ctx.emit({ event: 'spooled', records: spooled, skipped: bad })
    if (!ctx.json)
      ctx.say(`spooled ${spooled} record${spooled === 1 ? '' : 's'}${bad ? `, skipped ${bad}` : ''}`)
    return ExitCode.ok
  } catch (err) {
    if (chunker.spooled > 0 && err instanceof EdgeTokenError) {
      // Part of the input is on disk: say so, or a retry of the whole input duplicates it.
      ctx.emit({ event: 'spooled', records: chunker.spooled })
      const n = chunker.spooled
      throw new EdgeTokenError(
        err.code,
        `${err.message}; the first ${n} record${n === 1 ? ' was' : 's were'} spooled, the rest of the input was not`,
        { cause: err },
      )
    }
    throw err
  } finally {
    await spool.close()
  }
}

/**
 * Cuts records into appends of at most {@link Spool.maxAppendBytes} (one append must stay well
 * under half the spool bound, whatever the size of the records), written one after the other so
 * that what is on disk after a failure is always the first `spooled` records.
 */
class Chunker {
  readonly #spool: Spool
  readonly #limit: number
  #chunk: Record<string, unknown>[] = []
  #bytes = 0
  /** Records on disk so far. */
  spooled = 0

  constructor(spool: Spool) {
    this.#spool = spool
    this.#limit = spool.maxAppendBytes
  }

  async add(record: Record<string, unknown>): Promise<void> {
    const bytes = Buffer.byteLength(JSON.stringify(record)) + FRAME_HEADER_BYTES
    if (
      this.#chunk.length >= CHUNK_RECORDS ||
      (this.#chunk.length > 0 && this.#bytes + bytes > this.#limit)
    ) {
      await this.flush()
    }
    this.#chunk.push(record)
    this.#bytes += bytes
  }

  async flush(): Promise<void> {
    if (this.#chunk.length === 0) return
    const chunk = this.#chunk
    this.#chunk = []
    this.#bytes = 0
    await this.#spool.append(chunk)
    this.spooled += chunk.length
  }
}

const command: CommandModule = { help: HELP, run }
export default command
