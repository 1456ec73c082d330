/**
 * Runs the full CLI in this process: SIGINT/SIGTERM become the commands' stop signal, a closed
 * stdout pipe is no error, and {@link main}'s answer becomes the exit code. Loaded by the
 * executable (../cli.ts) for everything its cached `token` answer does not cover.
 */
import { main } from './main.js'

/**
 * How long a command may take to stop after the first SIGINT/SIGTERM before the process ends as
 * after a second one (exit 130), ms: above the daemon's 10 s shutdown budget, far below systemd's
 * 90 s stop timeout. Commands stop well within it; this only holds when one does not (a request
 * that its HTTP client keeps alive, a hung file system), so one signal is always enough.
 */
export const FORCE_EXIT_AFTER_SIGNAL_MS = 15_000

/** Options of {@link runProcess}; the defaults are the real ones, tests replace them. */
export interface RunProcessOptions {
  /** The dispatcher. Default {@link main}. */
  main?: typeof main
  /** See {@link FORCE_EXIT_AFTER_SIGNAL_MS}. */
  forceExitMs?: number
}

/**
 * Runs one command line and sets `process.exitCode`.
 *
 * @param argv - the arguments after node and the script.
 * @param options - the dispatcher and the forced-exit delay (tests).
 * @returns when the command has finished (handles it opened are closed; see the guard below).
 */
export async function runProcess(argv: readonly string[], options: RunProcessOptions = {}): Promise<void> {
  const run = options.main ?? main
  const forceExitMs = options.forceExitMs ?? FORCE_EXIT_AFTER_SIGNAL_MS
  const controller = new AbortController()
  let stops = 0
  const onSignal = (sig: NodeJS.Signals) => {
    stops += 1
    // A second Ctrl-C means "now": the first one asked the command to stop cleanly.
    if (stops > 1) process.exit(130)
    setTimeout(() => process.exit(130), forceExitMs).unref()
    controller.abort(sig)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // A closed pipe (`edgetoken token | head -c0`) is not an error worth a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
  })

  const code = await run({
    argv,
    env: process.env,
    // A getter: creating the stdin stream costs a few ms, and only `send` reads it.
    get stdin() {
      return process.stdin
    },
    stdout: process.stdout,
    stderr: process.stderr,
    signal: controller.signal,
  })
  process.exitCode = code
  // Commands close what they open; this only guards against a stray handle keeping a script waiting.
  setTimeout(() => process.exit(code), 2000).unref()
}
