/**
 * Hands an authorization URL to the user's browser: `$BROWSER` when set, else `xdg-open` when a
 * graphical session is there (`DISPLAY` or `WAYLAND_DISPLAY`). The program is started detached
 * with the URL as its only argument (an argv entry, never part of a shell command line: a URL's
 * `&` and `;` stay characters) and its output ignored, so a browser that lives on does not hold
 * the CLI, and the URL never appears in a command a shell parses.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8252#section-4.1 (the external user-agent)
 * @packageDocumentation
 */
import { spawn } from 'node:child_process'
import { EdgeTokenError } from '../errors.js'

/** The program that opens URLs here, and where it came from. */
export interface BrowserCommand {
  /** A program name (looked up in `PATH`) or path. */
  readonly program: string
  /** `BROWSER` (the environment variable) or `xdg-open` (a graphical session's opener). */
  readonly source: 'BROWSER' | 'xdg-open'
}

/**
 * The program to open a URL with. `$BROWSER` is one program (a name or a path; the first entry
 * of a colon-separated list, as xdg-utils and Python's `webbrowser` read it), started with the
 * URL as its single argument.
 *
 * @param env - the environment.
 * @returns the command, or undefined when there is neither `$BROWSER` nor a display.
 * @example
 * ```ts
 * const command = browserCommandFor(process.env) // { program: 'xdg-open', source: 'xdg-open' } in a desktop session
 * ```
 */
export function browserCommandFor(env: NodeJS.ProcessEnv): BrowserCommand | undefined {
  const first = (env.BROWSER ?? '').split(':').find((entry) => entry.trim().length > 0)
  if (first !== undefined) return { program: first.trim(), source: 'BROWSER' }
  if (env.DISPLAY || env.WAYLAND_DISPLAY) return { program: 'xdg-open', source: 'xdg-open' }
  return undefined
}

/**
 * Starts the browser with a URL and returns once the program started (not when it exits).
 *
 * @param command - from {@link browserCommandFor}.
 * @param url - the URL (its own argv entry).
 * @param env - the child's environment. Default `process.env`.
 * @returns when the program has been started.
 * @throws EdgeTokenError `ERR_UNAVAILABLE` when it cannot be started (not found, not executable);
 *   the message names the program, not the URL.
 * @example
 * ```ts
 * await openBrowser({ program: 'xdg-open', source: 'xdg-open' }, request.url)
 * ```
 */
export function openBrowser(command: BrowserCommand, url: string, env?: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command.program, [url], {
      detached: true,
      stdio: 'ignore',
      shell: false,
      env: env ?? process.env,
    })
    child.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new EdgeTokenError(
          'ERR_UNAVAILABLE',
          `cannot start the browser ${command.program} (${command.source}): ${err.code ?? 'error'}`,
          { cause: err },
        ),
      )
    })
    child.once('spawn', () => {
      child.unref()
      resolve()
    })
  })
}
