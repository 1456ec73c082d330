/**
 * The counters of an open spool (`Spool.stats`): what is pending, dropped and dead-lettered, and
 * what the segments take on disk.
 *
 * Separate from the spool because it only reads: it combines the segment log's view with the
 * reader state and the drop counter, like `readSpoolStatus` does for `status` without opening
 * the spool.
 *
 * @internal
 */
import type { SegmentLog, Tail } from './segment-log.js'
import { type LastUpload, readDropped, type SpoolState } from './spool-status.js'

/** Counters of a spool. */
export interface SpoolStats {
  /** Records not yet acknowledged by the API. */
  pending: number
  /** Records dropped: the spool was full, or the dead-letter file rotated them away. */
  dropped: number
  /** Records the API rejected for good (dead-letter file). */
  deadLettered: number
  /** Bytes of segment files on disk. */
  bytes: number
  /** Number of segment files. */
  segments: number
  /** The last upload's outcome. */
  lastUpload?: LastUpload
}

/**
 * Counts a spool. Call under the spool lock, with the tail just synced.
 *
 * @param dir - the spool directory (for the drop counter).
 * @param log - the segment log.
 * @param tail - the newest segment, as just synced.
 * @param state - the reader state, when there is one (records before its position are delivered).
 * @returns pending, dropped, dead-lettered, bytes and segments.
 * @throws the file-system error when the drop counter exists but cannot be read.
 */
export async function countSpool(
  dir: string,
  log: SegmentLog,
  tail: Tail,
  state: SpoolState | undefined,
): Promise<SpoolStats> {
  const starts = log.starts()
  const first = starts[0] ?? tail.start
  const end = tail.start + tail.count
  const out: SpoolStats = {
    pending: Math.max(0, end - Math.max(state?.acked ?? 0, first)),
    dropped: await readDropped(dir),
    deadLettered: state?.deadLetteredRecords ?? 0,
    bytes: log.totalBytes(),
    segments: starts.length,
  }
  if (state?.lastUpload) out.lastUpload = state.lastUpload
  return out
}
