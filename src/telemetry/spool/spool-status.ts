/**
 * The spool's persisted state files and a cheap, read-only summary of the spool for `status`.
 *
 * This module imports only `node:` built-ins (no HTTP client), so `edgetoken status` stays fast.
 *
 * @packageDocumentation
 */
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { openNoFollow } from '../../lib/fs/no-follow.js'
import { isFiniteNumber, isNonEmptyString, isObject } from '../../lib/validate.js'
import { parseSegmentName, scanFrames } from './record-format.js'
import { ioError, readJsonFile } from './spool-fs.js'

/** The spool directory inside the state directory. */
export const SPOOL_DIR_NAME = 'spool'
/** The uploader's state file (acknowledged position, batch in flight, counters). */
export const STATE_FILE = 'state.json'
/** The writers' drop counter. */
export const DROPS_FILE = 'drops.json'
/** Batches the API rejected (4xx), one JSON object per line. */
export const DEAD_LETTER_FILE = 'dead-letter.ndjson'

/** The outcome of the last upload attempt, for `status`. */
export interface LastUpload {
  /** When it ended, ISO 8601 UTC without milliseconds. */
  at: string
  /** `ok` (drained or delivered), or what stopped it. */
  result: 'ok' | 'unavailable' | 'signin_required' | 'captive_portal' | 'error'
  /** The HTTP status of the last answer, when there was one. */
  status?: number
  /** Records delivered in that run. */
  delivered?: number
  /** One line about what went wrong, when something did. */
  message?: string
}

/** The batch the uploader declared before sending it, so a re-send after a crash is identical. */
export interface InflightBatch {
  /** Global index of its first record. */
  start: number
  /** How many records it holds. */
  count: number
  /** Its `seq` on the wire. */
  seq: number
  /** The segment (start index) it lives in. */
  segment: number
  /** Byte offset of its first frame in that segment. */
  offset: number
  /** Byte offset just past its last frame. */
  endOffset: number
}

/** The uploader's persisted state (`spool/state.json`). */
export interface SpoolState {
  /** Random id of this spool, part of every batch id (a reset spool never reuses old ids). */
  spoolId: string
  /** Global index of the first record not yet acknowledged by the API. */
  acked: number
  /** Byte position of `acked` inside its segment, so a restart does not scan. */
  cursor?: { segment: number; index: number; offset: number } | undefined
  /** The `seq` of the next new batch. */
  seq: number
  /** The batch declared and possibly sent, not yet acknowledged. */
  inflight?: InflightBatch | undefined
  /** Records moved to the dead-letter file. */
  deadLetteredRecords: number
  /** Batches moved to the dead-letter file. */
  deadLetteredBatches: number
  /** The last upload's outcome. */
  lastUpload?: LastUpload | undefined
  /** The batch limits in force when this state was written (the first batch after a restart uses them). */
  limits?: { maxRecords: number; maxBytes: number } | undefined
}

const isCount = (v: unknown): v is number => isFiniteNumber(v) && Number.isSafeInteger(v) && v >= 0

function parseInflight(v: unknown): InflightBatch | undefined {
  if (!isObject(v)) return undefined
  const { start, count, seq, segment, offset, endOffset } = v
  if (![start, count, seq, segment, offset, endOffset].every(isCount)) return undefined
  return v as unknown as InflightBatch
}

function parseCursor(v: unknown): SpoolState['cursor'] {
  if (!isObject(v) || !isCount(v.segment) || !isCount(v.index) || !isCount(v.offset)) return undefined
  return { segment: v.segment, index: v.index, offset: v.offset }
}

function parseLastUpload(v: unknown): LastUpload | undefined {
  if (!isObject(v) || !isNonEmptyString(v.at) || !isNonEmptyString(v.result)) return undefined
  const out: LastUpload = { at: v.at, result: v.result as LastUpload['result'] }
  if (isCount(v.status)) out.status = v.status
  if (isCount(v.delivered)) out.delivered = v.delivered
  if (isNonEmptyString(v.message)) out.message = v.message
  return out
}

/**
 * Validates a parsed `state.json`.
 *
 * @param value - the parsed file (`unknown`).
 * @returns the state, or undefined when it is missing or malformed.
 */
export function parseSpoolState(value: unknown): SpoolState | undefined {
  if (!isObject(value) || !isNonEmptyString(value.spoolId) || !isCount(value.acked) || !isCount(value.seq)) {
    return undefined
  }
  return {
    spoolId: value.spoolId,
    acked: value.acked,
    cursor: parseCursor(value.cursor),
    seq: value.seq,
    inflight: parseInflight(value.inflight),
    deadLetteredRecords: isCount(value.deadLetteredRecords) ? value.deadLetteredRecords : 0,
    deadLetteredBatches: isCount(value.deadLetteredBatches) ? value.deadLetteredBatches : 0,
    lastUpload: parseLastUpload(value.lastUpload),
    limits:
      isObject(value.limits) && isCount(value.limits.maxRecords) && isCount(value.limits.maxBytes)
        ? { maxRecords: value.limits.maxRecords, maxBytes: value.limits.maxBytes }
        : undefined,
  }
}

/**
 * Reads the drop counter file.
 *
 * @param dir - the spool directory.
 * @returns records dropped so far because the spool was full.
 */
export async function readDropped(dir: string): Promise<number> {
  const v = await readJsonFile(join(dir, DROPS_FILE))
  return isObject(v) && isCount(v.dropped) ? v.dropped : 0
}

/** What `status` shows about the spool. */
export interface SpoolStatus {
  /** Records waiting to be uploaded. */
  pending: number
  /** Records dropped (oldest first) because the spool was full. */
  dropped: number
  /** Records the API rejected for good, kept in the dead-letter file. */
  deadLettered: number
  /** The last upload's outcome, when there was one. */
  lastUpload?: LastUpload
}

/**
 * Summarises the spool under `stateDir` without locking or changing it, and without reading the
 * backlog: segment names give the record counts, only the newest segment is scanned.
 *
 * @param stateDir - the state directory (the spool is `<stateDir>/spool`).
 * @returns pending, dropped and dead-lettered record counts and the last upload result; all zero
 *   when there is no spool yet.
 * @throws StoreError `ERR_STORE_UNREADABLE` when the spool directory is a symbolic link not made
 *   by root, or a spool file is a link (nothing is read through them); `ERR_IO` when a file cannot
 *   be read.
 * @example
 * ```ts
 * const { pending } = await readSpoolStatus('/var/lib/edgetoken')
 * ```
 */
export async function readSpoolStatus(stateDir: string): Promise<SpoolStatus> {
  const dir = join(stateDir, SPOOL_DIR_NAME)
  try {
    return await summarise(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pending: 0, dropped: 0, deadLettered: 0 }
    throw ioError(err, 'reading the spool')
  }
}

async function summarise(dir: string): Promise<SpoolStatus> {
  const link = await lstat(dir)
  if (link.isSymbolicLink() && link.uid !== 0) {
    // The rule of openSpool's directory check; read-only here, so ownership is not insisted on.
    throw Object.assign(new Error(`ELOOP: symbolic link, lstat '${dir}'`), { code: 'ELOOP', path: dir })
  }
  const names = await readdir(dir)
  const starts = names
    .map(parseSegmentName)
    .filter((n): n is number => n !== undefined)
    .sort((a, b) => a - b)
  const state = parseSpoolState(await readJsonFile(join(dir, STATE_FILE)))
  const dropped = await readDropped(dir)
  let pending = 0
  const first = starts[0]
  const tail = starts.at(-1)
  if (first !== undefined && tail !== undefined) {
    const end = tail + (await countTail(join(dir, names.find((n) => parseSegmentName(n) === tail) ?? '')))
    pending = Math.max(0, end - Math.max(state?.acked ?? 0, first))
  }
  const out: SpoolStatus = { pending, dropped, deadLettered: state?.deadLetteredRecords ?? 0 }
  if (state?.lastUpload) out.lastUpload = state.lastUpload
  return out
}

async function countTail(path: string): Promise<number> {
  let handle: Awaited<ReturnType<typeof openNoFollow>>
  try {
    handle = await openNoFollow(path, 'read')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    throw err
  }
  try {
    const { size } = await handle.stat()
    return (await scanFrames(handle, 0, size)).count
  } finally {
    await handle.close()
  }
}
