/**
 * What a person sees on a terminal, as pixels, so a QR decoder can try to read it.
 *
 * {@link parseScreen} is a small terminal emulator: it takes what a program wrote to a pty (via
 * util-linux `script`) or what `tmux capture-pane -p -e` printed, and keeps a grid of cells with
 * their character and colours (`\r`, `\n`, `\b`, auto-wrap at the right margin, SGR colours in
 * 8/16/256/24-bit, reverse video, erase in line; other escape sequences are skipped).
 * {@link screenBitmap} paints the grid the way a terminal with a given theme would: half blocks
 * (`▀ ▄ █`) fill their halves with the foreground colour, a space is all background, any other
 * character is a foreground blob in the middle of its cell (text is noise around the code, as on
 * a real screen). Cells are twice as tall as wide, like a terminal font.
 */
import jsQRModule from 'jsqr'

/** An RGB colour. */
export type Rgb = readonly [number, number, number]

/** A cell's colour: RGB, or the theme's default foreground or background. */
export type Color = Rgb | 'default-fg' | 'default-bg'

/** One character cell. */
export interface Cell {
  ch: string
  fg: Color
  bg: Color
}

const BLANK: Cell = Object.freeze({ ch: ' ', fg: 'default-fg', bg: 'default-bg' })

/** A screen's cells, row by row (rows may be shorter than `cols`: the rest is blank). */
export interface Screen {
  cols: number
  rows: Cell[][]
}

/** A terminal theme: its default colours. */
export interface Theme {
  name: string
  fg: Rgb
  bg: Rgb
}

/** Light text on a dark background (most terminals' default). */
export const DARK_THEME: Theme = { name: 'dark', fg: [0xd0, 0xd0, 0xd0], bg: [0x1e, 0x1e, 0x1e] }
/** Dark text on a light background. */
export const LIGHT_THEME: Theme = { name: 'light', fg: [0x20, 0x20, 0x20], bg: [0xfa, 0xfa, 0xfa] }

// xterm's 16 basic colours.
const BASIC: Rgb[] = [
  [0, 0, 0],
  [205, 0, 0],
  [0, 205, 0],
  [205, 205, 0],
  [0, 0, 238],
  [205, 0, 205],
  [0, 205, 205],
  [229, 229, 229],
  [127, 127, 127],
  [255, 0, 0],
  [0, 255, 0],
  [255, 255, 0],
  [92, 92, 255],
  [255, 0, 255],
  [0, 255, 255],
  [255, 255, 255],
]

/**
 * A colour of the xterm 256-colour palette.
 *
 * @param n - 0..255.
 * @returns its RGB.
 */
export function xterm256(n: number): Rgb {
  if (n < 16) return BASIC[n] ?? [0, 0, 0]
  if (n < 232) {
    const level = (v: number) => (v === 0 ? 0 : 55 + v * 40)
    const i = n - 16
    return [level(Math.floor(i / 36)), level(Math.floor(i / 6) % 6), level(i % 6)]
  }
  const grey = 8 + (n - 232) * 10
  return [grey, grey, grey]
}

/**
 * Interprets terminal output into cells.
 *
 * @param text - raw pty output or a `capture-pane -e` dump.
 * @param cols - the terminal's width.
 * @returns the screen.
 */
export function parseScreen(text: string, cols: number): Screen {
  const rows: Cell[][] = [[]]
  let row = 0
  let col = 0
  let pendingWrap = false
  let fg: Color = 'default-fg'
  let bg: Color = 'default-bg'
  let reverse = false
  const line = () => {
    while (rows.length <= row) rows.push([])
    return rows[row] as Cell[]
  }
  const newline = () => {
    row++
    col = 0
    pendingWrap = false
    line()
  }
  const sgr = (params: number[]) => {
    if (params.length === 0) params = [0]
    for (let i = 0; i < params.length; i++) {
      const p = params[i] as number
      if (p === 0) {
        fg = 'default-fg'
        bg = 'default-bg'
        reverse = false
      } else if (p === 7) reverse = true
      else if (p === 27) reverse = false
      else if (p >= 30 && p <= 37) fg = xterm256(p - 30)
      else if (p >= 90 && p <= 97) fg = xterm256(p - 90 + 8)
      else if (p === 39) fg = 'default-fg'
      else if (p >= 40 && p <= 47) bg = xterm256(p - 40)
      else if (p >= 100 && p <= 107) bg = xterm256(p - 100 + 8)
      else if (p === 49) bg = 'default-bg'
      else if (p === 38 || p === 48) {
        let color: Color = p === 38 ? 'default-fg' : 'default-bg'
        if (params[i + 1] === 5) {
          color = xterm256(params[i + 2] ?? 0)
          i += 2
        } else if (params[i + 1] === 2) {
          color = [params[i + 2] ?? 0, params[i + 3] ?? 0, params[i + 4] ?? 0]
          i += 4
        }
        if (p === 38) fg = color
        else bg = color
      }
    }
  }
  const chars = [...text]
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string
    if (ch === '\u001b') {
      const next = chars[i + 1]
      if (next === '[') {
        let j = i + 2
        let body = ''
        while (j < chars.length && !/[@-~]/.test(chars[j] as string)) body += chars[j++]
        const final = chars[j]
        i = j
        if (final === 'm' && !/^[?>=]/.test(body)) {
          sgr(body === '' ? [] : body.split(/[;:]/).map((s) => (s === '' ? 0 : Number(s))))
        } else if (final === 'K') {
          const cells = line()
          const mode = Number(body || '0')
          if (mode === 0) cells.length = Math.min(cells.length, col)
          else if (mode === 2) cells.length = 0
          else for (let c = 0; c <= col && c < cells.length; c++) cells[c] = BLANK
        }
      } else if (next === ']') {
        // OSC: up to BEL or ST.
        let j = i + 2
        while (j < chars.length && chars[j] !== '\u0007' && !(chars[j] === '\u001b' && chars[j + 1] === '\\'))
          j++
        i = chars[j] === '\u0007' ? j : j + 1
      } else {
        i++
      }
      continue
    }
    if (ch === '\r') {
      col = 0
      pendingWrap = false
      continue
    }
    if (ch === '\n') {
      // Also back to column 0: a pty's onlcr sends CR LF for it, and capture-pane ends lines with it.
      newline()
      continue
    }
    if (ch === '\b') {
      col = Math.max(0, col - 1)
      pendingWrap = false
      continue
    }
    if (ch < ' ' || ch === '\u007f') continue
    // xterm's deferred wrap: a character in the last column leaves the cursor there until the next one.
    if (pendingWrap) newline()
    const cells = line()
    while (cells.length < col) cells.push(BLANK)
    cells[col] = reverse ? { ch, fg: bg, bg: fg } : { ch, fg, bg }
    if (col === cols - 1) pendingWrap = true
    else col++
  }
  return { cols, rows }
}

/**
 * The screen's text, one string per row, trailing spaces removed.
 *
 * @param screen - from {@link parseScreen}.
 * @returns the lines.
 */
export function screenText(screen: Screen): string[] {
  return screen.rows.map((cells) =>
    cells
      .map((c) => c.ch)
      .join('')
      .trimEnd(),
  )
}

/** An RGBA image. */
export interface Bitmap {
  data: Uint8ClampedArray
  width: number
  height: number
}

/**
 * Paints a screen as a terminal with a theme would.
 *
 * @param screen - from {@link parseScreen}.
 * @param theme - default colours.
 * @param scale - pixels per cell across (a cell is `2 * scale` tall). Default 4.
 * @returns the image, with a margin of 2 blank cells around the screen.
 */
export function screenBitmap(screen: Screen, theme: Theme, scale = 4): Bitmap {
  const margin = 2
  const width = (screen.cols + 2 * margin) * scale
  const height = (screen.rows.length + 2 * margin) * 2 * scale
  const data = new Uint8ClampedArray(width * height * 4)
  const paint = (x0: number, y0: number, w: number, h: number, [r, g, b]: Rgb) => {
    for (let y = y0; y < y0 + h; y++) {
      for (let x = x0; x < x0 + w; x++) {
        const o = (y * width + x) * 4
        data[o] = r
        data[o + 1] = g
        data[o + 2] = b
        data[o + 3] = 255
      }
    }
  }
  paint(0, 0, width, height, theme.bg)
  const resolve = (c: Color): Rgb => (c === 'default-fg' ? theme.fg : c === 'default-bg' ? theme.bg : c)
  screen.rows.forEach((cells, r) => {
    cells.forEach((cell, c) => {
      const fg = resolve(cell.fg)
      const bg = resolve(cell.bg)
      const x = (c + margin) * scale
      const y = (r + margin) * 2 * scale
      const [top, bottom] =
        cell.ch === '█' ? [fg, fg] : cell.ch === '▀' ? [fg, bg] : cell.ch === '▄' ? [bg, fg] : [bg, bg]
      paint(x, y, scale, scale, top)
      paint(x, y + scale, scale, scale, bottom)
      if (scale >= 3 && !' █▀▄'.includes(cell.ch)) paint(x + 1, y + 2, scale - 2, 2 * scale - 4, fg)
    })
  })
  return { data, width, height }
}

/**
 * Reads a QR code off a screen as a phone would: dark modules on light only (no inverted codes).
 *
 * @param screen - from {@link parseScreen}.
 * @param theme - the terminal's theme.
 * @returns the decoded text, or undefined when no code could be read.
 */
export function decodeScreen(screen: Screen, theme: Theme): string | undefined {
  const { data, width, height } = screenBitmap(screen, theme)
  const jsQR = jsQRModule.default
  return jsQR(data, width, height, { inversionAttempts: 'dontInvert' })?.data
}

/**
 * The modules of a screen at one pixel per module (a cell is one module across, two down), read
 * as dark (`true`) when darker than mid-grey.
 *
 * @param screen - from {@link parseScreen}.
 * @param theme - the terminal's theme.
 * @returns rows of modules, without the bitmap's margin.
 */
export function screenModules(screen: Screen, theme: Theme): boolean[][] {
  const { data, width, height } = screenBitmap(screen, theme, 1)
  const out: boolean[][] = []
  for (let y = 4; y < height - 4; y++) {
    const row: boolean[] = []
    for (let x = 2; x < width - 2; x++) {
      const o = (y * width + x) * 4
      const luma = 0.299 * (data[o] ?? 0) + 0.587 * (data[o + 1] ?? 0) + 0.114 * (data[o + 2] ?? 0)
      row.push(luma < 128)
    }
    out.push(row)
  }
  return out
}
