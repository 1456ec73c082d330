/**
 * A streaming NDJSON reader for `edgetoken send`: one JSON object per line, each line under a size
 * cap, read chunk by chunk (the input is never held whole, and an endless line cannot exhaust
 * memory). Bad lines are reported with their line numbers; the caller decides to reject or skip.
 *
 * @see https://github.com/ndjson/ndjson-spec
 * @packageDocumentation
 */
import { isObject } from '../lib/validate.js'
import { jsonTooDeep, MAX_JSON_DEPTH } from './json-depth.js'

/** Default cap of one NDJSON line: 64 KiB. */
export const DEFAULT_MAX_LINE_BYTES = 64 * 1024

/** Options of {@link readNdjson}. */
export interface ReadNdjsonOptions {
  /** Longest accepted line in bytes (without the newline). Default {@link DEFAULT_MAX_LINE_BYTES}. */
  maxLineBytes?: number
  /** Deepest nesting of arrays and objects in a record. Default {@link MAX_JSON_DEPTH} (64). */
  maxDepth?: number
}

/** One line of input: a record, or why the line was rejected. */
export type NdjsonItem =
  | { readonly line: number; readonly record: Record<string, unknown> }
  | { readonly line: number; readonly error: string }

const NEWLINE = 0x0a

/**
 * Reads NDJSON records from a byte stream. Blank lines are ignored; `\r\n` endings are accepted;
 * a leading UTF-8 byte-order mark is ignored. A line nested deeper than `maxDepth` is one bad line,
 * found before it is parsed (see `json-depth.ts`: it would overflow the stack later).
 *
 * @param input - the stream (stdin), chunks as Buffers or strings.
 * @param options - the line size and nesting caps.
 * @returns an async iterator of records and per-line errors, in input order (line numbers from 1).
 * @example
 * ```ts
 * for await (const item of readNdjson(process.stdin)) {
 *   if ('error' in item) console.error(`line ${item.line}: ${item.error}`)
 *   else records.push(item.record)
 * }
 * ```
 */
export async function* readNdjson(
  input: AsyncIterable<Buffer | string>,
  options: ReadNdjsonOptions = {},
): AsyncGenerator<NdjsonItem> {
  const max = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES
  const maxDepth = options.maxDepth ?? MAX_JSON_DEPTH
  let parts: Buffer[] = []
  let partBytes = 0
  let tooLong = false
  let line = 0
  let first = true

  const finish = (bytes: Buffer): NdjsonItem | undefined => {
    line++
    if (tooLong) {
      tooLong = false
      return { line, error: `longer than ${max} bytes` }
    }
    let end = bytes.length
    if (end > 0 && bytes[end - 1] === 0x0d) end--
    let start = 0
    if (first && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3
    first = false
    if (end - start > max) return { line, error: `longer than ${max} bytes` }
    const text = bytes.toString('utf8', start, end)
    if (text.trim() === '') return undefined
    if (jsonTooDeep(bytes.subarray(start, end), maxDepth)) {
      return { line, error: `nested deeper than ${maxDepth} levels` }
    }
    let value: unknown
    try {
      value = JSON.parse(text) as unknown
    } catch {
      return { line, error: 'not valid JSON' }
    }
    if (!isObject(value)) return { line, error: 'not a JSON object' }
    return { line, record: value }
  }

  for await (const raw of input) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw
    let pos = 0
    while (pos < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, pos)
      const stop = nl === -1 ? chunk.length : nl
      if (!tooLong) {
        if (partBytes + (stop - pos) > max + 1) {
          // Keep nothing of an over-long line; only remember that it was one.
          tooLong = true
          parts = []
          partBytes = 0
        } else if (stop > pos) {
          parts.push(chunk.subarray(pos, stop))
          partBytes += stop - pos
        }
      }
      if (nl === -1) break
      const bytes = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, partBytes)
      parts = []
      partBytes = 0
      const item = finish(bytes)
      if (item) yield item
      pos = nl + 1
    }
  }
  if (partBytes > 0 || tooLong) {
    const item = finish(Buffer.concat(parts, partBytes))
    if (item) yield item
  }
}
