/**
 * The on-disk framing of spool records and the segment file names.
 *
 * A segment is a plain sequence of frames: `[u32 LE payload length][u32 LE CRC-32 of the payload]
 * [payload]`, where the payload is the record's JSON text (UTF-8). A frame whose length is zero,
 * too large, runs past the end of the file, or whose CRC does not match, marks the end of the valid
 * data as far as {@link scanFrames} reads. Whether what follows is a torn tail (power loss
 * mid-write: nothing valid after it, cut off) or damage in the middle (valid frames after it,
 * salvaged) is decided with {@link findFrame}, which finds the next valid frame: a payload is a JSON
 * object's text, so it starts with `{`, ends with `}` and holds no control bytes, and no valid
 * header (whose length's high bytes are zero) can hide inside one.
 *
 * A segment is named after the global index of its first record (`00000000000000001234.seg`), so
 * record counts come from the names alone: a sealed segment holds `nextStart - start` records, and
 * only the newest (tail) segment ever has to be scanned.
 *
 * @internal
 */
import type { FileHandle } from 'node:fs/promises'
import { createRequire } from 'node:module'

// node:zlib (3-4 ms to load) only when a record is framed or checked: `import 'edgetoken'`
// re-exports the spool, and most library users never open one (issue 17).
let zlibCrc32: ((data: Uint8Array) => number) | undefined
function crc32(data: Uint8Array): number {
  zlibCrc32 ??= (createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib')).crc32
  return zlibCrc32(data)
}

/** Bytes of the frame header (length + CRC). */
export const FRAME_HEADER_BYTES = 8

/** The largest record payload the spool accepts (a frame longer than this is corruption). */
export const MAX_RECORD_BYTES = 1024 * 1024

const SEGMENT_RE = /^(\d{20})\.seg$/

/**
 * Frames one record payload.
 *
 * @param payload - the record's JSON text as UTF-8 bytes (1..{@link MAX_RECORD_BYTES}).
 * @returns the header followed by the payload, as one buffer.
 */
export function encodeFrame(payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length)
  frame.writeUInt32LE(payload.length, 0)
  frame.writeUInt32LE(crc32(payload), 4)
  payload.copy(frame, FRAME_HEADER_BYTES)
  return frame
}

/**
 * The file name of the segment whose first record has global index `start`.
 *
 * @param start - the index of the segment's first record.
 * @returns e.g. `00000000000000001234.seg`.
 */
export function segmentName(start: number): string {
  return `${String(start).padStart(20, '0')}.seg`
}

/**
 * Parses a segment file name.
 *
 * @param name - a directory entry.
 * @returns the index of its first record, or undefined when it is not a segment.
 */
export function parseSegmentName(name: string): number | undefined {
  const m = SEGMENT_RE.exec(name)
  if (!m?.[1]) return undefined
  const n = Number(m[1])
  return Number.isSafeInteger(n) ? n : undefined
}

/** What {@link scanFrames} found. */
export interface ScanResult {
  /** Valid records seen from the start offset. */
  count: number
  /** Byte offset just past the last valid record. */
  end: number
  /** Whether bytes after `end` (up to `limit`) are not a valid record: a torn or corrupt tail. */
  torn: boolean
}

/** A record read back from a segment. */
export interface ReadRecord {
  /** The record's JSON text. */
  json: string
  /** Byte offset of its frame in the segment. */
  offset: number
  /** Bytes of its frame (header + payload). */
  frameBytes: number
}

const CHUNK_BYTES = 64 * 1024

/**
 * Walks the frames of a segment from `offset` up to `limit` bytes, checking each CRC, reading in
 * bounded chunks so memory does not grow with the segment.
 *
 * @param handle - the open segment.
 * @param offset - where a frame starts.
 * @param limit - the file size (or the position to stop at).
 * @param visit - called per valid record; return false to stop before that record (`torn` false).
 * @param chunkBytes - bytes read at a time. Default 64 KiB.
 * @returns how many records were valid, where they end, and whether a bad tail follows.
 */
export async function scanFrames(
  handle: FileHandle,
  offset: number,
  limit: number,
  visit?: (record: ReadRecord) => boolean,
  chunkBytes = CHUNK_BYTES,
): Promise<ScanResult> {
  let pos = offset
  let count = 0
  let buf = Buffer.allocUnsafe(Math.min(chunkBytes, Math.max(limit - offset, FRAME_HEADER_BYTES)))
  let bufStart = pos
  let bufLen = 0
  const ensure = async (from: number, bytes: number): Promise<boolean> => {
    if (from + bytes > limit) return false
    if (from >= bufStart && from + bytes <= bufStart + bufLen) return true
    if (bytes > buf.length) buf = Buffer.allocUnsafe(bytes)
    const want = Math.min(buf.length, limit - from)
    const { bytesRead } = await handle.read(buf, 0, want, from)
    bufStart = from
    bufLen = bytesRead
    return bytesRead >= bytes
  }
  // `ensure` only when the buffer does not hold the bytes: an await per record would cost more
  // than the CRC.
  const held = (from: number, bytes: number) => from >= bufStart && from + bytes <= bufStart + bufLen
  while (pos < limit) {
    if (!held(pos, FRAME_HEADER_BYTES) && !(await ensure(pos, FRAME_HEADER_BYTES))) {
      return { count, end: pos, torn: true }
    }
    const at = pos - bufStart
    const length = buf.readUInt32LE(at)
    const sum = buf.readUInt32LE(at + 4)
    if (length === 0 || length > MAX_RECORD_BYTES) return { count, end: pos, torn: true }
    const frameBytes = FRAME_HEADER_BYTES + length
    if (pos + frameBytes > limit) return { count, end: pos, torn: true }
    if (!held(pos, frameBytes) && !(await ensure(pos, frameBytes))) return { count, end: pos, torn: true }
    const p = pos - bufStart + FRAME_HEADER_BYTES
    const payload = buf.subarray(p, p + length)
    if (crc32(payload) !== sum) return { count, end: pos, torn: true }
    if (visit && !visit({ json: payload.toString('utf8'), offset: pos, frameBytes })) {
      return { count, end: pos, torn: false }
    }
    count++
    pos += frameBytes
  }
  return { count, end: pos, torn: false }
}

/** Bytes {@link findFrame} reads at a time: room for the largest frame. */
const FIND_WINDOW_BYTES = 2 * (MAX_RECORD_BYTES + FRAME_HEADER_BYTES)
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d

/**
 * Finds the first valid frame at or after `from`: a plausible length, a payload that looks like a
 * JSON object (`{` ... `}`), and a matching CRC-32. Used after a bad frame, to tell a torn tail
 * (nothing valid follows) from damage in the middle (valid frames follow), and to resynchronise.
 * Walks byte by byte in bounded windows; the CRC is computed only for the rare candidate.
 *
 * @param handle - the open segment.
 * @param from - the first position to try.
 * @param limit - the file size (or the position to stop at).
 * @returns the offset of that frame, or undefined when there is none before `limit`.
 */
export async function findFrame(
  handle: FileHandle,
  from: number,
  limit: number,
): Promise<number | undefined> {
  if (limit - from <= FRAME_HEADER_BYTES) return undefined
  let buf = Buffer.allocUnsafe(Math.min(FIND_WINDOW_BYTES, limit - from))
  let bufStart = from
  let bufLen = 0
  const load = async (at: number, bytes: number): Promise<boolean> => {
    if (at + bytes > limit) return false
    if (bytes > buf.length) buf = Buffer.allocUnsafe(bytes)
    const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, limit - at), at)
    bufStart = at
    bufLen = bytesRead
    return bytesRead >= bytes
  }
  const held = (at: number, bytes: number) => at >= bufStart && at + bytes <= bufStart + bufLen
  for (let pos = from; pos + FRAME_HEADER_BYTES < limit; pos++) {
    // Header and first payload byte, loaded only when the window does not hold them.
    if (!held(pos, FRAME_HEADER_BYTES + 1) && !(await load(pos, FRAME_HEADER_BYTES + 1))) return undefined
    const at = pos - bufStart
    const length = buf.readUInt32LE(at)
    if (length === 0 || length > MAX_RECORD_BYTES || pos + FRAME_HEADER_BYTES + length > limit) continue
    if (buf[at + FRAME_HEADER_BYTES] !== OPEN_BRACE) continue
    const frameBytes = FRAME_HEADER_BYTES + length
    if (!held(pos, frameBytes) && !(await load(pos, frameBytes))) continue
    const p = pos - bufStart + FRAME_HEADER_BYTES
    const payload = buf.subarray(p, p + length)
    if (payload[length - 1] !== CLOSE_BRACE) continue
    if (crc32(payload) === buf.readUInt32LE(pos - bufStart + 4)) return pos
  }
  return undefined
}
