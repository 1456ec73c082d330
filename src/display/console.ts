/**
 * The terminal display: the IdP's message or our own instructions, the user code always as text
 * (RFC 8628 §3.3.1), and on a TTY a countdown updated in place. Piped output gets plain lines and
 * no ANSI escapes, so logs and journald stay readable.
 *
 * The countdown is the one line that is rewritten (`\r`), so it must be the last line on the
 * terminal: it starts in {@link LoginDisplay.waiting}, after every display (the QR code) has
 * written, and is wiped before the end state is written.
 *
 * @packageDocumentation
 */
import type { Writable } from 'node:stream'
import {
  type DisplayEndDetail,
  type DisplayEndState,
  type DisplayFlow,
  isoSeconds,
  type LoginDisplay,
} from './types.js'

/** A writable stream that may be a terminal. */
export type TextStream = Writable & { isTTY?: boolean; columns?: number }

/** Options of {@link createConsoleDisplay}. */
export interface ConsoleDisplayOptions {
  /** Where to write: stdout, or stderr under `--json`. */
  stream: TextStream
  /** The clock, epoch ms; injectable for tests. Default `Date.now`. */
  now?: () => number
  /** Environment, for `NO_COLOR`. Default `process.env`. */
  env?: NodeJS.ProcessEnv
  /** Countdown update period, ms (at most once a second). Default 1000. */
  tickMs?: number
}

const BOLD = '\u001b[1m'
const RESET = '\u001b[0m'

/**
 * Removes control characters (ANSI escapes included) from text that came from a server, so it
 * cannot move the cursor, clear the screen or fake other output.
 *
 * @param text - untrusted text.
 * @returns the text with every control character replaced by a space.
 */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim()
}

/**
 * A duration as `m:ss` or `h:mm:ss`.
 *
 * @param ms - milliseconds (negative counts as 0).
 * @returns e.g. `14:05`.
 */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000))
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = String(total % 60).padStart(2, '0')
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`
}

function minutes(ms: number): string {
  const m = Math.max(1, Math.round(ms / 60_000))
  return m === 1 ? '1 minute' : `${m} minutes`
}

/** The console display: a {@link LoginDisplay} that can let other output pass its live line. */
export interface ConsoleDisplay extends LoginDisplay {
  /**
   * Runs `write` (which prints whole lines, e.g. a warning on stderr) with the countdown line
   * wiped first and drawn again below, so that no other output lands in the live line: on a
   * terminal stdout and stderr share one screen.
   *
   * @param write - prints the other output.
   */
  interject(write: () => void): void
}

/**
 * Creates the console display.
 *
 * @param options - the stream and clock.
 * @returns a {@link ConsoleDisplay}.
 * @example
 * ```ts
 * const display = createConsoleDisplay({ stream: ctx.json ? ctx.stderr : ctx.stdout })
 * await display.show(toDisplayFlow(flow))
 * display.waiting?.() // starts the countdown on a TTY
 * ```
 */
export function createConsoleDisplay(options: ConsoleDisplayOptions): ConsoleDisplay {
  const { stream } = options
  const now = options.now ?? Date.now
  const tty = stream.isTTY === true
  const env = options.env ?? process.env
  const color = tty && !env.NO_COLOR && env.TERM !== 'dumb'
  const tickMs = Math.max(options.tickMs ?? 1000, 1000)
  let timer: NodeJS.Timeout | undefined
  let lineLength = 0
  let expiresAt = 0
  // Between show and end: only then is there a countdown to run.
  let pending = false

  const write = (text: string) => {
    stream.write(text)
  }
  const stopCountdown = () => {
    if (timer) clearInterval(timer)
    timer = undefined
    if (lineLength > 0) {
      // Wipe the countdown line with spaces: no ANSI needed.
      write(`\r${' '.repeat(lineLength)}\r`)
      lineLength = 0
    }
  }
  const tick = () => {
    const left = expiresAt - now()
    const width = Math.max((stream.columns ?? 80) - 1, 20)
    // A line wider than the terminal wraps, and \r would then rewrite only its last part.
    const text = `Waiting for approval... ${formatDuration(left)} left`.slice(0, width)
    write(`\r${text.padEnd(lineLength)}`)
    lineLength = text.length
    if (left <= 0 && timer) {
      clearInterval(timer)
      timer = undefined
    }
  }

  return {
    name: 'console',
    show(flow: DisplayFlow) {
      stopCountdown()
      expiresAt = flow.expiresAt
      pending = true
      const code = printable(flow.userCode)
      const shownCode = color ? `${BOLD}${code}${RESET}` : code
      const lines: string[] = []
      const message = flow.message === undefined ? '' : printable(flow.message)
      if (message) {
        lines.push(message)
        // RFC 8628 §3.3.1: the user code is always shown as text, whatever the message says.
        if (!message.includes(code)) lines.push(`Code: ${shownCode}`)
      } else {
        lines.push(
          `To sign in, open ${printable(flow.verificationUri)} and enter the code:`,
          '',
          `    ${shownCode}`,
          '',
        )
      }
      const left = flow.expiresAt - now()
      lines.push(`The code expires in ${minutes(left)} (${isoSeconds(flow.expiresAt)}).`)
      write(`${lines.join('\n')}\n`)
    },
    waiting() {
      if (!tty || !pending || timer || lineLength > 0) return
      tick()
      timer = setInterval(tick, tickMs)
      timer.unref()
    },
    end(state: DisplayEndState, detail?: DisplayEndDetail) {
      pending = false
      stopCountdown()
      const reason = detail?.reason ? ` (${printable(detail.reason)})` : ''
      const texts: Record<DisplayEndState, string> = {
        approved: detail?.username ? `Signed in as ${printable(detail.username)}.` : 'Signed in.',
        denied: `Sign-in was denied${reason}.`,
        expired: `The code expired before sign-in completed${reason}. Run 'edgetoken login' again.`,
        cancelled: `Sign-in cancelled${reason}.`,
        failed: `Sign-in failed${reason}.`,
      }
      write(`${texts[state]}\n`)
    },
    interject(other: () => void) {
      if (lineLength === 0) return other()
      write(`\r${' '.repeat(lineLength)}\r`)
      lineLength = 0
      try {
        other()
      } finally {
        // The countdown goes on below the other output, if it still runs.
        if (timer) tick()
      }
    },
    close() {
      stopCountdown()
    },
  }
}
