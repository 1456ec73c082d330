/**
 * Parsing argv and the option environment variables into one command and its options. Shared by
 * {@link main} and the cached `token` answer (./cached-token.ts), so both read a command line the
 * same way.
 *
 * The parser is our own, not node:util `parseArgs`: its errors are ours to word (the closest
 * command or option is suggested, `logn` -> `login`), the same on every Node version, and it loads
 * nothing on the cached `token` path.
 */
import { EdgeTokenError } from '../errors.js'
import type { OptionSpec, OptionValues } from './context.js'
import { COMMANDS, type CommandEntry, GLOBAL_OPTIONS, OPTION_ENV, SHORT_ALIASES } from './registry.js'

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
  /** No command: print the usage (to stdout and exit 0 with `--help` or `help`, else to stderr, exit 2). */
  | { readonly kind: 'usage'; readonly help: boolean }
  /** `help COMMAND`: print that command's help (stdout, exit 0). */
  | { readonly kind: 'help'; readonly name: string; readonly entry: CommandEntry }
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
 * The parse of the simplest command lines: a command name, then only boolean long flags (`token`,
 * `token --json`, `status --json`). Those are what scripts run most; answering them without the
 * tokenizer keeps the cached `token` path to a loop over its flags. Anything else is left to
 * {@link parseTokens}; a test checks that the two agree (and that both agree with node:util
 * `parseArgs` on what it accepts).
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

/** What {@link parseTokens} returns for a command line it can read. */
export interface ParsedTokens {
  /** Option values by name (null prototype); `multiple` options collect an array. */
  readonly values: Record<string, string | boolean | (string | boolean)[]>
  /** The arguments that are not options, in order (everything after `--` included). */
  readonly positionals: string[]
  /** Flags that no declaration matches, as written (`--jsn`, `-x`): reported once the command is known. */
  readonly unknown: string[]
}

/**
 * Reads argv against option declarations, as node:util `parseArgs` does in strict mode with
 * positionals allowed: `--name`, `--name=value`, `--name value` for string options, `-h`-style
 * short options (grouped when boolean: `-hV`), `--` ends the options. Unlike `parseArgs`, an
 * unknown flag is collected instead of thrown, so the caller can word the error for the command.
 *
 * @internal
 * @param argv - the arguments after node and the script.
 * @param options - the option declarations.
 * @param aliases - extra short letters for declared options (`{ v: 'version' }`).
 * @returns the parse, or `{ error }` naming the flag whose value is missing or not allowed.
 */
export function parseTokens(
  argv: readonly string[],
  options: OptionSpec,
  aliases: Readonly<Record<string, string>> = {},
): ParsedTokens | { readonly error: string } {
  const values: ParsedTokens['values'] = Object.create(null)
  const positionals: string[] = []
  const unknown: string[] = []
  const shorts = new Map<string, string>()
  for (const [name, spec] of Object.entries(options)) if (spec.short) shorts.set(spec.short, name)
  for (const [short, name] of Object.entries(aliases))
    if (Object.hasOwn(options, name)) shorts.set(short, name)
  const set = (name: string, value: string | boolean) => {
    if (options[name]?.multiple !== true) values[name] = value
    else {
      const list = values[name]
      values[name] = Array.isArray(list) ? [...list, value] : [value]
    }
  }
  // parseArgs' strict rule: `--scope --json` forgot the value; `--scope=-x` passes one that starts with '-'.
  const needsValue = (flag: string, next: string | undefined) =>
    `option '${flag}' needs a value${next === undefined ? '' : ` (to pass one that starts with '-', write ${flag}=${shown(next)})`}`

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1))
      break
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
      const spec = Object.hasOwn(options, name) ? options[name] : undefined
      if (spec === undefined) {
        unknown.push(`--${name}`)
        continue
      }
      if (spec.type === 'boolean') {
        if (eq !== -1) return { error: `option '--${name}' takes no value` }
        set(name, true)
      } else if (eq !== -1) {
        set(name, arg.slice(eq + 1))
      } else {
        const next = argv[i + 1]
        if (next === undefined || (next.startsWith('-') && next !== '-'))
          return { error: needsValue(`--${name}`, next) }
        set(name, next)
        i++
      }
      continue
    }
    if (arg.startsWith('-') && arg !== '-') {
      const letters = arg.slice(1)
      for (let j = 0; j < letters.length; j++) {
        const letter = letters[j] as string
        const name = shorts.get(letter)
        if (name === undefined) {
          unknown.push(`-${letter}`)
          continue
        }
        if (options[name]?.type === 'boolean') {
          set(name, true)
          continue
        }
        // A string short option takes the rest of the group (`-sVALUE`) or the next argument.
        const rest = letters.slice(j + 1)
        const next = argv[i + 1]
        if (rest !== '') set(name, rest)
        else if (next === undefined || (next.startsWith('-') && next !== '-'))
          return { error: needsValue(`-${letter}`, next) }
        else {
          set(name, next)
          i++
        }
        break
      }
      continue
    }
    positionals.push(arg)
  }
  return { values, positionals, unknown }
}

/**
 * The optimal string alignment distance (Levenshtein plus adjacent transpositions: `sned` is one
 * edit from `send`).
 */
function editDistance(a: string, b: string): number {
  const rows: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i])
  for (let j = 1; j <= b.length; j++) (rows[0] as number[])[j] = j
  for (let i = 1; i <= a.length; i++) {
    const row = rows[i] as number[]
    const above = rows[i - 1] as number[]
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let d = Math.min((above[j] as number) + 1, (row[j - 1] as number) + 1, (above[j - 1] as number) + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, ((rows[i - 2] as number[])[j - 2] as number) + 1)
      }
      row[j] = d
    }
  }
  return (rows[a.length] as number[])[b.length] as number
}

/**
 * The candidate closest to a mistyped word, if one is close enough to be what was meant: at most
 * one edit for words of up to 3 letters, two for longer ones; a prefix of 2+ letters counts as one.
 *
 * @internal
 * @param word - what was typed (without dashes).
 * @param candidates - the known words, in order of preference for ties.
 * @returns the suggestion, or undefined.
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const limit = word.length <= 3 ? 1 : 2
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const candidate of candidates) {
    let d = editDistance(word.toLowerCase(), candidate)
    if (word.length >= 2 && candidate.startsWith(word.toLowerCase())) d = Math.min(d, 1)
    if (d <= limit && d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

/** The name `help` answers to besides `--help`, with an optional command name. */
const HELP_COMMAND = 'help'

/** argv is anyone's text: shown printable and short, so an error stays one line. */
function shown(word: string): string {
  const clean = word.replace(/[^\x20-\x7e]/g, '?')
  return clean.length > 40 ? `${clean.slice(0, 40)}...` : clean
}

function unknownCommand(name: string): string {
  const guess = closest(name, [...Object.keys(COMMANDS), HELP_COMMAND])
  const hint = guess === undefined ? '.' : `: did you mean '${guess}'?`
  return `unknown command '${shown(name)}'${hint} Run 'edgetoken --help'.`
}

function unknownOption(flag: string, name: string | undefined, entry: CommandEntry | undefined): string {
  const own = entry ? { ...GLOBAL_OPTIONS, ...entry.options } : allOptions()
  const guess = flag.startsWith('--') ? closest(flag.slice(2), Object.keys(own)) : undefined
  const where = name === undefined ? '' : ` for ${name}`
  const hint = guess === undefined ? '.' : `: did you mean '--${guess}'?`
  return `unknown option '${shown(flag)}'${where}${hint} Run 'edgetoken ${name === undefined ? '' : `${name} `}--help'.`
}

function allOptions(): OptionSpec {
  const all: Record<string, OptionSpec[string]> = { ...GLOBAL_OPTIONS }
  for (const entry of Object.values(COMMANDS)) Object.assign(all, entry.options)
  return all
}

function lookup(name: string): CommandEntry | undefined {
  return Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
}

/**
 * Parses a command line: strict flags (every command's options are known, so a flag of another
 * command is named as such), then the option environment variables. `help [COMMAND]` is the same
 * as `[COMMAND] --help`; `-h` is `--help`, `-V` and `-v` are `--version`.
 *
 * @param argv - the arguments after node and the script.
 * @param env - the environment (`EDGETOKEN_JSON`, `EDGETOKEN_MIN_TTL_SECONDS`, ...).
 * @returns the command and its options, `--version`, the usage, a command's help, or a usage error
 *   (one sentence, suggesting the closest command or option). Never throws.
 */
export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): CommandLine {
  const options = allOptions()
  const parsed = parseSimple(argv, options) ?? parseTokens(argv, options, SHORT_ALIASES)
  if ('error' in parsed) return { kind: 'error', message: `${parsed.error}. Run 'edgetoken --help'.` }
  const values = parsed.values as OptionValues
  const { positionals } = parsed
  const unknown = 'unknown' in parsed ? parsed.unknown : []

  const name = positionals[0]
  const entry = name === undefined ? undefined : lookup(name)
  if (name !== undefined && name !== HELP_COMMAND && !entry)
    return { kind: 'error', message: unknownCommand(name) }
  const first = unknown[0]
  if (first !== undefined) {
    return { kind: 'error', message: unknownOption(first, name === HELP_COMMAND ? undefined : name, entry) }
  }
  if (values.version) return { kind: 'version' }
  if (name === undefined) return { kind: 'usage', help: values.help === true }
  if (name === HELP_COMMAND) {
    const target = positionals[1]
    if (positionals.length > 2) {
      const extra = shown(positionals[2] ?? '')
      return {
        kind: 'error',
        message: `help takes one command name (got '${extra}'). Run 'edgetoken --help'.`,
      }
    }
    if (target === undefined) return { kind: 'usage', help: true }
    const targetEntry = lookup(target)
    if (!targetEntry) return { kind: 'error', message: unknownCommand(target) }
    return { kind: 'help', name: target, entry: targetEntry }
  }
  if (!entry) return { kind: 'error', message: unknownCommand(name) }
  for (const key of Object.keys(values)) {
    if (!(key in GLOBAL_OPTIONS) && !(key in entry.options)) {
      return {
        kind: 'error',
        message: `option '--${key}' is not valid for ${name}. Run 'edgetoken ${name} --help'.`,
      }
    }
  }
  const args = positionals.slice(1)
  const maxArgs = entry.maxArgs ?? 0
  if (args.length > maxArgs && values.help !== true) {
    const takes =
      maxArgs === 0 ? 'takes no arguments' : `takes at most ${maxArgs} argument${maxArgs === 1 ? '' : 's'}`
    return {
      kind: 'error',
      message: `${name} ${takes} (got '${shown(args[maxArgs] ?? '')}'). Run 'edgetoken ${name} --help'.`,
    }
  }
  const filled: Record<string, unknown> = { ...values }
  try {
    applyOptionEnv(filled, { ...GLOBAL_OPTIONS, ...entry.options }, env)
  } catch (err) {
    return { kind: 'error', message: (err as Error).message }
  }
  return { kind: 'command', name, entry, options: filled as OptionValues, args }
}
