/**
 * The daemon's output channels, as its parts see them: a log line, a warning line, a `--json`
 * event, and how an error is worded in them.
 *
 * Separate so that every part of the daemon (sign-in state, renewal, MQTT, uploads, shutdown)
 * writes to the operator the same way without importing the daemon module itself.
 *
 * @packageDocumentation
 */

/** Where the daemon's parts report; every line and event is one thing that happened, never a secret. */
export interface DaemonOutput {
  /** Informational lines (one event each). */
  readonly log: (line: string) => void
  /** Warnings (sign-in required, broker trouble, dropped readings). */
  readonly warn: (line: string) => void
  /** Structured events for `--json`. */
  readonly emit: (event: Readonly<Record<string, unknown>>) => void
}

/**
 * The text of a failure for a log line: anything can be thrown, and a line needs a string.
 *
 * @param err - what was thrown or rejected.
 * @returns its message, or its string form when it is not an Error.
 */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
