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
 * Whether a string holds only printable characters (no control characters, no ANSI escapes),
 * so it is safe to show on a terminal or a small display.
 *
 * @param value - the string.
 * @returns true when printable.
 */
export function isPrintable(value: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  return !/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(value)
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
