/**
 * The companion display's screen layout, ported line for line from firmware/edgedisplay/layout.py
 * (128x64 pixels, 8x8 font: 16 columns x 8 rows). Both are checked against
 * firmware/tests/layout_cases.json, so the simulator shows what the real display would.
 *
 * @packageDocumentation
 */
import type { EndedLogin, EndState, LoginState, PendingLogin, SigninRequiredLogin } from './login.js'

/** One piece of text: top-left pixel, the text, and an integer scale (2 = double size). */
export interface TextOp {
  /** Left edge, in pixels. */
  x: number
  /** Top edge, in pixels. */
  y: number
  /** The text (printable ASCII). */
  text: string
  /** Integer scale: 2 draws each font pixel as 2x2. */
  scale: number
}

/** Screen width in pixels. */
export const WIDTH = 128
/** Screen height in pixels. */
export const HEIGHT = 64
/** Font cell size in pixels (framebuf's 8x8 font). */
export const CHAR = 8
/** Text columns at scale 1. */
export const COLS = WIDTH / CHAR
/** Text rows at scale 1. */
export const ROWS = HEIGHT / CHAR
const BIG = 2
const BIG_COLS = COLS / BIG
/** How long an end screen stays before the screen goes blank, in seconds. */
export const END_HOLD_SECONDS = 10

const END_TEXT: Readonly<Record<EndState, readonly [string, string]>> = {
  approved: ['Signed in', 'Device is ready'],
  denied: ['Sign-in denied', ''],
  expired: ['Code expired', 'Try again'],
  cancelled: ['Sign-in', 'cancelled'],
}

/**
 * @param text - the text.
 * @param scale - its scale.
 * @returns the x that centres it (0 when it does not fit).
 */
export function centreX(text: string, scale = 1): number {
  return Math.max(0, Math.floor((WIDTH - text.length * CHAR * scale) / 2))
}

/**
 * @param text - the text.
 * @param width - columns available.
 * @returns text cut to width, a trailing `~` marking the cut.
 */
export function fit(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}~`
}

/**
 * Hard-wraps text; `~` marks a cut.
 *
 * @param text - the text.
 * @param width - columns per line.
 * @param maxLines - at most this many lines.
 * @returns the lines.
 */
export function wrap(text: string, width: number, maxLines: number): string[] {
  const lines: string[] = []
  let i = 0
  while (i < text.length && lines.length < maxLines) {
    lines.push(text.slice(i, i + width))
    i += width
  }
  if (i < text.length) lines[lines.length - 1] = fit(`${lines[lines.length - 1]}${text.slice(i)}`, width)
  return lines
}

/**
 * @param url - a verification URI.
 * @returns the URL as a person types it (`https://` and a lone trailing slash dropped).
 */
export function shortUrl(url: string): string {
  let u = url.startsWith('https://') ? url.slice(8) : url
  if (u.endsWith('/') && u.split('/').length - 1 === 1) u = u.slice(0, -1)
  return u
}

const two = (n: number) => (n < 10 ? `0${n}` : String(n))

/**
 * @param seconds - seconds until the code expires.
 * @returns `Expires in MM:SS`, `Expires in 2h05m`, `Expires in 10h+` or `Expired` (at most 16 characters).
 */
export function timeLeft(seconds: number): string {
  if (seconds <= 0) return 'Expired'
  const s = Math.trunc(seconds)
  if (s < 6000) return `Expires in ${two(Math.floor(s / 60))}:${two(s % 60)}`
  if (s < 36000) return `Expires in ${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`
  return 'Expires in 10h+'
}

/**
 * @param code - a user code.
 * @param width - columns per line.
 * @returns one or two lines: split after a dash when that fits, else in halves.
 */
export function splitCode(code: string, width: number): string[] {
  if (code.length <= width) return [code]
  const dash = code.indexOf('-')
  if (dash > 0 && dash < width && code.length - dash - 1 <= width)
    return [code.slice(0, dash + 1), code.slice(dash + 1)]
  const half = Math.floor((code.length + 1) / 2)
  return [code.slice(0, half), code.slice(half)]
}

const op = (x: number, y: number, text: string, scale = 1): TextOp => ({ x, y, text, scale })

/**
 * @param p - the pending flow.
 * @param now - Unix seconds.
 * @returns the text ops of the pending screen.
 */
export function pendingScreen(p: PendingLogin, now: number): TextOp[] {
  const ops: TextOp[] = []
  const url = wrap(shortUrl(p.verificationUri), COLS, 2)
  const left = timeLeft(p.expiresEpoch - now)
  const code = p.userCode
  if (code.length <= BIG_COLS) {
    ops.push(op(0, 0, 'Sign in at:'))
    for (const [i, line] of url.entries()) ops.push(op(0, (1 + i) * CHAR, line))
    ops.push(op(0, 3 * CHAR, 'Enter code:'))
    ops.push(op(centreX(code, BIG), 4 * CHAR, code, BIG))
  } else if (code.length <= 2 * BIG_COLS) {
    for (const [i, line] of url.entries()) ops.push(op(0, i * CHAR, line))
    for (const [i, part] of splitCode(code, BIG_COLS).entries()) {
      ops.push(op(centreX(part, BIG), (2 + 2 * i) * CHAR, part, BIG))
    }
  } else {
    ops.push(op(0, 0, 'Sign in at:'))
    for (const [i, line] of url.entries()) ops.push(op(0, (1 + i) * CHAR, line))
    ops.push(op(0, 3 * CHAR, 'Enter code:'))
    for (const [i, line] of wrap(code, COLS, 2).entries()) ops.push(op(centreX(line), (4 + i) * CHAR, line))
  }
  ops.push(op(centreX(left), 7 * CHAR, left))
  return ops
}

const SIGNIN_TITLE = 'Sign-in required'
const SIGNIN_PAIR = ['Press PAIR', 'to get a code'] as const
const SIGNIN_NO_PAIR = ['Run on gateway:', 'edgetoken login'] as const

/**
 * Sliced from the validated ISO string, as the firmware does (no date arithmetic on the board).
 *
 * @param s - the sign-in required notice.
 * @param now - Unix seconds.
 * @returns `Since HH:MM UTC` for the first day, then `Since YYYY-MM-DD` (at most 16 characters).
 */
export function sinceText(s: SigninRequiredLogin, now: number): string {
  if (now - s.sinceEpoch < 86400) return `Since ${s.since.slice(11, 16)} UTC`
  return `Since ${s.since.slice(0, 10)}`
}

/**
 * @param s - the sign-in required notice.
 * @param now - Unix seconds.
 * @returns the text ops of the sign-in required screen (`Press PAIR` when the agent accepts one).
 */
export function signinScreen(s: SigninRequiredLogin, now: number): TextOp[] {
  const ops = [op(centreX(SIGNIN_TITLE), CHAR, SIGNIN_TITLE)]
  for (const [i, line] of (s.pair ? SIGNIN_PAIR : SIGNIN_NO_PAIR).entries()) {
    ops.push(op(centreX(line), (3 + i) * CHAR, line))
  }
  const since = sinceText(s, now)
  ops.push(op(centreX(since), 7 * CHAR, since))
  return ops
}

/**
 * @param e - the end state.
 * @returns the text ops of the end screen.
 */
export function endScreen(e: EndedLogin): TextOp[] {
  const [title, sub] = END_TEXT[e.state]
  const ops = [op(centreX(title), 3 * CHAR, title)]
  if (sub) ops.push(op(centreX(sub), 4 * CHAR, sub))
  return ops
}

/**
 * @param state - a parsed state, or null for nothing.
 * @param now - Unix seconds.
 * @returns the text ops for it (none when cleared).
 */
export function screenFor(state: LoginState | null, now: number): TextOp[] {
  if (state === null || state.kind === 'cleared') return []
  if (state.kind === 'ended') return endScreen(state)
  if (state.kind === 'signin_required') return signinScreen(state, now)
  return pendingScreen(state, now)
}

/** A state the screen can show (the clear is not one: it blanks the screen). */
export type ShownState = PendingLogin | EndedLogin | SigninRequiredLogin

/**
 * What to show now: holds an end screen `holdSeconds` after the agent's clear, as the firmware does;
 * what arrives during the hold (the clear, or a sign-in required notice) is shown after it.
 */
export class Screen {
  #state: ShownState | null = null
  #endedAt: number | null = null
  #after: SigninRequiredLogin | null = null
  readonly #holdSeconds: number

  /** @param holdSeconds - how long an end screen stays; default {@link END_HOLD_SECONDS}. */
  constructor(holdSeconds = END_HOLD_SECONDS) {
    this.#holdSeconds = holdSeconds
  }

  /** The state shown, or null when blank. */
  get state(): ShownState | null {
    return this.#state
  }

  /**
   * @param parsed - a parseLogin() result; null (invalid) changes nothing.
   * @param now - Unix seconds.
   * @returns whether the screen changed.
   */
  apply(parsed: LoginState | null, now: number): boolean {
    if (parsed === null) return false
    if (parsed.kind === 'ended') {
      this.#state = parsed
      this.#endedAt = now
      this.#after = null
      return true
    }
    const held = this.#state?.kind === 'ended'
    if (parsed.kind === 'cleared') {
      if (held) {
        this.#after = null
        return false // tick() clears it after the hold
      }
      const changed = this.#state !== null
      this.#state = null
      return changed
    }
    if (parsed.kind === 'signin_required' && held) {
      this.#after = parsed // tick() shows it after the hold
      return false
    }
    this.#state = parsed
    this.#endedAt = null
    this.#after = null
    return true
  }

  /**
   * @param now - Unix seconds.
   * @returns whether a held end screen expired now.
   */
  tick(now: number): boolean {
    if (this.#endedAt !== null && now - this.#endedAt >= this.#holdSeconds) {
      this.#state = this.#after
      this.#endedAt = null
      this.#after = null
      return true
    }
    return false
  }

  /**
   * @param now - Unix seconds.
   * @returns the text ops to draw.
   */
  ops(now: number): TextOp[] {
    return screenFor(this.#state, now)
  }
}

/**
 * The screen as {@link ROWS} strings of {@link COLS} characters; scale-2 text puts each character
 * on every other column of its first row.
 *
 * @param ops - text ops.
 * @returns the rows.
 */
export function frameRows(ops: readonly TextOp[]): string[] {
  const grid = Array.from({ length: ROWS }, () => Array<string>(COLS).fill(' '))
  for (const { x, y, text, scale } of ops) {
    const row = Math.floor(y / CHAR)
    const col = Math.floor(x / CHAR)
    ;[...text].forEach((ch, i) => {
      const c = col + i * scale
      const line = grid[row]
      if (line && c >= 0 && c < COLS) line[c] = ch
    })
  }
  return grid.map((r) => r.join(''))
}

/**
 * @param rows - from {@link frameRows}.
 * @returns the rows inside an ASCII border, as one string (what the simulator prints).
 */
export function boxed(rows: readonly string[]): string {
  const edge = `+${'-'.repeat(COLS)}+`
  return [edge, ...rows.map((r) => `|${r}|`), edge].join('\n')
}
