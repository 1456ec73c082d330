/**
 * Time formatting of the command-line contract.
 *
 * @internal
 */

/**
 * An ISO 8601 UTC time without milliseconds (`2026-11-25T10:00:00Z`), the form of every time in
 * NDJSON output and MQTT payloads.
 *
 * @param ms - epoch milliseconds.
 * @returns the formatted time.
 */
export function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}
