/**
 * The command-line entry: parses argv, loads the one command asked for, maps errors to the
 * contract's exit codes and prints them as one line (a stack trace only with `--debug`).
 */
import { parseArgs } from 'node:util'
import { EdgeTokenError } from '../errors.js'
import { VERSION } from '../version.js'
import type { CommandContext, OptionSpec, OptionValues } from './context.js'
import { ExitCode, exitCodeFor } from './exit-codes.js'
import { COMMANDS, GLOBAL_OPTIONS, OPTION_ENV } from './registry.js'

/** The process-like environment main() runs in (injectable for tests). */
export interface MainIo {
  argv: readonly string[]
  env: NodeJS.ProcessEnv
  stdin: NodeJS.ReadableStream & import('node:stream').Readable
  stdout: import('node:stream').Writable
  stderr: import('node:stream').Writable
  signal: AbortSignal
}

function usage(): string {
  const names = Object.keys(COMMANDS)
  const width = Math.max(...names.map((n) => n.length))
  const lines = names.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n]?.summary ?? ''}`)
  return [
    'Usage: edgetoken <command> [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'Global options:',
    '  --config FILE      JSON config file (env EDGETOKEN_CONFIG)',
    '  --state-dir DIR    token store and spool directory (env EDGETOKEN_STATE_DIR)',
    '  --json             NDJSON events on stdout; human text on stderr',
    '  --debug            print stack traces of unexpected errors',
    '  --help, --version',
    '',
    'Exit codes: 0 ok, 1 internal, 2 usage/config, 3 sign-in required,',
    '            4 denied/expired/cancelled, 5 service unavailable, 6 store unreadable.',
    "Run 'edgetoken <command> --help' for a command's options.",
  ].join('\n')
}

/** Collapses any text to one printable line, for error output. */
function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim()
}

/**
 * Runs the CLI.
 *
 * @param io - argv (without node and script), environment, streams, and the stop signal.
 * @returns the exit code.
 */
/**
 * Reads a boolean option's environment variable: `1`/`true`/`yes` or `0`/`false`/`no`.
 *
 * @returns the value, or undefined when unset or empty.
 * @throws ConfigError-like usage error naming the variable for any other text.
 */
function envBoolean(env: NodeJS.ProcessEnv, name: string): boolean | undefined {
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

export async function main(io: MainIo): Promise<number> {
  let wantsJson = io.argv.includes('--json')
  let debug = io.argv.includes('--debug')
  try {
    wantsJson ||= envBoolean(io.env, 'EDGETOKEN_JSON') === true
    debug ||= envBoolean(io.env, 'EDGETOKEN_DEBUG') === true
  } catch (err) {
    io.stderr.write(`edgetoken: ${(err as Error).message}\n`)
    return ExitCode.usage
  }
  const say = (line: string) => (wantsJson ? io.stderr : io.stdout).write(`${line}\n`)
  const fail = (code: number, category: string, message: string): number => {
    if (wantsJson) io.stdout.write(`${JSON.stringify({ event: 'error', code: category, message })}\n`)
    io.stderr.write(`edgetoken: ${oneLine(message)}\n`)
    return code
  }

  const allOptions: Record<string, OptionSpec[string]> = { ...GLOBAL_OPTIONS }
  for (const entry of Object.values(COMMANDS)) Object.assign(allOptions, entry.options)
  let values: OptionValues
  let positionals: string[]
  try {
    const parsed = parseArgs({
      args: [...io.argv],
      options: allOptions,
      allowPositionals: true,
      strict: true,
    })
    values = parsed.values as OptionValues
    positionals = parsed.positionals
  } catch (err) {
    return fail(ExitCode.usage, 'config', `${(err as Error).message} (see 'edgetoken --help')`)
  }

  const name = positionals[0]
  if (values.version) {
    io.stdout.write(`${VERSION}\n`)
    return ExitCode.ok
  }
  if (name === undefined) {
    ;(values.help ? io.stdout : io.stderr).write(`${usage()}\n`)
    return values.help ? ExitCode.ok : ExitCode.usage
  }
  const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
  if (!entry) return fail(ExitCode.usage, 'config', `unknown command '${name}' (see 'edgetoken --help')`)
  for (const key of Object.keys(values)) {
    if (!(key in GLOBAL_OPTIONS) && !(key in entry.options)) {
      return fail(ExitCode.usage, 'config', `option '--${key}' is not valid for '${name}'`)
    }
  }
  try {
    const filled: Record<string, unknown> = { ...values }
    applyOptionEnv(filled, { ...GLOBAL_OPTIONS, ...entry.options }, io.env)
    values = filled as OptionValues
  } catch (err) {
    return fail(ExitCode.usage, 'config', (err as Error).message)
  }

  try {
    const mod = (await entry.load()).default
    if (values.help) {
      io.stdout.write(`${mod.help}\n`)
      return ExitCode.ok
    }
    const ctx: CommandContext = {
      options: values,
      args: positionals.slice(1),
      json: wantsJson,
      debug,
      get stdin() {
        return io.stdin
      },
      stdout: io.stdout,
      stderr: io.stderr,
      env: io.env,
      signal: io.signal,
      emit: (event) => {
        if (wantsJson) io.stdout.write(`${JSON.stringify(event)}\n`)
      },
      say,
      warn: (line) => io.stderr.write(`edgetoken: warning: ${oneLine(line)}\n`),
    }
    return await mod.run(ctx)
  } catch (err) {
    if (err instanceof EdgeTokenError) {
      if (debug && err.stack) io.stderr.write(`${err.stack}\n`)
      return fail(exitCodeFor(err.category), err.category, err.message)
    }
    if (debug && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`)
    const message = err instanceof Error ? err.message : String(err)
    return fail(ExitCode.internal, 'internal', `internal error: ${message}`)
  }
}
