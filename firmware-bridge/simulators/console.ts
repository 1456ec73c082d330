/**
 * Prints the display simulator's screens on a console without flooding it: each new screen once,
 * then the pending code's countdown as one live line redrawn in place on a terminal, or as one
 * line every 30 s when the output is a pipe or a log (where a redraw would be a new line a second).
 *
 * Pure apart from the injected `write` and clock, so the pacing is tested without waiting.
 *
 * @packageDocumentation
 */
import { timeLeft } from './layout.js'
import type { LoginState } from './login.js'

/** Erase the terminal line the cursor is on and return to its start (ECMA-48 EL 2, then CR). */
const ERASE_LINE = '\r\u001b[2K'

/** How often a piped console gets a countdown line by default, in ms. */
export const PIPED_COUNTDOWN_EVERY_MS = 30_000

/** Options of {@link createDisplayConsole}. */
export interface DisplayConsoleOptions {
  /** Where the text goes (e.g. `(s) => process.stdout.write(s)`). */
  write: (text: string) => void
  /** Whether `write` reaches a terminal: the countdown is then one line redrawn in place. */
  tty: boolean
  /** Put before every line, e.g. `display | `; default none. */
  label?: string
  /** Time between two countdown lines on a pipe, in ms; default {@link PIPED_COUNTDOWN_EVERY_MS}. */
  pipedCountdownEveryMs?: number
  /** The clock, in ms since the epoch; default `Date.now`. */
  now?: () => number
}

/** A console shared by the display's screens and any other output. */
export interface DisplayConsole {
  /**
   * Shows a frame; pass it as the simulator's `onRender`. A new state prints the whole screen;
   * the same pending state again (the per-second redraw) only advances the countdown.
   *
   * @param frame - the boxed 16x8 frame.
   * @param state - the state it shows, or null when blank.
   */
  render(frame: string, state: LoginState | null): void
  /**
   * Prints one other line (no label added); on a terminal the live countdown stays below it.
   *
   * @param text - the line, without its newline.
   */
  line(text: string): void
  /** Erases the live countdown line, so whatever is printed next starts on a clean line. Idempotent. */
  close(): void
}

/**
 * The countdown the console shows for a pending code, from its `expires_at` (whole seconds, as
 * the display computes it).
 *
 * @param state - the state on screen.
 * @param nowMs - the time, in ms since the epoch.
 * @returns `code WDJB-MJHT: Expires in 09:59` (`Expired` at and after `expires_at`), or null
 *   when the screen shows no pending code.
 */
export function countdownText(state: LoginState | null, nowMs: number): string | null {
  if (state?.kind !== 'pending') return null
  return `code ${state.userCode}: ${timeLeft(state.expiresEpoch - Math.floor(nowMs / 1000))}`
}

/**
 * Creates a console for the display simulator's frames.
 *
 * @param options - where to write, whether it is a terminal, the label and the clock.
 * @returns the console.
 * @example
 * ```ts
 * const out = createDisplayConsole({ write: (s) => process.stdout.write(s), tty: process.stdout.isTTY })
 * const sim = await startDisplaySimulator({ url, deviceId, onRender: out.render })
 * ```
 */
export function createDisplayConsole(options: DisplayConsoleOptions): DisplayConsole {
  const { write, tty } = options
  const label = options.label ?? ''
  const every = options.pipedCountdownEveryMs ?? PIPED_COUNTDOWN_EVERY_MS
  const now = options.now ?? Date.now
  let shown: LoginState | null | undefined
  /** The live line at the bottom of a terminal, without its label. */
  let live: string | null = null
  /** When a pipe last got the countdown, and what it said. */
  let lastPipedAt = 0
  let lastPiped = ''

  const setLive = (text: string | null) => {
    if (text === live) return
    if (text === null) write(ERASE_LINE)
    else write(`${ERASE_LINE}${label}${text}`)
    live = text
  }
  const line = (text: string) => {
    // On a terminal the live line is erased, the text printed, and the live line drawn again below.
    write(live === null ? `${text}\n` : `${ERASE_LINE}${text}\n${label}${live}`)
  }

  return {
    render(frame, state) {
      const countdown = countdownText(state, now())
      if (state !== shown) {
        shown = state
        if (tty) setLive(null)
        if (state === null) {
          line(`${label}companion display is blank`)
          return
        }
        line(`${label}companion display shows:`)
        for (const row of frame.split('\n')) line(`${label}${row}`)
        if (countdown === null) return
        if (tty) setLive(countdown)
        lastPipedAt = now()
        lastPiped = countdown
        return
      }
      if (countdown === null) {
        // The same state drawn differently (the sign-in notice's date): show it again.
        for (const row of frame.split('\n')) line(`${label}${row}`)
        return
      }
      if (tty) {
        setLive(countdown)
        return
      }
      // A pipe: every `every` ms, and once when the code has just expired.
      const expiredNow = countdown.endsWith('Expired') && !lastPiped.endsWith('Expired')
      if (countdown !== lastPiped && (now() - lastPipedAt >= every || expiredNow)) {
        line(`${label}${countdown}`)
        lastPipedAt = now()
        lastPiped = countdown
      }
    },
    line,
    close() {
      if (live !== null) setLive(null)
    },
  }
}
