/**
 * Exit codes of the command-line contract, and the mapping from error categories to them.
 *
 * @see ../shared/CONTRACT.md "Exit codes"
 */
import type { ErrorCategory } from '../errors.js'

/** Exit codes every command uses. */
export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  signinRequired: 3,
  denied: 4,
  unavailable: 5,
  store: 6,
} as const

/** One of the contract's exit codes. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

const BY_CATEGORY: Readonly<Record<ErrorCategory, ExitCodeValue>> = {
  config: ExitCode.usage,
  signin_required: ExitCode.signinRequired,
  denied: ExitCode.denied,
  expired: ExitCode.denied,
  cancelled: ExitCode.denied,
  unavailable: ExitCode.unavailable,
  store: ExitCode.store,
  internal: ExitCode.internal,
}

/**
 * The exit code for an error category.
 *
 * @param category - the error's category.
 * @returns the contract's exit code.
 */
export function exitCodeFor(category: ErrorCategory): ExitCodeValue {
  return BY_CATEGORY[category]
}
