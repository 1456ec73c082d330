/**
 * What every command receives: parsed options, output channels that honour `--json`, and a signal
 * that fires on SIGINT/SIGTERM. Commands return an exit code; they never call process.exit.
 */
import type { Readable, Writable } from 'node:stream'

import type { OptionValues } from '../config/types.js'

export type { OptionValues }

/** The context a command runs in. */
export interface CommandContext {
  /** Option values after flag parsing (flags only; environment and config are applied by config loading). */
  readonly options: OptionValues
  /** Positional arguments after the command name. */
  readonly args: readonly string[]
  /** `--json`: stdout carries only NDJSON events, human text goes to stderr. */
  readonly json: boolean
  /** `--debug`: print stack traces of unexpected errors. */
  readonly debug: boolean
  readonly stdin: Readable
  readonly stdout: Writable
  readonly stderr: Writable
  readonly env: NodeJS.ProcessEnv
  /** Fires on SIGINT or SIGTERM; its reason is `'SIGINT'` or `'SIGTERM'`. */
  readonly signal: AbortSignal
  /** Writes one NDJSON event to stdout (only when `--json`). Adds nothing else to it. */
  emit(event: Readonly<Record<string, unknown>>): void
  /** Writes a line for humans: stdout normally, stderr under `--json`. */
  say(line: string): void
  /** Writes a warning line to stderr (`edgetoken: warning: ...`). */
  warn(line: string): void
}

/** Option declarations in node:util parseArgs shape. */
export type OptionSpec = Readonly<
  Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>
>

/** What a command module exports as default: loaded only when that command runs. */
export interface CommandModule {
  /** Full `--help` text (usage, options, exit codes). */
  readonly help: string
  /** Runs the command; returns the exit code. Throws EdgeTokenError for failures. */
  run(ctx: CommandContext): Promise<number>
}
