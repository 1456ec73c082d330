/**
 * The nesting cap of telemetry records. `JSON.stringify` recurses (and so may `JSON.parse`): one
 * object nested a few thousand levels deep, which fits in a 64 KiB line, overflows the stack with a
 * `RangeError` that would abort a whole `send` and lose its good lines too. So the depth is measured
 * first, by one pass over the text that counts brackets outside strings (no recursion, no
 * allocation), and anything deeper than {@link MAX_JSON_DEPTH} is one invalid record.
 *
 * @internal
 */

/** The deepest nesting of arrays and objects accepted in a record: 64 levels (the record itself is 1). */
export const MAX_JSON_DEPTH = 64

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d

/**
 * Whether JSON text nests arrays and objects deeper than `max`. Brackets inside strings do not
 * count; the text need not be valid JSON (invalid text is rejected by the parser afterwards).
 *
 * @param text - the JSON text, as UTF-8 bytes (every byte that matters here is ASCII).
 * @param max - the deepest nesting allowed. Default {@link MAX_JSON_DEPTH}.
 * @returns true when some point of the text is nested deeper than `max`.
 * @example
 * ```ts
 * if (jsonTooDeep(line)) return { error: `nests deeper than ${MAX_JSON_DEPTH} levels` }
 * const value = JSON.parse(line.toString('utf8'))
 * ```
 */
export function jsonTooDeep(text: Uint8Array, max = MAX_JSON_DEPTH): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) inString = false
    } else if (c === QUOTE) {
      inString = true
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return true
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--
    }
  }
  return false
}
