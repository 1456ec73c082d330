/**
 * The segment files of a spool: group-committed durable appends, the size bound (oldest segment
 * dropped and counted), torn-tail repair, and reading frames back. Shared by the spool's writers
 * and its reader; every operation that looks at the directory runs under the spool lock.
 *
 * Every segment is opened with `O_NOFOLLOW` and must be a regular file: a link planted in the
 * spool fails the operation (`ERR_STORE_UNREADABLE`) instead of redirecting a write or a cut.
 *
 * @internal
 */
import { lstatSync } from 'node:fs'
import { type FileHandle, readdir, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { EdgeTokenError } from '../../errors.js'
import { fsyncDirectory, writeFileAtomic } from '../../lib/fs/durable-file.js'
import { withFileLock } from '../../lib/fs/file-lock.js'
import { openNoFollow, regularFileSize } from '../../lib/fs/no-follow.js'
import { isObject } from '../../lib/validate.js'
import { jsonTooDeep, MAX_JSON_DEPTH } from '../json-depth.js'
import { encodeFrame, MAX_RECORD_BYTES, parseSegmentName, scanFrames, segmentName } from './record-format.js'
import { ioError, readJsonFile, spoolLockOptions } from './spool-fs.js'
import { applyRepair, planRepair } from './spool-repair.js'
import { DROPS_FILE, parseSpoolState, readDropped, STATE_FILE } from './spool-status.js'

/** Writes frames to a segment; injectable so tests can make the disk fail (ENOSPC). */
export interface SpoolIo {
  /**
   * Writes all of `data` at `position` of the open segment.
   *
   * @param handle - the segment.
   * @param data - the frames.
   * @param position - the byte offset.
   */
  write(handle: FileHandle, data: Buffer, position: number): Promise<void>
  /**
   * Makes the written data durable.
   *
   * @param handle - the segment.
   */
  sync(handle: FileHandle): Promise<void>
}

const SPOOL_LOCK = spoolLockOptions('spool')

const defaultIo: SpoolIo = {
  async write(handle, data, position) {
    let done = 0
    while (done < data.length) {
      const { bytesWritten } = await handle.write(data, done, data.length - done, position + done)
      done += bytesWritten
    }
  },
  sync: (handle) => handle.datasync(),
}

interface Pending {
  frames: Buffer[]
  bytes: number
  resolve: () => void
  reject: (err: unknown) => void
}

/** The newest segment, open for appending. */
export interface Tail {
  /** Index of its first record. */
  start: number
  /** Open read-write. */
  handle: FileHandle
  /** Bytes of valid, fsynced frames. */
  size: number
  /** Records in it. */
  count: number
}

/** Records read from a segment (see {@link SegmentLog.readRecords}). */
export interface ReadRun {
  /** The records' JSON texts. */
  records: string[]
  /** Sum of their lengths. */
  bytes: number
  /** Byte offset just past the last one. */
  endOffset: number
  /** Whether a limit (count or bytes) ended the run, rather than the end of the data. */
  full: boolean
}

/** A shared read handle of one segment. */
interface Reader {
  segment: number
  handle: FileHandle
  /** The size, once known to be final (sealed). */
  size?: number
  /** Reads in progress through it. */
  users: number
  /** Replaced: close when the last user is done. */
  retired: boolean
}

/** Options of {@link SegmentLog}. */
export interface SegmentLogOptions {
  /** The bound on disk, bytes. */
  maxBytes: number
  /** Size at which a new segment is started. */
  segmentBytes: number
  /** File writes (tests inject failures). */
  io?: SpoolIo | undefined
  /** The reader's acknowledged position in this process, when it is fresher than `state.json`. */
  ackedHint?: () => number | undefined
  /** Receives one line when a damaged segment was repaired. Default `process.emitWarning`. */
  onWarning?: ((line: string) => void) | undefined
}

/** The segment files of one spool directory. */
export class SegmentLog {
  /** The spool directory. */
  readonly dir: string
  readonly #maxBytes: number
  readonly #segmentBytes: number
  readonly #io: SpoolIo
  readonly #lockPath: string
  readonly #ackedHint: () => number | undefined
  readonly #onWarning: (line: string) => void
  /** Segment start index -> bytes on disk, as last seen. */
  #segments = new Map<number, number>()
  #tail: Tail | undefined
  #queue: Pending[] = []
  #flushing: Promise<void> | undefined
  #readHandle: Reader | undefined
  /** Whether this process compared the data's end with the acknowledged position yet. */
  #checkedAcked = false
  #closed = false

  /**
   * @param dir - the spool directory (already created).
   * @param options - bound, segment size, I/O.
   */
  constructor(dir: string, options: SegmentLogOptions) {
    this.dir = dir
    this.#maxBytes = options.maxBytes
    this.#segmentBytes = options.segmentBytes
    this.#io = options.io ?? defaultIo
    this.#lockPath = join(dir, 'lock')
    this.#ackedHint = options.ackedHint ?? (() => undefined)
    this.#onWarning = options.onWarning ?? ((line) => process.emitWarning(line, { code: 'EDGETOKEN_SPOOL' }))
  }

  /** The tail as of the last {@link SegmentLog.sync}. */
  get tail(): Tail | undefined {
    return this.#tail
  }

  /** Segment start indexes, oldest first, as of the last sync. */
  starts(): number[] {
    return [...this.#segments.keys()].sort((a, b) => a - b)
  }

  /** Whether a segment starting at `start` is known. */
  has(start: number): boolean {
    return this.#segments.has(start)
  }

  /** Bytes of all segments, as of the last sync. */
  totalBytes(): number {
    let bytes = 0
    for (const b of this.#segments.values()) bytes += b
    return bytes
  }

  /**
   * A cheap fingerprint of what writers change, read without the lock (no file is created, so an
   * idle check writes nothing to the card): the tail's size, and whether the segment after it
   * exists (a writer rolled over). Equal fingerprints mean no record was appended in between.
   *
   * @returns the fingerprint, or undefined when nothing was synced yet.
   * @throws the file-system error of a failed `stat` other than ENOENT.
   */
  fingerprint(): string | undefined {
    const tail = this.#tail
    if (!tail) return undefined
    // Synchronous on purpose: two stat calls on the main thread cost less than waking a
    // thread-pool worker for each, and the idle daemon should sleep (<= 1 wake-up/s).
    // lstat: a link's own size differs, so a planted one is looked at properly (and refused).
    const size = lstatSync(join(this.dir, segmentName(tail.start)), { throwIfNoEntry: false })?.size ?? -1
    const next = lstatSync(join(this.dir, segmentName(tail.start + tail.count)), { throwIfNoEntry: false })
    return `${tail.start}:${size}:${next ? 1 : 0}`
  }

  /**
   * Appends records durably (group commit); see {@link Spool.append}.
   *
   * @param records - JSON objects.
   * @returns when they are on disk.
   */
  append(records: readonly unknown[]): Promise<void> {
    if (this.#closed) return Promise.reject(new EdgeTokenError('ERR_INTERNAL', 'spool is closed'))
    const frames: Buffer[] = []
    let bytes = 0
    for (let i = 0; i < records.length; i++) {
      const record = records[i]
      if (!isObject(record)) {
        return Promise.reject(new EdgeTokenError('ERR_INVALID_INPUT', `record ${i + 1} is not a JSON object`))
      }
      let payload: Buffer
      try {
        payload = Buffer.from(JSON.stringify(record), 'utf8')
      } catch {
        // JSON.stringify recurses: a deep enough object overflows the stack (RangeError).
        payload = Buffer.alloc(0)
      }
      if (payload.length === 0 || jsonTooDeep(payload)) {
        return Promise.reject(
          new EdgeTokenError(
            'ERR_INVALID_INPUT',
            `record ${i + 1} is nested deeper than ${MAX_JSON_DEPTH} levels`,
          ),
        )
      }
      if (payload.length > MAX_RECORD_BYTES) {
        return Promise.reject(
          new EdgeTokenError('ERR_INVALID_INPUT', `record ${i + 1} is larger than ${MAX_RECORD_BYTES} bytes`),
        )
      }
      const frame = encodeFrame(payload)
      frames.push(frame)
      bytes += frame.length
    }
    if (frames.length === 0) return Promise.resolve()
    if (bytes > this.#maxBytes / 2) {
      // A capacity limit of this spool, not bad input: the same records fit a larger spool.
      return Promise.reject(
        new EdgeTokenError(
          'ERR_IO',
          `spool: ${bytes} bytes of records in one append exceed half the spool bound (${this.#maxBytes} bytes)`,
        ),
      )
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ frames, bytes, resolve, reject })
      this.#flushing ??= this.#flushLoop()
    })
  }

  async #flushLoop(): Promise<void> {
    try {
      // Yield once so appends issued in the same tick join this group.
      await new Promise<void>((resolve) => setImmediate(resolve))
      while (this.#queue.length > 0) {
        const group: Pending[] = []
        let bytes = 0
        while (this.#queue.length > 0) {
          const next = this.#queue[0] as Pending
          if (group.length > 0 && bytes + next.bytes > this.#maxBytes / 2) break
          group.push(next)
          bytes += next.bytes
          this.#queue.shift()
        }
        try {
          await withFileLock(this.#lockPath, SPOOL_LOCK, () => this.#writeGroup(group, bytes))
          for (const p of group) p.resolve()
        } catch (err) {
          const error = ioError(err, 'appending to the spool')
          for (const p of group) p.reject(error)
        }
      }
    } finally {
      this.#flushing = undefined
    }
  }

  async #writeGroup(group: Pending[], bytes: number): Promise<void> {
    const tail = await this.sync()
    await this.#makeRoom(bytes)
    let target = this.#tail ?? tail
    if (target.size > 0 && target.size + bytes > this.#segmentBytes) target = await this.#roll()
    const data = Buffer.concat(
      group.flatMap((p) => p.frames),
      bytes,
    )
    const before = target.size
    try {
      await this.#io.write(target.handle, data, before)
      await this.#io.sync(target.handle)
    } catch (err) {
      // Take back whatever part reached the file, so no record is half-acknowledged.
      try {
        await target.handle.truncate(before)
        await target.handle.datasync()
      } catch {
        this.forget()
      }
      throw err
    }
    let count = 0
    for (const p of group) count += p.frames.length
    target.size += bytes
    target.count += count
    this.#segments.set(target.start, target.size)
  }

  /**
   * Runs `fn` under the spool lock (between processes), mapping file-system errors to `ERR_IO`.
   *
   * @param what - the operation, for the error message.
   * @param fn - the critical section.
   * @returns what `fn` returns.
   */
  async locked<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await withFileLock(this.#lockPath, SPOOL_LOCK, fn)
    } catch (err) {
      throw ioError(err, what)
    }
  }

  /** Drops the cached view so the next operation rescans from the directory. */
  forget(): void {
    const handle = this.#tail?.handle
    if (this.#readHandle) this.#retire(this.#readHandle)
    this.#tail = undefined
    this.#segments.clear()
    handle?.close().catch(() => {})
  }

  /**
   * Brings the in-memory view up to date with the directory (other processes may have appended,
   * rolled or dropped), opening the tail and cutting a torn end, or splitting it around damage
   * when valid frames follow the bad one (`spool-repair.ts`). Runs under the spool lock.
   *
   * @returns the tail.
   * @throws ELOOP or EFTYPE when a segment is a symbolic link or not a regular file (the spool
   *   lock maps them to `ERR_STORE_UNREADABLE`).
   */
  async sync(): Promise<Tail> {
    const names = await readdir(this.dir)
    const starts = names
      .map(parseSegmentName)
      .filter((n): n is number => n !== undefined)
      .sort((a, b) => a - b)
    const present = new Set(starts)
    for (const s of [...this.#segments.keys()]) if (!present.has(s)) this.#segments.delete(s)
    for (const s of starts) {
      if (this.#segments.has(s)) continue
      const size = await regularFileSize(join(this.dir, segmentName(s)))
      if (size === undefined) {
        present.delete(s) // removed since readdir (delivered or dropped by another process)
        continue
      }
      this.#segments.set(s, size)
    }
    const last = [...present].sort((a, b) => a - b).at(-1)
    if (last === undefined) {
      this.#tail?.handle.close().catch(() => {})
      this.#tail = undefined
      // Never restart below the acknowledged position: those indexes were delivered already.
      const acked = parseSpoolState(await readJsonFile(join(this.dir, STATE_FILE)))?.acked ?? 0
      return this.#createSegment(Math.max(acked, this.#ackedHint() ?? 0))
    }
    let tail = this.#tail
    if (!tail || tail.start !== last) {
      if (tail && present.has(tail.start)) {
        // Another process moved on to a newer segment: the old tail's final size counts now.
        this.#segments.set(tail.start, (await tail.handle.stat()).size)
      }
      tail?.handle.close().catch(() => {})
      const handle = await openNoFollow(join(this.dir, segmentName(last)), 'update')
      tail = { start: last, handle, size: 0, count: 0 }
      this.#tail = tail
    }
    const { size } = await tail.handle.stat()
    if (size < tail.size) {
      tail.size = 0
      tail.count = 0
    }
    if (size !== tail.size) {
      const found = await scanFrames(tail.handle, tail.size, size, undefined, 1024 * 1024)
      tail.count += found.count
      if (found.torn) {
        const plan = await planRepair(tail.handle, tail.start, found.end, tail.count, size)
        if (plan.runs.length > 0) {
          // Valid frames after the bad one: damage, not a crash. Cutting here would delete them.
          const aside = await applyRepair(this.dir, tail.start, tail.handle, plan, size, Date.now())
          const name = segmentName(tail.start)
          this.#onWarning(
            `spool: segment ${name} was damaged at byte ${found.end}: ${plan.lost} record${plan.lost === 1 ? '' : 's'} lost (counted as dropped unless already delivered), ${plan.kept} after the damage kept; a copy is in ${aside}`,
          )
          this.forget()
          return this.sync()
        }
        // We hold the lock, and nothing valid follows: a dead writer's torn tail.
        await tail.handle.truncate(found.end)
        await tail.handle.datasync()
      }
      tail.size = found.end
    }
    this.#segments.set(tail.start, tail.size)
    if (!this.#checkedAcked) {
      this.#checkedAcked = true
      const acked = parseSpoolState(await readJsonFile(join(this.dir, STATE_FILE)))?.acked ?? 0
      // The card lost data the API already has (power loss on a lying SD card, files removed):
      // new records must not take indexes at or below the acknowledged position.
      if (acked > tail.start + tail.count) {
        tail.handle.close().catch(() => {})
        return this.#createSegment(acked)
      }
    }
    return tail
  }

  async #createSegment(start: number): Promise<Tail> {
    const handle = await openNoFollow(join(this.dir, segmentName(start)), 'create')
    await fsyncDirectory(this.dir)
    const tail = { start, handle, size: 0, count: 0 }
    this.#tail = tail
    this.#segments.set(start, 0)
    return tail
  }

  async #roll(): Promise<Tail> {
    const old = this.#tail as Tail
    const next = await this.#createSegment(old.start + old.count)
    old.handle.close().catch(() => {})
    return next
  }

  /** Deletes the oldest segments until `bytes` more fit under the bound; counts what was lost. */
  async #makeRoom(bytes: number): Promise<void> {
    let total = 0
    for (const b of this.#segments.values()) total += b
    if (total + bytes <= this.#maxBytes) return
    const tail = this.#tail as Tail
    // The tail itself must give way: seal it so it can be dropped like any other segment.
    if (this.#segments.size === 1 && tail.size > 0) await this.#roll()
    const acked = parseSpoolState(await readJsonFile(join(this.dir, STATE_FILE)))?.acked ?? 0
    let lost = 0
    const starts = [...this.#segments.keys()].sort((a, b) => a - b)
    for (let i = 0; i + 1 < starts.length && total + bytes > this.#maxBytes; i++) {
      const start = starts[i] as number
      const end = starts[i + 1] as number
      await unlink(join(this.dir, segmentName(start))).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err
      })
      total -= this.#segments.get(start) ?? 0
      this.#segments.delete(start)
      lost += Math.max(0, end - Math.max(acked, start))
    }
    await this.countDropped(lost)
  }

  /**
   * Adds to the persisted drop counter (under the spool lock).
   *
   * @param records - how many records were lost.
   */
  async countDropped(records: number): Promise<void> {
    if (records <= 0) return
    const dropped = (await readDropped(this.dir)) + records
    await writeFileAtomic(join(this.dir, DROPS_FILE), `${JSON.stringify({ dropped })}\n`)
  }

  /**
   * Finds the byte offset of a record by walking a segment from its start (only when no cursor
   * is known, e.g. after the state file was lost).
   *
   * @param segment - the segment's start index.
   * @param records - how many records to pass.
   * @returns the offset after them (or where the valid data ends).
   */
  async skip(segment: number, records: number): Promise<number> {
    const handle = await openNoFollow(join(this.dir, segmentName(segment)), 'read')
    try {
      const { size } = await handle.stat()
      let seen = 0
      const res = await scanFrames(handle, 0, size, () => seen++ < records)
      return res.end
    } finally {
      await handle.close()
    }
  }

  /**
   * Reads records from `offset` of a segment, up to the limits or the end of the data known to
   * be complete (the tail's synced size; a sealed segment's size).
   *
   * @param segment - the segment's start index.
   * @param offset - where a frame starts.
   * @param maxRecords - at most this many.
   * @param maxBytes - at most this many bytes of JSON (at least one record).
   * @returns the run, or undefined when nothing is readable there.
   */
  async readRecords(
    segment: number,
    offset: number,
    maxRecords: number,
    maxBytes: number,
  ): Promise<ReadRun | undefined> {
    const reader = await this.#acquireReader(segment)
    if (!reader) return undefined
    try {
      const tail = this.#tail
      const limit = segment === tail?.start ? tail.size : await this.#sealedSize(reader)
      const records: string[] = []
      let bytes = 0
      let endOffset = offset
      let full = false
      await scanFrames(reader.handle, offset, limit, (r) => {
        if (records.length >= maxRecords || (records.length > 0 && bytes + r.json.length > maxBytes)) {
          full = true
          return false
        }
        records.push(r.json)
        bytes += r.json.length
        endOffset = r.offset + r.frameBytes
        return true
      })
      if (records.length === 0) return undefined
      return { records, bytes, endOffset, full: full || records.length === maxRecords }
    } finally {
      this.#release(reader)
    }
  }

  /**
   * The open read handle of a segment, kept between batches (one open per segment, not per
   * batch). Callers release it; a replaced handle is closed once nobody reads through it.
   */
  async #acquireReader(segment: number): Promise<Reader | undefined> {
    let reader = this.#readHandle
    if (reader?.segment !== segment) {
      let handle: FileHandle
      try {
        handle = await openNoFollow(join(this.dir, segmentName(segment)), 'read')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw err
      }
      reader = this.#readHandle
      if (reader?.segment === segment) {
        await handle.close() // another read opened it meanwhile
      } else {
        if (reader) this.#retire(reader)
        reader = { segment, handle, users: 0, retired: false }
        this.#readHandle = reader
      }
    }
    reader.users++
    return reader
  }

  #release(reader: Reader): void {
    reader.users--
    if (reader.retired && reader.users === 0) reader.handle.close().catch(() => {})
  }

  #retire(reader: Reader): void {
    reader.retired = true
    if (this.#readHandle === reader) this.#readHandle = undefined
    if (reader.users === 0) reader.handle.close().catch(() => {})
  }

  /** Size of a sealed segment (immutable, so asked once). */
  async #sealedSize(reader: Reader): Promise<number> {
    reader.size ??= (await reader.handle.stat()).size
    return reader.size
  }

  /**
   * The size of a sealed segment.
   *
   * @param segment - its start index.
   * @returns its size in bytes, or undefined when it is gone.
   */
  async sealedSizeOf(segment: number): Promise<number | undefined> {
    const reader = await this.#acquireReader(segment)
    if (!reader) return undefined
    try {
      return await this.#sealedSize(reader)
    } finally {
      this.#release(reader)
    }
  }

  /**
   * Deletes segments whose records are all delivered (never the tail). Call only once the
   * position is on disk.
   *
   * @param acked - the acknowledged position.
   */
  async deleteDelivered(acked: number): Promise<void> {
    const starts = [...this.#segments.keys()].sort((a, b) => a - b)
    for (let i = 0; i + 1 < starts.length; i++) {
      const start = starts[i] as number
      if ((starts[i + 1] as number) > acked) break
      await unlink(join(this.dir, segmentName(start))).catch(() => {})
      this.#segments.delete(start)
    }
  }

  /** Waits for pending appends and closes the files; later appends are refused. */
  async close(): Promise<void> {
    while (this.#flushing) await this.#flushing
    this.#closed = true
    this.forget()
  }
}
