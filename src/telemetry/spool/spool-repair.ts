/**
 * Repair of a damaged newest segment (the tail): what a crash leaves is a torn tail, nothing valid
 * after the last good frame, and is cut off; damage in the middle (bit rot on an SD card) is valid
 * frames, then bad bytes, then valid frames again. Cutting there would delete every later record,
 * so the segment is split instead:
 *
 * - the frames before the damage stay where they are (the segment is cut to them);
 * - each run of valid frames after it becomes a segment of its own, named after the index its
 *   first record had, so every record keeps its index (the reader's position, cursor and batch ids
 *   stay right), and the indexes of the lost records are a gap between two segments, which the
 *   reader counts as dropped when it reaches them (never for records it had already delivered);
 * - the damaged file, whole, is copied to `spool/corrupt/<name>.<time>` first (the newest
 *   {@link MAX_ASIDE_COPIES} are kept), for whoever wants to look at it.
 *
 * Crash-safe in this order: the copy aside, then the new segments (each written to a temporary file
 * and renamed into place, the last one first), then the cut. Killed before the cut, the damaged
 * segment is an older segment next time: the reader reads it up to the damage and counts the gap up
 * to the next segment as dropped; nothing is read twice and nothing is lost without being counted.
 *
 * How many records the damage took: exactly one when skipping the bad frame by its own length lands
 * on a valid frame (one flipped bit in a payload or a checksum); otherwise (the length itself was hit,
 * or a whole block was lost) an estimate from the mean frame size, at least one.
 *
 * @internal
 */

import type { FileHandle } from 'node:fs/promises'
import { lstat, mkdir, readdir, rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { fsyncDirectory } from '../../lib/fs/durable-file.js'
import { openNoFollow } from '../../lib/fs/no-follow.js'
import { tempFileName } from '../../lib/fs/temp-files.js'
import { FRAME_HEADER_BYTES, findFrame, MAX_RECORD_BYTES, scanFrames, segmentName } from './record-format.js'

/** The directory, inside the spool, that keeps copies of damaged segments. */
export const CORRUPT_DIR = 'corrupt'

/** Copies of damaged segments kept in {@link CORRUPT_DIR}; older ones are deleted. */
export const MAX_ASIDE_COPIES = 4

/** A run of valid frames after damage, to become a segment of its own. */
export interface SalvagedRun {
  /** The index its first record had (the new segment's name). */
  start: number
  /** Byte range in the damaged segment. */
  from: number
  /** End of the range (exclusive). */
  to: number
  /** Records in it. */
  count: number
  /** Records judged lost in the damage just before it. */
  lost: number
}

/** What {@link planRepair} found after the first bad frame of the tail. */
export interface RepairPlan {
  /** Where the valid frames before the damage end (the segment is cut there). */
  cutAt: number
  /** The runs of valid frames after the damage; empty for a torn tail (cut, nothing to keep). */
  runs: SalvagedRun[]
  /** Records judged lost, over all damaged places. */
  lost: number
  /** Records kept after the damage. */
  kept: number
}

/**
 * Looks past the first bad frame of a tail segment for valid frames.
 *
 * @param handle - the segment, open.
 * @param start - the segment's first record index.
 * @param badAt - offset of the first bad frame.
 * @param before - valid records before `badAt`.
 * @param size - the segment's size.
 * @returns the plan: no runs when nothing valid follows (a torn tail).
 */
export async function planRepair(
  handle: FileHandle,
  start: number,
  badAt: number,
  before: number,
  size: number,
): Promise<RepairPlan> {
  const runs: SalvagedRun[] = []
  let index = start + before
  let frames = before
  let frameBytes = badAt
  let pos = badAt
  let lost = 0
  let kept = 0
  for (;;) {
    const skipped = await frameAfter(handle, pos, size)
    const next = skipped ?? (await findFrame(handle, pos + 1, size))
    if (next === undefined) break // the rest is a torn tail: cut, as after a crash
    const mean = frames > 0 ? frameBytes / frames : next - pos
    const gone = skipped !== undefined ? 1 : Math.max(1, Math.round((next - pos) / mean))
    index += gone
    lost += gone
    const scan = await scanFrames(handle, next, size, undefined, MAX_RECORD_BYTES)
    runs.push({ start: index, from: next, to: scan.end, count: scan.count, lost: gone })
    index += scan.count
    kept += scan.count
    frames += scan.count
    frameBytes += scan.end - next
    pos = scan.end
    if (!scan.torn) break
  }
  return { cutAt: badAt, runs, lost, kept }
}

/** The offset after the bad frame at `pos` when its length is plausible and a valid frame is there. */
async function frameAfter(handle: FileHandle, pos: number, size: number): Promise<number | undefined> {
  const header = Buffer.alloc(FRAME_HEADER_BYTES)
  const { bytesRead } = await handle.read(header, 0, FRAME_HEADER_BYTES, pos)
  if (bytesRead < FRAME_HEADER_BYTES) return undefined
  const length = header.readUInt32LE(0)
  if (length === 0 || length > MAX_RECORD_BYTES) return undefined
  const after = pos + FRAME_HEADER_BYTES + length
  if (after >= size) return undefined
  return (await findFrame(handle, after, Math.min(size, after + FRAME_HEADER_BYTES + MAX_RECORD_BYTES))) ===
    after
    ? after
    : undefined
}

/**
 * Carries out a plan with runs (see the module comment for the order). Call under the spool lock.
 *
 * @param dir - the spool directory.
 * @param start - the damaged segment's first record index.
 * @param handle - the damaged segment, open read-write.
 * @param plan - from {@link planRepair}, with at least one run.
 * @param size - the segment's size.
 * @param nowMs - the time, for the copy's name.
 * @returns the path of the copy of the damaged segment.
 * @throws the file-system error (the spool lock maps it); the segment is cut only when all went well.
 */
export async function applyRepair(
  dir: string,
  start: number,
  handle: FileHandle,
  plan: RepairPlan,
  size: number,
  nowMs: number,
): Promise<string> {
  const asideDir = join(dir, CORRUPT_DIR)
  await mkdir(asideDir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err
  })
  // Never write through a link planted in the spool's place for these copies.
  const stats = await lstat(asideDir)
  if (!stats.isDirectory()) {
    const code = stats.isSymbolicLink() ? 'ELOOP' : 'ENOTDIR'
    throw Object.assign(new Error(`${code}: not a directory, mkdir '${asideDir}'`), { code, path: asideDir })
  }
  const stamp = new Date(nowMs).toISOString().replace(/[-:]/g, '')
  const aside = join(asideDir, `${segmentName(start)}.${stamp}`)
  await copyInto(handle, 0, size, aside)
  await fsyncDirectory(asideDir)
  // The last run first: killed halfway, the damaged segment still holds what was not copied, and
  // the reader counts it as dropped up to the next segment instead of silently losing it.
  for (const run of [...plan.runs].reverse()) {
    await copyInto(handle, run.from, run.to, join(dir, segmentName(run.start)))
  }
  await fsyncDirectory(dir)
  await handle.truncate(plan.cutAt)
  await handle.datasync()
  await pruneCopies(asideDir)
  return aside
}

/** Copies bytes of an open file into a new file: temporary file, fsync, rename into place. */
async function copyInto(source: FileHandle, from: number, to: number, path: string): Promise<void> {
  const temp = tempFileName(path)
  let renamed = false
  try {
    const out = await openNoFollow(temp, 'create')
    try {
      const buf = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(1, to - from)))
      let pos = from
      while (pos < to) {
        const { bytesRead } = await source.read(buf, 0, Math.min(buf.length, to - pos), pos)
        if (bytesRead === 0) break
        let done = 0
        while (done < bytesRead) done += (await out.write(buf, done, bytesRead - done)).bytesWritten
        pos += bytesRead
      }
      await out.sync()
    } finally {
      await out.close()
    }
    await rename(temp, path)
    renamed = true
  } finally {
    if (!renamed) await unlink(temp).catch(() => {})
  }
}

/** Keeps the newest {@link MAX_ASIDE_COPIES} copies: a card that keeps failing must not fill up. */
async function pruneCopies(asideDir: string): Promise<void> {
  const names = (await readdir(asideDir)).filter((n) => !n.includes('.tmp-'))
  if (names.length <= MAX_ASIDE_COPIES) return
  const dated = await Promise.all(
    names.map(async (name) => ({ name, mtimeMs: (await lstat(join(asideDir, name))).mtimeMs })),
  )
  dated.sort((a, b) => b.mtimeMs - a.mtimeMs)
  for (const { name } of dated.slice(MAX_ASIDE_COPIES)) await unlink(join(asideDir, name)).catch(() => {})
}
