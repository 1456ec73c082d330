/**
 * The command-line entry: parses argv, loads the one command asked for, maps errors to the
 * contract's exit codes and prints them as one line (a stack trace only with `--debug`).
 */
import { EdgeTokenError } from '../errors.js'
import { VERSION } from '../version.js'
import { envBoolean, parseCommandLine } from './command-line.js'
import type { CommandContext, OptionValues } from './context.js'
import { ExitCode, exitCodeFor } from './exit-codes.js'
import { storeRecovery, withNextSteps } from './hints.js'
import { COMMANDS } from './registry.js'

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
    `  ${'help'.padEnd(width)}  this text, or a command's help: edgetoken help <command>`,
    '',
    'Global options:',
    '  --config FILE      JSON config file (env EDGETOKEN_CONFIG)',
    '  --state-dir DIR    token store and spool directory (env EDGETOKEN_STATE_DIR)',
    '  --json             NDJSON events on stdout; human text on stderr',
    '  --debug            print stack traces of unexpected errors',
    "  -h, --help         usage, or the command's help",
    '  -V, -v, --version  print the version',
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
 * How to recover from an unreadable store, naming the store file of the state directory in use.
 * Loaded only on this error path; the configuration loaded fine moments ago for the command.
 */
async function recovery(message: string, options: OptionValues, env: NodeJS.ProcessEnv): Promise<string> {
  try {
    const [{ loadConfig }, { STORE_FILE }, { join }] = await Promise.all([
      import('../config/load.js'),
      import('../store/token-store.js'),
      import('node:path'),
    ])
    const { stateDir } = await loadConfig({ options, env })
    return storeRecovery(message, join(stateDir, STORE_FILE), options)
  } catch {
    return ''
  }
}

/**
 * Runs the CLI.
 *
 * @param io - argv (without node and script), environment, streams, and the stop signal.
 * @returns the exit code.
 */
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

  const line = parseCommandLine(io.argv, io.env)
  if (line.kind === 'error') return fail(ExitCode.usage, 'config', line.message)
  if (line.kind === 'version') {
    io.stdout.write(`${VERSION}\n`)
    return ExitCode.ok
  }
  if (line.kind === 'usage') {
    ;(line.help ? io.stdout : io.stderr).write(`${usage()}\n`)
    return line.help ? ExitCode.ok : ExitCode.usage
  }
  if (line.kind === 'help') {
    io.stdout.write(`${(await line.entry.load()).default.help}\n`)
    return ExitCode.ok
  }
  const { entry, options: values } = line

  try {
    const mod = (await entry.load()).default
    if (values.help) {
      io.stdout.write(`${mod.help}\n`)
      return ExitCode.ok
    }
    const ctx: CommandContext = {
      options: values,
      args: line.args,
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
      warn: (text) => io.stderr.write(`edgetoken: warning: ${oneLine(text)}\n`),
    }
    return await mod.run(ctx)
  } catch (err) {
    if (err instanceof EdgeTokenError) {
      if (debug && err.stack) io.stderr.write(`${err.stack}\n`)
      let message = withNextSteps(err.message, values)
      if (err.code === 'ERR_STORE_UNREADABLE') message += await recovery(message, values, io.env)
      return fail(exitCodeFor(err.category), err.category, message)
    }
    if (debug && err instanceof Error && err.stack) io.stderr.write(`${err.stack}\n`)
    const message = err instanceof Error ? err.message : String(err)
    return fail(ExitCode.internal, 'internal', `internal error: ${message}`)
  }
}
