/**
 * Batches of the spool: cutting consecutive records out of the segment log into a batch with a
 * stable id and `seq`, finding the batch at the acknowledged position after a restart, and reading
 * ahead the batch after the one being sent.
 *
 * Kept apart from the `Spool` class because this is where the re-send guarantee lives (the same
 * records get the same id and `seq` after a crash), and it only needs the log and the reader state,
 * not the spool's locks, listeners or background writer.
 *
 * @internal
 */
import type { ReadRun, SegmentLog, Tail } from './segment-log.js'
import { newSpoolId } from './spool-reader-state.js'
import type { SpoolState } from './spool-status.js'

/** A batch read from the spool: consecutive records from the acknowledged position. */
export interface SpoolBatch {
  /** Stable id of the batch: the spool id and the record range (same records, same id, after restarts). */
  readonly key: string
  /** Global index of the first record. */
  readonly start: number
  /** Number of records. */
  readonly count: number
  /** The batch's `seq` on the wire (one more than the previous batch). */
  readonly seq: number
  /** The records' JSON texts, in spool order. */
  readonly records: readonly string[]
  /** Sum of the records' JSON text lengths, bytes. */
  readonly bytes: number
  /** @internal where the batch lives */
  readonly segment: number
  /** @internal */
  readonly offset: number
  /** @internal */
  readonly endOffset: number
}

/** Limits of `Spool.readBatch`. */
export interface ReadBatchOptions {
  /** At most this many records. Default 500. */
  maxRecords?: number
  /** At most this many bytes of record JSON (one larger record still goes alone). Default 512 KiB. */
  maxBytes?: number
}

/** The limits a batch is cut with, defaults applied. */
export type BatchLimits = Required<ReadBatchOptions>

/** Default record count limit of a batch. */
export const DEFAULT_BATCH_RECORDS = 500
/** Default byte limit of a batch (record JSON). */
export const DEFAULT_BATCH_BYTES = 512 * 1024

/** The batch found at the acknowledged position (see {@link locateBatch}). */
export interface LocatedBatch {
  /** The batch. */
  batch: SpoolBatch
  /**
   * Whether a limit or the end of a sealed segment ended it, so it would be cut the same way
   * again; an incomplete batch ends at the end of the data written so far.
   */
  complete: boolean
}

/**
 * Finds the batch at the acknowledged position: the declared (in-flight) one when it is still
 * there, else a new one within the current limits. Call under the spool lock, with the tail just
 * synced.
 *
 * Moves `state` forward past records that are gone: dropped while the reader was away, or
 * unreadable in a damaged sealed segment (those are counted as dropped). When the disk lost
 * acknowledged data, `state` gets a new spool id.
 *
 * @param log - the segment log.
 * @param state - the reader state; updated in place.
 * @param tail - the newest segment, as just synced.
 * @param limits - the limits to cut a new batch with, asked for each time one is cut.
 * @returns the batch, or undefined when nothing is pending.
 * @throws the file-system error when a segment cannot be read or the drop counter written (the
 *   spool lock maps it to `ERR_IO`).
 */
export async function locateBatch(
  log: SegmentLog,
  state: SpoolState,
  tail: Tail,
  limits: () => BatchLimits,
): Promise<LocatedBatch | undefined> {
  for (;;) {
    const starts = log.starts()
    const first = starts[0] ?? tail.start
    if (state.acked < first) {
      // Dropped while we were away (counted by the writer that dropped them).
      state.acked = first
      state.cursor = undefined
      state.inflight = undefined
    }
    const end = tail.start + tail.count
    if (state.acked > end) {
      // The disk lost acknowledged data (or files were removed by hand): record indexes will be
      // used again, so batch ids must change with them, or the API would drop new records as
      // repeats of old ones.
      state.spoolId = newSpoolId()
      state.acked = end
      state.cursor = undefined
      state.inflight = undefined
    }
    if (state.acked >= end) return undefined
    let segment = first
    for (const s of starts) if (s <= state.acked) segment = s
    const sealed = segment !== tail.start
    const inflight = state.inflight
    if (inflight && inflight.start === state.acked && inflight.segment === segment) {
      const again = await cutBatch(
        log,
        state.spoolId,
        state.acked,
        segment,
        inflight.offset,
        inflight.count,
        Infinity,
        inflight.seq,
      )
      if (again?.batch.count === inflight.count) return { batch: again.batch, complete: true }
    }
    let offset = 0
    if (state.acked !== segment) {
      const c = state.cursor
      if (c && c.segment === segment && c.index === state.acked) offset = c.offset
      else offset = await log.skip(segment, state.acked - segment)
    }
    const { maxRecords, maxBytes } = limits()
    const found = await cutBatch(
      log,
      state.spoolId,
      state.acked,
      segment,
      offset,
      maxRecords,
      maxBytes,
      state.seq,
    )
    if (found) return { batch: found.batch, complete: sealed || found.full }
    const next = starts.find((s) => s > segment)
    if (!sealed || next === undefined) return undefined
    // A damaged sealed segment (bit rot on the card): what cannot be read is counted as
    // dropped and skipped, so the spool never stalls on it.
    await log.countDropped(next - state.acked)
    state.acked = next
    state.cursor = undefined
    state.inflight = undefined
  }
}

/**
 * Reads the batch after `batch`, for reading ahead while `batch` is being sent. Needs no lock: it
 * reads only data known to be complete and fsynced, and gives up on anything else.
 *
 * @param log - the segment log.
 * @param state - the reader state (its spool id names the batch).
 * @param batch - the batch being sent.
 * @param limits - the limits to cut the batch with, asked for when it is cut.
 * @returns the next batch, or undefined when it is not complete yet or cannot be read here.
 * @throws the file-system error when a segment cannot be read (the caller ignores it: the batch
 *   is then read under the lock instead).
 */
export async function readBatchAfter(
  log: SegmentLog,
  state: SpoolState,
  batch: SpoolBatch,
  limits: () => BatchLimits,
): Promise<SpoolBatch | undefined> {
  const tail = log.tail
  if (!tail) return undefined
  let segment = batch.segment
  let offset = batch.endOffset
  const next = batch.start + batch.count
  if (segment !== tail.start) {
    const size = await log.sealedSizeOf(segment)
    if (size === undefined) return undefined
    if (offset >= size) {
      // The batch ended its (sealed) segment: the next one starts at the next record index.
      if (!log.has(next)) return undefined
      segment = next
      offset = 0
    }
  }
  const { maxRecords, maxBytes } = limits()
  const found = await cutBatch(log, state.spoolId, next, segment, offset, maxRecords, maxBytes, batch.seq + 1)
  if (!found || !(found.full || segment !== tail.start)) return undefined
  return found.batch
}

/** Reads records at a position and makes them a batch with its stable key and `seq`. */
async function cutBatch(
  log: SegmentLog,
  spoolId: string,
  start: number,
  segment: number,
  offset: number,
  maxRecords: number,
  maxBytes: number,
  seq: number,
): Promise<{ batch: SpoolBatch; full: boolean } | undefined> {
  const run: ReadRun | undefined = await log.readRecords(segment, offset, maxRecords, maxBytes)
  if (!run) return undefined
  const batch: SpoolBatch = {
    key: `${spoolId}-${start}-${run.records.length}`,
    start,
    count: run.records.length,
    seq,
    records: run.records,
    bytes: run.bytes,
    segment,
    offset,
    endOffset: run.endOffset,
  }
  return { batch, full: run.full }
}
