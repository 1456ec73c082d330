/**
 * The durable telemetry spool: append-only segment files under `<stateDir>/spool/`, bounded in
 * bytes, that survive crashes, power loss and long outages of the API.
 *
 * - `append()` resolves only once the records are on disk (fdatasync). Appends that arrive while a
 *   write is in progress share the next write and fsync (group commit).
 * - When the bound is reached, the oldest segment is deleted and its unacknowledged records are
 *   counted as dropped (`drops.json`), never silently.
 * - A torn frame at the end of the newest segment (power loss mid-write) is cut off before the next
 *   write; older segments were fsynced before the spool moved past them. Damage with valid frames
 *   after it (bit rot) is not cut: only the damaged records are lost and counted
 *   (`spool-repair.ts`).
 * - The state and spool directories are checked like the token store's, and every spool file is
 *   opened with `O_NOFOLLOW`: a root-run `send` never writes through a planted link.
 * - Opening does not read the backlog: segment names carry record indexes, only the newest
 *   segment is scanned, and the reader's byte cursor is persisted with the acknowledged position.
 * - The uploader's position lives in `state.json` (atomic, durable replace). A batch is declared
 *   there before it is sent, so after a crash the same records go out again with the same batch id
 *   and `seq`: the API deduplicates them by `Idempotency-Key`.
 * - Several processes may use one spool (`send` while `run` uploads): each operation holds a
 *   short lock file; only one process at a time may read batches (the uploader lock).
 *
 * Records are not encrypted: telemetry readings are not secrets (tokens never enter the spool).
 *
 * This module holds the `Spool` itself; its parts live beside it: the segment files in
 * `segment-log.ts`, batches in `spool-batch.ts`, the reader's lock and position in
 * `spool-reader-state.ts`, the background state writes in `write-behind.ts`, the dead-letter file
 * in `dead-letter.ts`, the counters in `spool-stats.ts` and the options in `spool-options.ts`.
 *
 * @packageDocumentation
 */
import { join } from 'node:path'
import { EdgeTokenError } from '../../errors.js'
import type { FileLock } from '../../lib/fs/file-lock.js'
import { isoSeconds } from '../../lib/time.js'
import { ensureStateDir } from '../../store/file.js'
import { appendDeadLetter, type DeadLetterReason } from './dead-letter.js'
import { SegmentLog } from './segment-log.js'
import {
  type BatchLimits,
  DEFAULT_BATCH_BYTES,
  DEFAULT_BATCH_RECORDS,
  locateBatch,
  type ReadBatchOptions,
  readBatchAfter,
  type SpoolBatch,
} from './spool-batch.js'
import { ensureSpoolDir, ioError } from './spool-fs.js'
import { type OpenSpoolOptions, spoolSettings } from './spool-options.js'
import {
  acquireReaderLock,
  inflightOf,
  initialSpoolState,
  loadSpoolState,
  writeSpoolState,
} from './spool-reader-state.js'
import { countSpool, type SpoolStats } from './spool-stats.js'
import { type LastUpload, SPOOL_DIR_NAME, type SpoolState } from './spool-status.js'
import { WriteBehind } from './write-behind.js'

export type { DeadLetterReason } from './dead-letter.js'
export type { SpoolIo } from './segment-log.js'
export type { ReadBatchOptions, SpoolBatch } from './spool-batch.js'
export { DEFAULT_SPOOL_MAX_BYTES, type OpenSpoolOptions } from './spool-options.js'
export type { SpoolStats } from './spool-stats.js'

/** Least time between two background writes of the reader state, ms. */
const STATE_WRITE_INTERVAL_MS = 100

/**
 * Opens (creating when missing, mode 0700) the spool under a state directory.
 *
 * @param stateDir - the state directory; the spool lives in `<stateDir>/spool`.
 * @param options - size bound, segment size, injectable I/O.
 * @returns the open spool; call `close()` when done.
 * @throws ConfigError (exit 2) when the state or spool directory is a symbolic link not made by
 *   root, another user's, or writable by others; StoreError `ERR_STORE_UNREADABLE` (exit 6) when a
 *   spool file is a symbolic link or not a regular file; EdgeTokenError `ERR_IO` when the directory
 *   cannot be created.
 * @example
 * ```ts
 * const spool = await openSpool(config.stateDir, { maxBytes: 32 * 1024 * 1024 })
 * await spool.append([{ t: '2026-11-25T10:00:00Z', temp: 21.5 }])
 * await spool.close()
 * ```
 */
export async function openSpool(stateDir: string, options: OpenSpoolOptions = {}): Promise<Spool> {
  const dir = join(stateDir, SPOOL_DIR_NAME)
  // The token store's checks: a root-run `send` must not write where another user can plant links.
  ensureStateDir(stateDir)
  await ensureSpoolDir(dir)
  const spool = new Spool(dir, options)
  // Recover (cut a torn tail) now, so a crash's damage is repaired before anything else happens.
  await spool.stats()
  return spool
}

/**
 * An open spool. Create with {@link openSpool}.
 */
export class Spool {
  /** The spool directory. */
  readonly dir: string
  readonly #log: SegmentLog
  readonly #readerWaitMs: number
  readonly #readerSignal: AbortSignal | undefined
  #readerLock: FileLock | undefined
  #state: SpoolState | undefined
  #prepared: SpoolBatch | undefined
  /** The background state writer (acknowledgements are persisted behind the next request). */
  readonly #stateWriter = new WriteBehind(() => this.#persist(), STATE_WRITE_INTERVAL_MS)
  /** The batch after the one being sent, read ahead. */
  #prefetch: { after: SpoolBatch; promise: Promise<SpoolBatch | undefined> } | undefined
  /** Limits persisted with the state, used until the spool has caught up after a restart. */
  #restartLimits: BatchLimits | undefined
  #lastLimits: BatchLimits = {
    maxRecords: DEFAULT_BATCH_RECORDS,
    maxBytes: DEFAULT_BATCH_BYTES,
  }
  #closed = false
  readonly #maxBytes: number
  readonly #appendListeners = new Set<() => void>()
  /** The segment fingerprint when an idle check last found nothing pending. */
  #idleMark: string | undefined

  /**
   * @param dir - the spool directory (already created).
   * @param options - see {@link OpenSpoolOptions}.
   * @throws EdgeTokenError `ERR_CONFIG` when the size bound is not an integer of at least 64 KiB.
   */
  constructor(dir: string, options: OpenSpoolOptions = {}) {
    this.dir = dir
    const settings = spoolSettings(options)
    this.#maxBytes = settings.maxBytes
    this.#log = new SegmentLog(dir, {
      maxBytes: settings.maxBytes,
      segmentBytes: settings.segmentBytes,
      io: settings.io,
      ackedHint: () => this.#state?.acked,
      onWarning: settings.onWarning,
    })
    this.#readerWaitMs = settings.uploadLockWaitMs
    this.#readerSignal = settings.signal
  }

  /**
   * Appends records durably. Resolves once they are written and fsynced; concurrent calls share
   * one write and one fsync.
   *
   * @param records - JSON objects, each at most 1 MiB as JSON.
   * @returns when the records are on disk.
   * @throws EdgeTokenError `ERR_INVALID_INPUT` for a non-object or oversized record (nothing of
   *   this call is written), `ERR_IO` when the disk fails (nothing of this call is acknowledged).
   */
  append(records: readonly unknown[]): Promise<void> {
    const appended = this.#log.append(records)
    if (this.#appendListeners.size > 0 && records.length > 0) {
      appended.then(
        () => {
          for (const listener of this.#appendListeners) listener()
        },
        () => {},
      )
    }
    return appended
  }

  /**
   * The most record bytes one {@link Spool.append} may carry (frames included): a quarter of the
   * bound, so an append always fits next to a group-commit partner under the half-bound limit.
   * Callers with much input cut it into appends of at most this size.
   */
  get maxAppendBytes(): number {
    return Math.floor(this.#maxBytes / 4)
  }

  /**
   * Calls `listener` after each successful append through this object (the daemon's uploader
   * wakes on it instead of polling the directory).
   *
   * @param listener - called with no arguments; must not throw.
   * @returns a function that removes the listener.
   */
  onAppend(listener: () => void): () => void {
    this.#appendListeners.add(listener)
    return () => {
      this.#appendListeners.delete(listener)
    }
  }

  /**
   * Records pending, for an idle poll: when no writer touched the segments since the last poll
   * found nothing (two `stat` calls, no lock, nothing written), 0 without looking further; else
   * {@link Spool.stats}.
   *
   * @returns the records pending.
   */
  async pollPending(): Promise<number> {
    let mark: string | undefined
    try {
      mark = this.#log.fingerprint()
    } catch {
      mark = undefined // look properly below
    }
    if (mark !== undefined && mark === this.#idleMark) return 0
    const { pending } = await this.stats()
    // Taken before stats(): an append after it changes the tail's size, so it is never missed.
    this.#idleMark = pending === 0 ? mark : undefined
    return pending
  }

  /** Runs `fn` under the spool lock, mapping file-system errors to `ERR_IO`. */
  #locked<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return this.#log.locked(what, fn)
  }

  /**
   * Current counters (takes the spool lock briefly; repairs a torn tail if one is found).
   *
   * @returns pending, dropped, dead-lettered, bytes and segments.
   */
  async stats(): Promise<SpoolStats> {
    return this.#locked('reading the spool', async () => {
      const tail = await this.#log.sync()
      const state = this.#state ?? (await loadSpoolState(this.dir))
      return countSpool(this.dir, this.#log, tail, state)
    })
  }

  /** Takes the uploader lock and loads the reader state (once). */
  async #reader(): Promise<SpoolState> {
    if (this.#state) return this.#state
    if (!this.#readerLock) {
      this.#readerLock = await acquireReaderLock(this.dir, this.#readerWaitMs, this.#readerSignal)
    }
    let state: SpoolState
    try {
      const loaded = await loadSpoolState(this.dir)
      state = loaded ?? initialSpoolState()
      if (!loaded) await writeSpoolState(this.dir, state)
    } catch (err) {
      throw ioError(err, 'reading the spool state')
    }
    this.#restartLimits = state.limits
    this.#state = state
    return state
  }

  /** The limits batches are cut with now: the pre-restart ones until the spool has caught up. */
  #cutLimits(): BatchLimits {
    return this.#restartLimits ?? this.#lastLimits
  }

  async #saveState(durable = true): Promise<void> {
    const state = this.#state as SpoolState
    state.limits = this.#cutLimits()
    await writeSpoolState(this.dir, state, durable)
  }

  /** One background write of the reader state (see {@link Spool.ack}). */
  async #persist(): Promise<void> {
    const acked = (this.#state as SpoolState).acked
    await this.#locked('saving the spool state', async () => {
      await this.#saveState()
      // Only once the new position is on disk may what lies before it go.
      await this.#log.deleteDelivered(acked)
    })
  }

  /** Waits for the background state writes; rethrows a failure. */
  async #settled(): Promise<void> {
    try {
      // Someone waits for the position to be on disk: it is written now, not at the next interval.
      await this.#stateWriter.settled()
    } catch (err) {
      throw ioError(err, 'saving the spool state')
    }
  }

  /**
   * The next batch from the acknowledged position: the batch in flight before a crash (same
   * records, id and `seq`), else a new one. A batch that is not complete (the end of the data
   * so far) is declared durably in `state.json` before it is returned. Only one process at a time
   * may read batches. Pass the same limits on every call of a process.
   *
   * @param limits - record count and byte limits.
   * @returns the batch, or undefined when nothing is pending.
   * @throws EdgeTokenError `ERR_BUSY` when another process holds the uploader lock (past
   *   `uploadLockWaitMs`), `ERR_IO` when the state cannot be written.
   */
  async readBatch(limits: ReadBatchOptions = {}): Promise<SpoolBatch | undefined> {
    this.#lastLimits = {
      maxRecords: Math.max(1, limits.maxRecords ?? DEFAULT_BATCH_RECORDS),
      maxBytes: Math.max(1, limits.maxBytes ?? DEFAULT_BATCH_BYTES),
    }
    const state = await this.#reader()
    const prepared = this.#prepared
    if (prepared && prepared.start === state.acked) {
      this.#startPrefetch(prepared)
      return prepared
    }
    await this.#settled()
    const found = await this.#locked('reading a batch', async () => {
      const tail = await this.#log.sync()
      const before = { acked: state.acked, spoolId: state.spoolId }
      const found = await locateBatch(this.#log, state, tail, () => this.#cutLimits())
      if (!found) {
        // The position moved past damaged or dropped records with no batch after them: kept, or
        // the next start would count the same records as dropped again (issue 16).
        if (state.acked !== before.acked || state.spoolId !== before.spoolId) await this.#saveState()
        return undefined
      }
      // Every batch sent before a crash was complete and cut with these limits, or was declared
      // here; past the first incomplete batch, the new limits apply.
      if (!found.complete) this.#restartLimits = undefined
      state.inflight = inflightOf(found.batch)
      await this.#saveState()
      return found
    })
    this.#prepared = found?.batch
    if (found) this.#startPrefetch(found.batch)
    return found?.batch
  }

  /**
   * Reads the batch after `batch` in the background while `batch` is being sent (no lock needed:
   * it reads only data known to be complete and fsynced). Used by {@link Spool.ack} when complete.
   */
  #startPrefetch(batch: SpoolBatch): void {
    if (this.#prefetch?.after === batch) return
    const state = this.#state as SpoolState
    const promise = readBatchAfter(this.#log, state, batch, () => this.#cutLimits()).catch(() => undefined)
    this.#prefetch = { after: batch, promise }
  }

  /**
   * Marks a batch as delivered. The new position (and the next batch, when it is complete) is
   * persisted in the background, behind the next request; fully delivered segments are deleted
   * once it is on disk.
   *
   * Why this is safe: until that write lands, `state.json` names an earlier batch as in flight.
   * After a crash that batch is sent again with the same id (the API deduplicates it), and every
   * later batch that may have gone out was complete, so it is cut again exactly as before (same
   * records, id and `seq`, with the limits saved in the state). An incomplete batch is never sent
   * before its declaration is on disk ({@link Spool.readBatch}).
   *
   * @param batch - the batch last returned by {@link Spool.readBatch}.
   * @throws EdgeTokenError `ERR_INTERNAL` when it is not the batch at the acknowledged position;
   *   `ERR_IO` when an earlier state write failed.
   */
  async ack(batch: SpoolBatch): Promise<void> {
    const state = await this.#reader()
    if (batch.start !== state.acked) {
      throw new EdgeTokenError('ERR_INTERNAL', 'spool: acknowledged batch is not the next one')
    }
    if (this.#stateWriter.failed) await this.#settled()
    state.acked = batch.start + batch.count
    state.seq = Math.max(state.seq, batch.seq + 1)
    state.cursor = { segment: batch.segment, index: state.acked, offset: batch.endOffset }
    state.inflight = undefined
    this.#prepared = undefined
    const prefetch = this.#prefetch
    this.#prefetch = undefined
    const next = prefetch?.after === batch ? await prefetch.promise : undefined
    if (next && next.start === state.acked && next.seq === state.seq) {
      this.#prepared = next
      state.inflight = inflightOf(next)
    }
    // Persisted in the background; writes that pile up collapse into one.
    this.#stateWriter.schedule()
  }

  /**
   * Waits until every acknowledgement is on disk.
   *
   * @throws EdgeTokenError `ERR_IO` when a state write failed.
   */
  async flush(): Promise<void> {
    await this.#settled()
  }

  /**
   * Moves a batch the API rejected for good (400, 413, 422) to the dead-letter file with the
   * reason, then acknowledges it so the spool moves on. The file is bounded: past 8 MiB it becomes
   * `dead-letter.ndjson.1`, and the records of the generation this replaces are counted in
   * `dropped`.
   *
   * @param batch - the batch last returned by {@link Spool.readBatch}.
   * @param reason - the status and a one-line message.
   */
  async deadLetter(batch: SpoolBatch, reason: DeadLetterReason): Promise<void> {
    const state = await this.#reader()
    await appendDeadLetter(this.dir, batch, reason, (lost) =>
      this.#locked('counting dropped records', () => this.#log.countDropped(lost)),
    )
    state.deadLetteredRecords += batch.count
    state.deadLetteredBatches += 1
    await this.ack(batch)
    await this.#settled()
  }

  /**
   * Records the outcome of an upload run for `status` (atomic, not fsynced: it is informational).
   *
   * @param result - what happened.
   */
  async setLastUpload(result: Omit<LastUpload, 'at'> & { at?: string }): Promise<void> {
    const state = await this.#reader()
    await this.#settled()
    state.lastUpload = { ...result, at: result.at ?? isoSeconds(Date.now()) }
    await this.#locked('saving the upload result', () => this.#saveState(false))
  }

  /**
   * Gives up the uploader lock, once every acknowledgement is on disk: the daemon does this while
   * the spool is empty, so `edgetoken upload` can run meanwhile and nothing is written while idle
   * (a held lock is touched every 10 s). The next {@link Spool.readBatch} takes it again and reloads
   * the position, which another uploader may have moved.
   *
   * @throws EdgeTokenError `ERR_IO` when a state write failed (the lock is then kept).
   */
  async releaseReader(): Promise<void> {
    if (!this.#readerLock) return
    await this.#settled()
    const lock = this.#readerLock
    this.#readerLock = undefined
    this.#state = undefined
    this.#prepared = undefined
    this.#prefetch = undefined
    this.#restartLimits = undefined
    await lock.release()
  }

  /**
   * Waits for pending appends, releases the uploader lock and closes the files.
   */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#stateWriter.close()
    await this.#log.close()
    if (this.#readerLock) {
      await this.#readerLock.release()
      this.#readerLock = undefined
    }
  }
}
