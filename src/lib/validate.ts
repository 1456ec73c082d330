/**
 * Assertions that turn `unknown` input into typed values, or throw an error naming the field.
 * Every server response, MQTT payload, config file and stored file passes through these.
 *
 * @internal
 */

/** A plain JSON object. */
export type JsonObject = Record<string, unknown>

/**
 * Whether a value is a plain (non-null, non-array) object.
 *
 * @param value - anything.
 * @returns true for `{...}` values.
 */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Whether a value is a string with at least one character. */
export function isNonEmptyString(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0
}

/** Whether a value is a finite number. */
export function isFiniteNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value)
}

/**
 * Control characters (C0, DEL, C1), the Unicode line/paragraph separators, and the invisible
 * format characters that reorder or hide text: zero-width and directional marks (U+200B-U+200F),
 * bidi embeddings and overrides (U+202A-U+202E), word joiner, bidi isolates and the deprecated
 * format controls (U+2060-U+206F),
 * the byte-order mark (U+FEFF) and the Arabic letter mark (U+061C).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/

/**
 * Whether a string holds only printable characters: no control characters (so no ANSI escapes),
 * and no invisible format or bidi characters a server could use to reorder or hide text on a
 * terminal or a small display (a user code or a URL that reads differently from what it is).
 *
 * @param value - the string.
 * @returns true when printable.
 * @see https://www.unicode.org/reports/tr9/ (bidi controls)
 */
export function isPrintable(value: string): boolean {
  return !UNPRINTABLE.test(value)
}

/**
 * Parses JSON text to `unknown`, returning `undefined` when it is not JSON.
 *
 * @param text - the text.
 * @returns the parsed value, or undefined.
 */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}
