/**
 * The reader's (uploader's) hold on a spool: the lock that makes it the only one reading batches,
 * and its persisted position in `spool/state.json` (a fresh state, loading it, writing it back,
 * the declaration of the batch in flight).
 *
 * The file's format and validation live in `spool-status.ts`, which `status` reads without the
 * spool; this module holds what only the reader does with it (it writes the file), so
 * `status` does not load the write path.
 *
 * @internal
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { EdgeTokenError } from '../../errors.js'
import { writeFileAtomic } from '../../lib/fs/durable-file.js'
import { acquireFileLock, type FileLock } from '../../lib/fs/file-lock.js'
import { readJsonFile, spoolLockOptions } from './spool-fs.js'
import { type InflightBatch, parseSpoolState, type SpoolState, STATE_FILE } from './spool-status.js'

/** The uploader lock file in the spool directory. */
const READER_LOCK_FILE = 'upload.lock'

/**
 * Takes the uploader lock of a spool, which makes this process the only one reading batches and
 * writing `state.json`.
 *
 * @param dir - the spool directory.
 * @param waitMs - how long to wait for another process's lock, ms; 0 fails at once.
 * @param signal - stops waiting.
 * @returns the held lock.
 * @throws EdgeTokenError `ERR_BUSY` when another process holds it (past `waitMs`),
 *   `ERR_CANCELLED` when `signal` aborts the wait, `ERR_IO` when the lock file cannot be written.
 */
export function acquireReaderLock(
  dir: string,
  waitMs: number,
  signal: AbortSignal | undefined,
): Promise<FileLock> {
  return acquireFileLock(join(dir, READER_LOCK_FILE), {
    ...spoolLockOptions('spool uploader'),
    noWait: waitMs === 0,
    timeoutMs: waitMs,
    signal,
    busyError: () => new EdgeTokenError('ERR_BUSY', 'another edgetoken process is uploading this spool'),
  })
}

/**
 * A new random spool id. Batch ids start with it, so a spool that was reset (or lost data) never
 * reuses the ids of records the API already has.
 *
 * @returns 12 hex characters.
 */
export function newSpoolId(): string {
  return randomBytes(6).toString('hex')
}

/**
 * The state of a reader that has never acknowledged anything.
 *
 * @returns a state at record 0 with a new spool id.
 */
export function initialSpoolState(): SpoolState {
  return {
    spoolId: newSpoolId(),
    acked: 0,
    seq: 0,
    deadLetteredRecords: 0,
    deadLetteredBatches: 0,
  }
}

/**
 * Reads `state.json` of a spool.
 *
 * @param dir - the spool directory.
 * @returns the state, or undefined when the file is missing or malformed.
 * @throws the file-system error when the file exists but cannot be read.
 */
export async function loadSpoolState(dir: string): Promise<SpoolState | undefined> {
  return parseSpoolState(await readJsonFile(join(dir, STATE_FILE)))
}

/**
 * Replaces `state.json` of a spool atomically.
 *
 * @param dir - the spool directory.
 * @param state - the state to write.
 * @param durable - whether to fsync (the position must survive power loss; the last upload's
 *   outcome need not).
 * @throws the file-system error when the file cannot be written.
 */
export async function writeSpoolState(dir: string, state: SpoolState, durable = true): Promise<void> {
  await writeFileAtomic(join(dir, STATE_FILE), `${JSON.stringify(state)}\n`, { durable })
}

/**
 * The declaration of a batch in `state.json`: where it lives and its `seq`, without the records,
 * which are read again from the segment after a crash.
 *
 * @param batch - the batch (a `SpoolBatch`).
 * @returns the fields to persist.
 */
export function inflightOf(batch: Readonly<InflightBatch>): InflightBatch {
  return {
    start: batch.start,
    count: batch.count,
    seq: batch.seq,
    segment: batch.segment,
    offset: batch.offset,
    endOffset: batch.endOffset,
  }
}
