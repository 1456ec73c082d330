/**
 * Parsing argv and the option environment variables into one command and its options. Shared by
 * {@link main} and the cached `token` answer (./cached-token.ts), so both read a command line the
 * same way.
 */
import { parseArgs } from 'node:util'
import { EdgeTokenError } from '../errors.js'
import type { OptionSpec, OptionValues } from './context.js'
import { COMMANDS, type CommandEntry, GLOBAL_OPTIONS, OPTION_ENV } from './registry.js'

/** What a command line asks for. */
export type CommandLine =
  | {
      readonly kind: 'command'
      /** The command's name and registry entry. */
      readonly name: string
      readonly entry: CommandEntry
      /** Flags, with option environment variables filled in where no flag was given. */
      readonly options: OptionValues
      /** Positional arguments after the command name. */
      readonly args: readonly string[]
    }
  | { readonly kind: 'version' }
  /** No command: print the usage (to stdout and exit 0 with `--help`, else to stderr, exit 2). */
  | { readonly kind: 'usage'; readonly help: boolean }
  /** A usage error: the message names the bad flag, variable or command. */
  | { readonly kind: 'error'; readonly message: string }

/**
 * Reads a boolean option's environment variable: `1`/`true`/`yes` or `0`/`false`/`no`.
 *
 * @param env - the environment.
 * @param name - the variable.
 * @returns the value, or undefined when unset or empty.
 * @throws EdgeTokenError `ERR_USAGE` naming the variable for any other text.
 */
export function envBoolean(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
  const text = env[name]?.trim().toLowerCase()
  if (text === undefined || text === '') return undefined
  if (['1', 'true', 'yes'].includes(text)) return true
  if (['0', 'false', 'no'].includes(text)) return false
  throw new EdgeTokenError('ERR_USAGE', `${name} must be 1/true/yes or 0/false/no`)
}

/** Fills options not given as flags from their environment variables (flags win). */
function applyOptionEnv(values: Record<string, unknown>, spec: OptionSpec, env: NodeJS.ProcessEnv): void {
  for (const [option, name] of Object.entries(OPTION_ENV)) {
    const type = spec[option]?.type
    if (type === undefined || values[option] !== undefined) continue
    if (type === 'boolean') {
      const value = envBoolean(env, name)
      if (value !== undefined) values[option] = value
    } else if (env[name] !== undefined && env[name] !== '') {
      values[option] = env[name]
    }
  }
}

/**
 * What node:util `parseArgs` (strict, positionals allowed) returns for the simplest command lines:
 * a command name, then only boolean long flags (`token`, `token --json`, `status --json`). Those
 * are what scripts run most, and answering them here spares the cached `token` loading the parser
 * (~0.8 ms of its ~10 ms over a bare node start). Anything else is left to `parseArgs`; a test
 * checks that the two agree.
 *
 * @internal
 * @param argv - the arguments after node and the script.
 * @param options - the option declarations.
 * @returns the parse, or undefined when the command line is not that simple.
 */
export function parseSimple(
  argv: readonly string[],
  options: OptionSpec,
): { values: Record<string, boolean>; positionals: string[] } | undefined {
  const [name, ...flags] = argv
  if (name === undefined || name.startsWith('-')) return undefined
  // A null prototype, as parseArgs gives: `--constructor` must not find Object's.
  const values: Record<string, boolean> = Object.create(null)
  for (const flag of flags) {
    const option = flag.startsWith('--') ? flag.slice(2) : ''
    const spec = Object.hasOwn(options, option) ? options[option] : undefined
    if (spec?.type !== 'boolean' || spec.multiple === true) return undefined
    values[option] = true
  }
  return { values, positionals: [name] }
}

/**
 * Parses a command line: strict flags (every command's options are known, so a flag of another
 * command is named as such), then the option environment variables.
 *
 * @param argv - the arguments after node and the script.
 * @param env - the environment (`EDGETOKEN_JSON`, `EDGETOKEN_MIN_TTL_SECONDS`, ...).
 * @returns the command and its options, `--version`, the usage, or a usage error. Never throws.
 */
export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): CommandLine {
  const allOptions: Record<string, OptionSpec[string]> = { ...GLOBAL_OPTIONS }
  for (const entry of Object.values(COMMANDS)) Object.assign(allOptions, entry.options)
  let values: OptionValues
  let positionals: string[]
  try {
    const parsed =
      parseSimple(argv, allOptions) ??
      parseArgs({ args: [...argv], options: allOptions, allowPositionals: true, strict: true })
    values = parsed.values as OptionValues
    positionals = parsed.positionals
  } catch (err) {
    return { kind: 'error', message: `${(err as Error).message} (see 'edgetoken --help')` }
  }

  const name = positionals[0]
  if (values.version) return { kind: 'version' }
  if (name === undefined) return { kind: 'usage', help: values.help === true }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
  if (!entry) return { kind: 'error', message: `unknown command '${name}' (see 'edgetoken --help')` }
  for (const key of Object.keys(values)) {
    if (!(key in GLOBAL_OPTIONS) && !(key in entry.options)) {
      return { kind: 'error', message: `option '--${key}' is not valid for '${name}'` }
    }
  }
  const filled: Record<string, unknown> = { ...values }
  try {
    applyOptionEnv(filled, { ...GLOBAL_OPTIONS, ...entry.options }, env)
  } catch (err) {
    return { kind: 'error', message: (err as Error).message }
  }
  return { kind: 'command', name, entry, options: filled as OptionValues, args: positionals.slice(1) }
}
