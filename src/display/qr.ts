/**
 * A terminal QR code of the verification URI, so a phone can open it without typing.
 *
 * RFC 8628 §3.3.1: `verification_uri_complete` (which carries the user code) is meant for
 * non-textual transmission such as a QR code; without it, the plain `verification_uri`.
 *
 * The code is drawn with half blocks (one character per module across, two modules per line) and
 * a quiet zone of 4 modules on every side (ISO/IEC 18004 asks for 4): scanners look for light
 * space around the finder patterns and give up when text or a dark terminal background touches
 * them. A phone also expects dark modules on light. So on a colour terminal every cell is painted
 * black on white, which reads the same on dark and light themes; without colour (`NO_COLOR`,
 * `TERM=dumb`, piped) the characters alone carry the modules, drawn for a dark background unless
 * `COLORFGBG` or the `qrTheme` option says the background is light.
 *
 * The encoder is qrcode-terminal's bundled one (Kazuhiko Arase's QRCode), loaded only when a QR
 * code is actually drawn; its own small-mode output has a 1-module border and assumes a dark theme.
 *
 * @packageDocumentation
 */
import { createRequire } from 'node:module'
import type { QrTheme } from '../config/types.js'
import { secureUrl } from '../lib/url.js'
import type { TextStream } from './console.js'
import type { DisplayFlow, LoginDisplay } from './types.js'

/** Light modules around the code on every side (ISO/IEC 18004 asks for at least 4). */
export const QUIET_ZONE_MODULES = 4

/**
 * How a QR code is painted: explicit colours (`sgr` is the SGR parameter list that selects a
 * black foreground on a white background), or plain characters for a terminal background.
 */
export type QrPaint =
  | { readonly kind: 'color'; readonly sgr: string }
  | { readonly kind: 'plain'; readonly background: 'dark' | 'light' }

/** Options of {@link createQrDisplay}. */
export interface QrDisplayOptions {
  /** Where to draw: stdout, or stderr under `--json`. */
  stream: TextStream
  /** Environment, for `NO_COLOR`, `TERM`, `COLORTERM`, `COLORFGBG`. Default `process.env`. */
  env?: NodeJS.ProcessEnv
  /** How to draw: `auto` (default), or plain characters for a `dark` or `light` background. */
  theme?: QrTheme | undefined
  /** Receives a warning when the URI is not drawn. */
  onWarning?: (line: string) => void
}

/**
 * The URI a QR code should carry for a flow, when it is safe to show.
 *
 * @param flow - the pending flow.
 * @returns the complete URI when present, else the verification URI; undefined when it is not
 *   https (or http to loopback) — the protocol core validates this too, this is a cheap second check.
 * @see https://www.rfc-editor.org/rfc/rfc8628#section-3.3.1
 */
export function qrTarget(flow: DisplayFlow): string | undefined {
  const uri = flow.verificationUriComplete ?? flow.verificationUri
  return secureUrl(uri) ? uri : undefined
}

/**
 * Chooses how to paint a QR code on a stream.
 *
 * @param stream - the output; colours only when it is a TTY.
 * @param env - `NO_COLOR` and `TERM=dumb` turn colours off; `COLORTERM` / `TERM` pick 24-bit,
 *   256 or 8 colours; `COLORFGBG` (`fg;bg`, set by rxvt, Konsole and others) tells a light background.
 * @param theme - `dark` or `light` force plain characters for that background.
 * @returns the paint.
 */
export function qrPaint(stream: TextStream, env: NodeJS.ProcessEnv, theme: QrTheme = 'auto'): QrPaint {
  if (theme !== 'auto') return { kind: 'plain', background: theme }
  if (stream.isTTY === true && !env.NO_COLOR && env.TERM !== 'dumb') {
    // Colours a theme is least likely to remap: exact RGB, else the 256-colour grey ramp's darkest
    // and the colour cube's white (base16 themes remap 16-21), else the 8 basic colours.
    if (/^(truecolor|24bit)$/i.test(env.COLORTERM ?? ''))
      return { kind: 'color', sgr: '38;2;0;0;0;48;2;255;255;255' }
    if ((env.TERM ?? '').includes('256')) return { kind: 'color', sgr: '38;5;232;48;5;231' }
    return { kind: 'color', sgr: '30;47' }
  }
  return { kind: 'plain', background: lightBackground(env.COLORFGBG) ? 'light' : 'dark' }
}

/** `COLORFGBG` is `fg;bg` or `fg;default;bg`: a background of 7 or 9-15 is light (Vim reads it the same way). */
function lightBackground(colorfgbg: string | undefined): boolean {
  const bg = colorfgbg?.split(';').at(-1)
  if (bg === undefined || !/^\d{1,2}$/.test(bg)) return false
  const n = Number(bg)
  return n === 7 || (n >= 9 && n <= 15)
}

interface VendorQrCode {
  addData(data: string): void
  make(): void
  getModuleCount(): number
  isDark(row: number, col: number): boolean
}

/**
 * The modules of the QR code of a text (error correction level L, the smallest version that fits),
 * without a quiet zone.
 *
 * @param text - what to encode.
 * @returns rows of modules, `true` for dark.
 */
export function qrMatrix(text: string): boolean[][] {
  // qrcode-terminal's encoder is CommonJS without types and not exported by its main module.
  const require = createRequire(import.meta.url)
  const QRCode = require('qrcode-terminal/vendor/QRCode/index.js') as new (
    typeNumber: number,
    level: number,
  ) => VendorQrCode
  const levels = require('qrcode-terminal/vendor/QRCode/QRErrorCorrectLevel.js') as { L: number }
  const qr = new QRCode(-1, levels.L)
  // Its byte mode writes each UTF-16 unit as one byte: hand it the UTF-8 bytes instead.
  qr.addData(Buffer.from(text, 'utf8').toString('latin1'))
  qr.make()
  const n = qr.getModuleCount()
  return Array.from({ length: n }, (_, row) => Array.from({ length: n }, (_, col) => qr.isDark(row, col)))
}

/**
 * Draws a module matrix with half blocks inside a {@link QUIET_ZONE_MODULES} quiet zone.
 *
 * @param matrix - rows of modules, `true` for dark (from {@link qrMatrix}).
 * @param paint - from {@link qrPaint}.
 * @returns the lines, joined by `\n`, without a final newline; with colours, each line sets and
 *   resets its own, so nothing bleeds into the next line or into later output.
 */
export function drawQr(matrix: readonly (readonly boolean[])[], paint: QrPaint): string {
  const quiet = QUIET_ZONE_MODULES
  const size = matrix.length + 2 * quiet
  const dark = (row: number, col: number) => matrix[row - quiet]?.[col - quiet] === true
  // The character's ink (foreground) draws light modules on a dark plain terminal, dark ones otherwise.
  const inkIsDark = paint.kind === 'color' || paint.background === 'light'
  const ink = (row: number, col: number) => dark(row, col) === inkIsDark
  const lines: string[] = []
  // An odd last row pairs with a light row: one more line of quiet zone at the bottom.
  for (let row = 0; row < size; row += 2) {
    let line = ''
    for (let col = 0; col < size; col++) {
      const top = ink(row, col)
      const bottom = row + 1 < size ? ink(row + 1, col) : !inkIsDark
      line += top ? (bottom ? '█' : '▀') : bottom ? '▄' : ' '
    }
    lines.push(paint.kind === 'color' ? `\u001b[${paint.sgr}m${line}\u001b[0m` : line)
  }
  return lines.join('\n')
}

/**
 * Renders text as a terminal QR code.
 *
 * @param text - what to encode.
 * @param paint - default: plain characters for a dark background.
 * @returns the QR code as lines of half-block characters (quiet zone included), no final newline.
 */
export function renderQr(text: string, paint: QrPaint = { kind: 'plain', background: 'dark' }): string {
  return drawQr(qrMatrix(text), paint)
}

/**
 * Creates the QR display.
 *
 * @param options - the stream, environment and theme.
 * @returns a {@link LoginDisplay}; `end` and `close` write nothing.
 */
export function createQrDisplay(options: QrDisplayOptions): LoginDisplay {
  return {
    name: 'qr',
    show(flow) {
      const uri = qrTarget(flow)
      if (!uri) {
        options.onWarning?.('not drawing a QR code of a verification URI that is not https')
        return
      }
      const paint = qrPaint(options.stream, options.env ?? process.env, options.theme)
      // One write of whole lines: nothing else can land inside the code.
      options.stream.write(`${renderQr(uri, paint)}\n`)
    },
    end() {},
    close() {},
  }
}
