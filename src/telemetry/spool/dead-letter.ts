/**
 * The spool's dead-letter file (`spool/dead-letter.ndjson`): batches the API rejected for good,
 * one JSON object per line with the reason, bounded by rotating to one older generation.
 *
 * Separate from the spool because it is a file of its own with its own bound; the spool only
 * decides when a batch goes here and keeps the counters.
 *
 * @internal
 */
import { rename } from 'node:fs/promises'
import { join } from 'node:path'
import { openNoFollow, readTextNoFollow, regularFileSize } from '../../lib/fs/no-follow.js'
import { isoSeconds } from '../../lib/time.js'
import type { SpoolBatch } from './spool-batch.js'
import { ioError } from './spool-fs.js'
import { DEAD_LETTER_FILE } from './spool-status.js'

/** Why the API rejected a batch for good. */
export interface DeadLetterReason {
  /** The HTTP status. */
  status: number
  /** One line from the answer (OAuth-style `error`, or the status text). */
  message: string
}

/** Size at which the dead-letter file is rotated (one older generation is kept). */
const DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024

/**
 * Appends a rejected batch to the dead-letter file and fsyncs it. Past 8 MiB the file first
 * becomes `dead-letter.ndjson.1`, replacing the older generation, whose records are then lost:
 * they are handed to `countDropped` so they are counted, never silently gone.
 *
 * @param dir - the spool directory.
 * @param batch - the rejected batch.
 * @param reason - the status and a one-line message.
 * @param countDropped - adds records to the spool's drop counter (takes the spool lock itself).
 * @throws EdgeTokenError `ERR_IO` when the file cannot be opened, written or synced; what
 *   `countDropped` throws.
 */
export async function appendDeadLetter(
  dir: string,
  batch: Pick<SpoolBatch, 'key' | 'seq' | 'records'>,
  reason: DeadLetterReason,
  countDropped: (records: number) => Promise<void>,
): Promise<void> {
  // The records are already JSON texts: spliced in as they are, not parsed and serialised again.
  const line = `{"at":${JSON.stringify(isoSeconds(Date.now()))},"batch_id":${JSON.stringify(batch.key)},"seq":${batch.seq},"status":${reason.status},"reason":${JSON.stringify(reason.message)},"records":[${batch.records.join(',')}]}\n`
  const path = join(dir, DEAD_LETTER_FILE)
  // Bounded like the spool: past DEAD_LETTER_MAX_BYTES the file becomes `.1` (replacing the older one).
  let size: number
  try {
    size = (await regularFileSize(path)) ?? 0
  } catch (err) {
    throw ioError(err, 'writing the dead-letter file')
  }
  if (size > DEAD_LETTER_MAX_BYTES) {
    // The older generation is about to be replaced: its records are lost, so they are counted
    // as dropped (never silently).
    const lost = await countDeadLetterRecords(`${path}.1`)
    await rename(path, `${path}.1`).catch(() => {})
    if (lost > 0) await countDropped(lost)
  }
  let handle: Awaited<ReturnType<typeof openNoFollow>> | undefined
  try {
    // Never appended through a link planted under its name (ELOOP: exit 6).
    handle = await openNoFollow(path, 'append')
    await handle.write(line)
    await handle.datasync()
  } catch (err) {
    // EACCES, ENOSPC...: a typed error like every other spool write, not a raw fs error.
    throw ioError(err, 'writing the dead-letter file')
  } finally {
    await handle?.close()
  }
}

/**
 * Counts the records in a dead-letter file.
 *
 * @param path - the file (usually the rotated generation, `dead-letter.ndjson.1`).
 * @returns the records of all its lines; 0 when it is missing, unreadable or a symbolic link.
 *   Lines that do not parse count for nothing.
 */
export async function countDeadLetterRecords(path: string): Promise<number> {
  let text: string | undefined
  try {
    text = await readTextNoFollow(path)
  } catch {
    return 0
  }
  if (text === undefined) return 0
  let count = 0
  for (const line of text.split('\n')) {
    if (line === '') continue
    try {
      const entry = JSON.parse(line) as { records?: unknown }
      if (Array.isArray(entry.records)) count += entry.records.length
    } catch {
      // A torn last line (power loss mid-write) held nothing acknowledged.
    }
  }
  return count
}
