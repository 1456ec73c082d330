/**
 * The daemon's output channels, as its parts see them: a log line, a warning line, a debug line,
 * a `--json` event, and how an error is worded in them.
 *
 * Separate so that every part of the daemon (sign-in state, renewal, MQTT, uploads, shutdown)
 * writes to the operator the same way without importing the daemon module itself.
 *
 * @packageDocumentation
 */

/**
 * Where the daemon's parts report; every line and event is one thing that happened, never a secret.
 *
 * The journal of a gateway is read by a person: `log` is for changes of state (started, signed
 * in again, the API reachable again, the periodic summary), `warn` for problems, and `debug` for
 * what happens every few seconds in normal operation (each batch, each renewal), shown only at the
 * `debug` log level. Events go to `--json` whatever the level.
 */
export interface DaemonOutput {
  /** Changes of state and the periodic summary (one event each). */
  readonly log: (line: string) => void
  /** Warnings (sign-in required, broker trouble, dropped readings). */
  readonly warn: (line: string) => void
  /** Routine lines (each uploaded batch, each renewal): dropped unless the log level is `debug`. */
  readonly debug: (line: string) => void
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
