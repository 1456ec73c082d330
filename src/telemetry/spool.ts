/**
 * The durable telemetry spool: append-only segment files under `<stateDir>/spool/`, bounded in
 * bytes, that survive crashes, power loss and long outages of the API.
 *
 * - `append()` resolves only once the records are on disk (fdatasync). Appends that arrive while a
 *   write is in progress share the next write and fsync (group commit).
 * - When the bound is reached, the oldest segment is deleted and its unacknowledged records are
 *   counted as dropped (`drops.json`), never silently.
 * - A torn frame at the end of the newest segment (power loss mid-write) is cut off before the next
 *   write; older segments were fsynced before the spool moved past them.
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
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto'
import { mkdir, open, readFile, rename, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { EdgeTokenError } from '../errors.js'
import { writeFileAtomic } from '../lib/durable-file.js'
import { acquireFileLock, type FileLock } from '../lib/file-lock.js'
import { isoSeconds } from '../lib/time.js'
import { type ReadRun, SegmentLog, type SpoolIo, type Tail } from './segment-log.js'
import { ioError, readJsonFile, spoolLockOptions } from './spool-fs.js'
import {
  DEAD_LETTER_FILE,
  type InflightBatch,
  type LastUpload,
  parseSpoolState,
  readDropped,
  SPOOL_DIR_NAME,
  type SpoolState,
  STATE_FILE,
} from './spool-status.js'

export type { SpoolIo } from './segment-log.js'

/** Default bound of the spool on disk: 64 MiB, sized for an SD card. */
export const DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024

/** Options of {@link openSpool}. */
export interface OpenSpoolOptions {
  /** The bound on disk, bytes. Default {@link DEFAULT_SPOOL_MAX_BYTES} (64 MiB); at least 64 KiB. */
  maxBytes?: number
  /** Size at which a new segment is started. Default maxBytes/16, between 64 KiB and 4 MiB. */
  segmentBytes?: number
  /** The file writes (tests inject failures). */
  io?: SpoolIo
  /**
   * How long reading batches waits for another process's upload lock (`edgetoken upload` while the
   * daemon delivers), ms. Default 0: fail at once with `ERR_BUSY`.
   */
  uploadLockWaitMs?: number
  /** Stops waiting for the upload lock (`ERR_CANCELLED`). */
  signal?: AbortSignal | undefined
}

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

/** Limits of {@link Spool.readBatch}. */
export interface ReadBatchOptions {
  /** At most this many records. Default 500. */
  maxRecords?: number
  /** At most this many bytes of record JSON (one larger record still goes alone). Default 512 KiB. */
  maxBytes?: number
}

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

/** Why the API rejected a batch for good. */
export interface DeadLetterReason {
  /** The HTTP status. */
  status: number
  /** One line from the answer (OAuth-style `error`, or the status text). */
  message: string
}

/** Least time between two background writes of the reader state, ms. */
const STATE_WRITE_INTERVAL_MS = 100
/** Size at which the dead-letter file is rotated (one older generation is kept). */
const DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024
const DEFAULT_BATCH_RECORDS = 500
const DEFAULT_BATCH_BYTES = 512 * 1024
const MIN_SPOOL_BYTES = 64 * 1024

/**
 * Opens (creating when missing, mode 0700) the spool under a state directory.
 *
 * @param stateDir - the state directory; the spool lives in `<stateDir>/spool`.
 * @param options - size bound, segment size, injectable I/O.
 * @returns the open spool; call `close()` when done.
 * @throws EdgeTokenError `ERR_IO` when the directory cannot be created.
 * @example
 * ```ts
 * const spool = await openSpool(config.stateDir, { maxBytes: 32 * 1024 * 1024 })
 * await spool.append([{ t: '2026-11-25T10:00:00Z', temp: 21.5 }])
 * await spool.close()
 * ```
 */
export async function openSpool(stateDir: string, options: OpenSpoolOptions = {}): Promise<Spool> {
  const dir = join(stateDir, SPOOL_DIR_NAME)
  try {
    await mkdir(stateDir, { recursive: true, mode: 0o700 })
    await mkdir(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw ioError(err, `creating ${dir}`)
  }
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
  readonly #readerLockPath: string
  readonly #readerWaitMs: number
  readonly #readerSignal: AbortSignal | undefined
  #readerLock: FileLock | undefined
  #state: SpoolState | undefined
  #prepared: SpoolBatch | undefined
  /** The background state writer (acknowledgements are persisted behind the next request). */
  #writer: Promise<void> | undefined
  #dirty = false
  #urgent = false
  #wake: (() => void) | undefined
  #writeError: unknown
  /** The batch after the one being sent, read ahead. */
  #prefetch: { after: SpoolBatch; promise: Promise<SpoolBatch | undefined> } | undefined
  /** Limits persisted with the state, used until the spool has caught up after a restart. */
  #restartLimits: Required<ReadBatchOptions> | undefined
  #lastLimits: Required<ReadBatchOptions> = {
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
   */
  constructor(dir: string, options: OpenSpoolOptions = {}) {
    this.dir = dir
    const maxBytes = options.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES
    if (!Number.isSafeInteger(maxBytes) || maxBytes < MIN_SPOOL_BYTES) {
      throw new EdgeTokenError(
        'ERR_CONFIG',
        `spool size bound must be an integer >= ${MIN_SPOOL_BYTES} bytes`,
      )
    }
    this.#maxBytes = maxBytes
    this.#log = new SegmentLog(dir, {
      maxBytes,
      segmentBytes:
        options.segmentBytes ?? Math.min(4 * 1024 * 1024, Math.max(64 * 1024, Math.floor(maxBytes / 16))),
      io: options.io,
      ackedHint: () => this.#state?.acked,
    })
    this.#readerLockPath = join(dir, 'upload.lock')
    this.#readerWaitMs = Math.max(0, options.uploadLockWaitMs ?? 0)
    this.#readerSignal = options.signal
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
      const state = this.#state ?? parseSpoolState(await readJsonFile(join(this.dir, STATE_FILE)))
      const starts = this.#log.starts()
      const first = starts[0] ?? tail.start
      const end = tail.start + tail.count
      const out: SpoolStats = {
        pending: Math.max(0, end - Math.max(state?.acked ?? 0, first)),
        dropped: await readDropped(this.dir),
        deadLettered: state?.deadLetteredRecords ?? 0,
        bytes: this.#log.totalBytes(),
        segments: starts.length,
      }
      if (state?.lastUpload) out.lastUpload = state.lastUpload
      return out
    })
  }

  /** Takes the uploader lock and loads the reader state (once). */
  async #reader(): Promise<SpoolState> {
    if (this.#state) return this.#state
    if (!this.#readerLock) {
      this.#readerLock = await acquireFileLock(this.#readerLockPath, {
        ...spoolLockOptions('spool uploader'),
        noWait: this.#readerWaitMs === 0,
        timeoutMs: this.#readerWaitMs,
        signal: this.#readerSignal,
        busyError: () => new EdgeTokenError('ERR_BUSY', 'another edgetoken process is uploading this spool'),
      })
    }
    const loaded = parseSpoolState(await readJsonFile(join(this.dir, STATE_FILE)))
    const state = loaded ?? {
      spoolId: randomBytes(6).toString('hex'),
      acked: 0,
      seq: 0,
      deadLetteredRecords: 0,
      deadLetteredBatches: 0,
    }
    if (!loaded) await writeFileAtomic(join(this.dir, STATE_FILE), `${JSON.stringify(state)}\n`)
    this.#restartLimits = state.limits
    this.#state = state
    return state
  }

  /** The limits batches are cut with now: the pre-restart ones until the spool has caught up. */
  #cutLimits(): Required<ReadBatchOptions> {
    return this.#restartLimits ?? this.#lastLimits
  }

  async #saveState(durable = true): Promise<void> {
    const state = this.#state as SpoolState
    state.limits = this.#cutLimits()
    await writeFileAtomic(join(this.dir, STATE_FILE), `${JSON.stringify(state)}\n`, { durable })
  }

  /** Persists the reader state in the background; writes that pile up collapse into one. */
  #scheduleWrite(): void {
    this.#dirty = true
    this.#writer ??= this.#writeLoop()
  }

  async #writeLoop(): Promise<void> {
    try {
      while (this.#dirty) {
        this.#dirty = false
        const started = Date.now()
        const acked = (this.#state as SpoolState).acked
        await this.#locked('saving the spool state', async () => {
          await this.#saveState()
          // Only once the new position is on disk may what lies before it go.
          await this.#log.deleteDelivered(acked)
        })
        // fsync is costly on SD cards (and slows the network path on small machines): while
        // batches keep coming, persist the position at most every STATE_WRITE_INTERVAL_MS.
        const wait = STATE_WRITE_INTERVAL_MS - (Date.now() - started)
        if (this.#dirty && wait > 0 && !this.#closed && !this.#urgent) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(done, wait)
            function done() {
              clearTimeout(timer)
              resolve()
            }
            this.#wake = done
          })
          this.#wake = undefined
        }
      }
    } catch (err) {
      this.#writeError ??= err
    } finally {
      this.#writer = undefined
    }
  }

  /** Waits for the background state writes; rethrows a failure. */
  async #settled(): Promise<void> {
    // Someone waits for the position to be on disk: write now instead of at the next interval.
    this.#urgent = true
    this.#wake?.()
    try {
      while (this.#writer) await this.#writer
    } finally {
      this.#urgent = false
    }
    if (this.#writeError !== undefined) {
      const err = this.#writeError
      this.#writeError = undefined
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
      const found = await this.#locate(state, tail)
      if (!found) return undefined
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
    const promise = this.#readAfter(state, batch).catch(() => undefined)
    this.#prefetch = { after: batch, promise }
  }

  async #readAfter(state: SpoolState, batch: SpoolBatch): Promise<SpoolBatch | undefined> {
    const tail = this.#log.tail
    if (!tail) return undefined
    let segment = batch.segment
    let offset = batch.endOffset
    const next = batch.start + batch.count
    if (segment !== tail.start) {
      const size = await this.#log.sealedSizeOf(segment)
      if (size === undefined) return undefined
      if (offset >= size) {
        // The batch ended its (sealed) segment: the next one starts at the next record index.
        if (!this.#log.has(next)) return undefined
        segment = next
        offset = 0
      }
    }
    const { maxRecords, maxBytes } = this.#cutLimits()
    const found = await this.#cut(state.spoolId, next, segment, offset, maxRecords, maxBytes, batch.seq + 1)
    if (!found || !(found.full || segment !== tail.start)) return undefined
    return found.batch
  }

  /**
   * Finds the batch at the acknowledged position (under the lock): the declared one when it is
   * still there, else a new one within the current limits.
   */
  async #locate(
    state: SpoolState,
    tail: Tail,
  ): Promise<{ batch: SpoolBatch; complete: boolean } | undefined> {
    for (;;) {
      const starts = this.#log.starts()
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
        state.spoolId = randomBytes(6).toString('hex')
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
        const again = await this.#cut(
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
        else offset = await this.#log.skip(segment, state.acked - segment)
      }
      const { maxRecords, maxBytes } = this.#cutLimits()
      const found = await this.#cut(
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
      await this.#log.countDropped(next - state.acked)
      state.acked = next
      state.cursor = undefined
      state.inflight = undefined
    }
  }

  /** Reads records at a position and makes them a batch with its stable key and `seq`. */
  async #cut(
    spoolId: string,
    start: number,
    segment: number,
    offset: number,
    maxRecords: number,
    maxBytes: number,
    seq: number,
  ): Promise<{ batch: SpoolBatch; full: boolean } | undefined> {
    const run: ReadRun | undefined = await this.#log.readRecords(segment, offset, maxRecords, maxBytes)
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
    if (this.#writeError !== undefined) await this.#settled()
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
    this.#scheduleWrite()
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
    const line = `{"at":${JSON.stringify(isoNow())},"batch_id":${JSON.stringify(batch.key)},"seq":${batch.seq},"status":${reason.status},"reason":${JSON.stringify(reason.message)},"records":[${batch.records.join(',')}]}\n`
    const path = join(this.dir, DEAD_LETTER_FILE)
    // Bounded like the spool: past DEAD_LETTER_MAX_BYTES the file becomes `.1` (replacing the older one).
    const size = await stat(path).then(
      (st) => st.size,
      () => 0,
    )
    if (size > DEAD_LETTER_MAX_BYTES) {
      // The older generation is about to be replaced: its records are lost, so they are counted
      // as dropped (never silently).
      const lost = await countDeadLetterRecords(`${path}.1`)
      await rename(path, `${path}.1`).catch(() => {})
      if (lost > 0) await this.#locked('counting dropped records', () => this.#log.countDropped(lost))
    }
    const handle = await open(path, 'a', 0o600)
    try {
      await handle.write(line)
      await handle.datasync()
    } catch (err) {
      throw ioError(err, 'writing the dead-letter file')
    } finally {
      await handle.close()
    }
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
    state.lastUpload = { ...result, at: result.at ?? isoNow() }
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
    this.#wake?.()
    while (this.#writer) await this.#writer
    await this.#log.close()
    if (this.#readerLock) {
      await this.#readerLock.release()
      this.#readerLock = undefined
    }
  }
}

function inflightOf(batch: SpoolBatch): InflightBatch {
  return {
    start: batch.start,
    count: batch.count,
    seq: batch.seq,
    segment: batch.segment,
    offset: batch.offset,
    endOffset: batch.endOffset,
  }
}

/** Records in a dead-letter file (0 when it is missing); lines that do not parse count for nothing. */
async function countDeadLetterRecords(path: string): Promise<number> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    return 0
  }
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

function isoNow(): string {
  return isoSeconds(Date.now())
}
