/**
 * The shape of `edgetoken doctor`'s checks: each answers one question about this gateway with
 * ok, warn or fail, and for anything but ok, the fix.
 *
 * @internal
 */
import type { EdgeTokenConfig } from '../../config/types.js'

/** How a check ended: `fail` makes `doctor` exit non-zero; `warn` does not. */
export type CheckStatus = 'ok' | 'warn' | 'fail'

/** The names of the checks, in the order they are printed. */
export type CheckName =
  | 'config'
  | 'clock'
  | 'key'
  | 'state_dir'
  | 'credential'
  | 'idp'
  | 'broker'
  | 'telemetry'
  | 'proxy'

/** One check's verdict. Never holds a secret (no token, password, key or secret file content). */
export interface CheckResult {
  /** Which check. */
  readonly check: CheckName
  /** The verdict. */
  readonly status: CheckStatus
  /** One line: what was found. */
  readonly message: string
  /** One line: what to do (absent when `ok`). */
  readonly fix?: string | undefined
}

/** What the checks work from. */
export interface DoctorInput {
  /** The loaded configuration. */
  readonly config: EdgeTokenConfig
  /** The environment (key file, credentials directory, proxies, managed identity endpoints). */
  readonly env: NodeJS.ProcessEnv
  /** Stops every check (Ctrl-C). */
  readonly signal: AbortSignal
  /** Each network check's overall budget, ms. */
  readonly timeoutMs: number
}

/**
 * Builds a result (an `ok` carries no fix).
 *
 * @param check - which check.
 * @param status - the verdict.
 * @param message - what was found.
 * @param fix - what to do.
 * @returns the result.
 */
export function result(check: CheckName, status: CheckStatus, message: string, fix?: string): CheckResult {
  return fix === undefined || status === 'ok' ? { check, status, message } : { check, status, message, fix }
}

/**
 * An error's message on one line (edgetoken's messages never hold a secret).
 *
 * @param err - what was thrown.
 * @returns one line.
 */
export function describe(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim()
}
