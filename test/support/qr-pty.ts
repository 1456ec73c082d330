/**
 * Runs a command on a real pseudo-terminal of a fixed size and reads its screen: in tmux (a full
 * terminal emulator; the screen comes from `capture-pane -p -e`, colours included), or under
 * util-linux `script` (the raw bytes, interpreted by {@link parseScreen}). Neither needs a
 * terminal around it, nor the test runner's stdin (`script` gets a pipe of its own), so both run in CI.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseScreen, type Screen } from './qr-screen.js'

/** The terminal's width every run uses, columns. */
export const COLS = 120
/** The terminal's height every run uses, lines. */
export const ROWS = 60

/** Whether a program is installed. */
export function installed(program: string): boolean {
  return spawnSync(program, ['-V'], { stdio: 'ignore' }).error === undefined
}

/** Quotes one argument for `sh -c`. */
export function shellQuote(arg: string): string {
  return `'${arg.replaceAll("'", `'\\''`)}'`
}

/** A program running on a pty. */
export interface PtyRun {
  /** The screen now. */
  screen(): Screen
  /** Types keys (`C-c` style for tmux; raw text for script). */
  keys(keys: string): void
  /** Resolves with the exit status once the program has exited (default: within 60 s). */
  exited(timeoutMs?: number): Promise<number>
  /** Ends the run and everything it started. */
  close(): void
}

/**
 * Polls the screen until a condition holds.
 *
 * @param run - the pty run.
 * @param what - for the timeout message.
 * @param ok - the condition.
 * @param timeoutMs - default 60 s (a loaded CI machine starts node + tsx slowly).
 * @returns the screen that satisfied it.
 */
export async function waitForScreen(
  run: PtyRun,
  what: string,
  ok: (screen: Screen) => boolean,
  timeoutMs = 60_000,
): Promise<Screen> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const screen = run.screen()
    if (ok(screen)) return screen
    if (Date.now() > deadline) {
      const text = screen.rows
        .map((r) =>
          r
            .map((c) => c.ch)
            .join('')
            .trimEnd(),
        )
        .join('\n')
      throw new Error(`timed out waiting for ${what}; screen:\n${text}`)
    }
    await sleep(50)
  }
}

/**
 * Starts a command in a new tmux server (its own socket, no user config) on a `COLS`x`ROWS` pane.
 *
 * @param command - a shell command line.
 * @param env - the environment of the server, hence of the command (tmux sets `TERM` itself).
 * @returns the run.
 */
export function startTmux(command: string, env: NodeJS.ProcessEnv): PtyRun {
  const dir = mkdtempSync(join(tmpdir(), 'edgetoken-qr-tmux-'))
  const socket = join(dir, 'socket')
  const statusFile = join(dir, 'status')
  const tmux = (...args: string[]) => {
    const r = spawnSync('tmux', ['-S', socket, '-f', '/dev/null', ...args], { env, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`tmux ${args[0]} failed: ${r.stderr}`)
    return r.stdout
  }
  // remain-on-exit keeps the pane (and its last screen) after the command ends.
  tmux(
    'new-session',
    '-d',
    '-x',
    String(COLS),
    '-y',
    String(ROWS),
    '-s',
    'login',
    // The shell records the exit status: tmux 3.3 sometimes leaves its pane's process unreaped
    // (a zombie, no #{pane_dead_status}). The trap keeps the shell alive through Ctrl-C (its
    // command, unlike an ignored signal, is not inherited), so only the program acts on it.
    `trap true INT; ${command}; echo $? > ${shellQuote(statusFile)}`,
    ';',
    'set-option',
    '-g',
    'remain-on-exit',
    'on',
  )
  return {
    screen: () => parseScreen(tmux('capture-pane', '-p', '-e', '-N', '-t', 'login'), COLS),
    keys: (keys) => {
      tmux('send-keys', '-t', 'login', keys)
    },
    async exited(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const status = existsSync(statusFile) ? readFileSync(statusFile, 'utf8').trim() : ''
        if (status !== '') return Number(status)
        if (Date.now() > deadline) throw new Error('the command in tmux did not exit')
        await sleep(50)
      }
    },
    close: () => {
      spawnSync('tmux', ['-S', socket, 'kill-server'], { env, stdio: 'ignore' })
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Starts a command under util-linux `script` on a `COLS`x`ROWS` pty.
 *
 * @param command - a shell command line (run after `stty` sets the size).
 * @param env - the environment.
 * @returns the run; `keys` writes raw text to the pty (`\u0003` is Ctrl-C).
 */
export function startScript(command: string, env: NodeJS.ProcessEnv): PtyRun {
  // A pty made without a terminal around it is 0x0: set the size before the program starts.
  const child: ChildProcess = spawn(
    'script',
    ['-qfec', `stty cols ${COLS} rows ${ROWS} && exec ${command}`, '/dev/null'],
    { env, stdio: ['pipe', 'pipe', 'pipe'] },
  )
  let raw = ''
  child.stdout?.on('data', (b: Buffer) => {
    raw += b.toString('utf8')
  })
  const exit = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? -1)))
  return {
    screen: () => parseScreen(raw, COLS),
    keys: (keys) => {
      child.stdin?.write(keys)
    },
    exited: (timeoutMs = 60_000) =>
      Promise.race([
        exit,
        sleep(timeoutMs, undefined, { ref: false }).then(() => {
          throw new Error('the command under script did not exit')
        }),
      ]),
    close: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    },
  }
}
