import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, test } from 'node:test'
import type { TextStream } from '../../src/display/console.js'
import {
  createQrDisplay,
  drawQr,
  type QrPaint,
  qrMatrix,
  qrPaint,
  qrTarget,
  renderQr,
} from '../../src/display/qr.js'
import type { DisplayFlow } from '../../src/display/types.js'
import {
  DARK_THEME,
  decodeScreen,
  LIGHT_THEME,
  parseScreen,
  screenModules,
  type Theme,
} from '../support/qr-screen.js'

// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for ANSI escapes is the point
const ANSI = /\u001b\[/
const ESC = String.fromCharCode(27)
/** ISO/IEC 18004's quiet zone, in modules: written out here, not taken from the code under test. */
const QUIET = 4

const base: DisplayFlow = {
  userCode: 'WDJB-MJHT',
  verificationUri: 'https://idp.example.com/device',
  expiresAt: Date.now() + 600_000,
}

const COMPLETE = 'https://idp.example.com/device?user_code=WDJB-MJHT'

/**
 * The QR code of {@link COMPLETE} as drawn for a pipe (plain characters for a dark background),
 * rendered once and committed: the display's output is compared with this, not with the renderer
 * it calls. The 29x29 modules are qrcode-terminal 0.12's (level L); around them, 4 light modules.
 */
const COMPLETE_QR = [
  '█████████████████████████████████████',
  '█████████████████████████████████████',
  '████ ▄▄▄▄▄ █▄▀▀▀▄▀▀█   ▄▄█ ▄▄▄▄▄ ████',
  '████ █   █ █   █▄  ▄▀▀ ▀▄█ █   █ ████',
  '████ █▄▄▄█ █▄█▀▄▄▄ █ ▀▀ ▀█ █▄▄▄█ ████',
  '████▄▄▄▄▄▄▄█▄█ ▀▄█▄▀▄▀ ▀ █▄▄▄▄▄▄▄████',
  '████ ▄  ▀█▄█▄█ ▄██▄█▀▄  ▀ ▀▀ ▄▄█ ████',
  '████▀ ▄▄▄▀▄█▀   █▀██▄▄▄█  ▀  █▄▄▀████',
  '████ ▀█ ▄ ▄ ▀▄▄  ▄  ▀ █ ▀▀▀▀█▄ ▀▀████',
  '████▄██▄ █▄ ▀▀▄█▄▄ ███▄▄ ▀██▀█▄ ▄████',
  '████▄▀▄  █▄██ ▄█▀▄ ▀▄█ █ ▄█▀▄ ▀ █████',
  '████▄█ ▄█▀▄█▄▄ ▀▀█▄▄  ███ ██▄█ ██████',
  '█████▄▄▄▄█▄▄▀▄█ ▀▄ █▀  █ ▄▄▄   ▀▀████',
  '████ ▄▄▄▄▄ ███▀ █ ▀▀▄▄▀▄ █▄█  █▄█████',
  '████ █   █ █▀ ▄▀ █ ▀▄ ██  ▄  ▀▄ ▀████',
  '████ █▄▄▄█ █ █ ▀▀▄▄▀▀▄█ ▀█▀ ▀▀▄▀▄████',
  '████▄▄▄▄▄▄▄█▄▄████████▄▄▄▄█▄▄██▄█████',
  '█████████████████████████████████████',
  '█████████████████████████████████████',
].join('\n')

function capture() {
  const stream = new PassThrough()
  let out = ''
  stream.on('data', (c: Buffer) => {
    out += c.toString('utf8')
  })
  return { stream, text: () => out }
}

describe('QR display', () => {
  test('RFC 8628 §3.3.1: the complete URI when present, else the verification URI', () => {
    assert.equal(
      qrTarget({ ...base, verificationUriComplete: 'https://idp.example.com/device?user_code=WDJB-MJHT' }),
      'https://idp.example.com/device?user_code=WDJB-MJHT',
    )
    assert.equal(qrTarget(base), 'https://idp.example.com/device')
    assert.equal(
      qrTarget({ ...base, verificationUri: 'http://127.0.0.1:4000/device' }),
      'http://127.0.0.1:4000/device',
    )
  })

  test('never a non-https URI', () => {
    assert.equal(qrTarget({ ...base, verificationUri: 'http://evil.example.com/device' }), undefined)
    assert.equal(qrTarget({ ...base, verificationUriComplete: 'javascript:alert(1)' }), undefined)
  })

  test('RFC 8628 §3.3.1: draws the QR code of verification_uri_complete (fixed fixture; piped: plain, no ANSI)', async () => {
    const { stream, text } = capture()
    const display = createQrDisplay({ stream, env: {} })
    await display.show({ ...base, verificationUriComplete: COMPLETE })
    assert.equal(text(), `${COMPLETE_QR}\n`)
    assert.doesNotMatch(text(), ANSI)
  })

  test('renderQr gives the committed fixture for the fixed URL, and another code for another URL', () => {
    assert.equal(renderQr(COMPLETE), COMPLETE_QR)
    assert.notEqual(renderQr(base.verificationUri), COMPLETE_QR)
  })

  const renderings: [string, QrPaint, Theme][] = [
    ['plain for a dark background, on a dark theme', { kind: 'plain', background: 'dark' }, DARK_THEME],
    ['plain for a light background, on a light theme', { kind: 'plain', background: 'light' }, LIGHT_THEME],
    ['8 colours, on a dark theme', { kind: 'color', sgr: '30;47' }, DARK_THEME],
    ['8 colours, on a light theme', { kind: 'color', sgr: '30;47' }, LIGHT_THEME],
    ['256 colours, on a dark theme', { kind: 'color', sgr: '38;5;232;48;5;231' }, DARK_THEME],
    ['24-bit colour, on a light theme', { kind: 'color', sgr: '38;2;0;0;0;48;2;255;255;255' }, LIGHT_THEME],
  ]
  for (const [name, paint, theme] of renderings) {
    test(`issue 11 #1: a quiet zone of ${QUIET} light modules on every side, dark modules on light (${name})`, () => {
      const matrix = qrMatrix(COMPLETE)
      const n = matrix.length
      const size = n + 2 * QUIET
      const text = drawQr(matrix, paint)
      assert.equal(text.split('\n').length, Math.ceil(size / 2), 'two modules per line')
      const seen = screenModules(parseScreen(text, size), theme)
      for (let row = 0; row < size; row++) {
        for (let col = 0; col < size; col++) {
          const inside = Math.min(row, col) >= QUIET && Math.max(row, col) < n + QUIET
          const expected = inside ? matrix[row - QUIET]?.[col - QUIET] : false
          assert.equal(seen[row]?.[col], expected, `module ${row},${col}`)
        }
      }
      assert.equal(decodeScreen(parseScreen(text, size), theme), COMPLETE)
    })
  }

  test('issue 11 #1: with colours, every line sets black on white and resets it, so nothing bleeds', () => {
    const lines = drawQr(qrMatrix(COMPLETE), { kind: 'color', sgr: '30;47' }).split('\n')
    const [on, off] = [`${ESC}[30;47m`, `${ESC}[0m`]
    for (const line of lines) {
      assert.ok(line.startsWith(on) && line.endsWith(off), JSON.stringify(line))
      assert.match(line.slice(on.length, -off.length), /^[ ▀▄█]{37}$/)
    }
  })

  test('issue 11 #1: auto paints black on white on a colour TTY (any theme), plain characters otherwise', () => {
    const tty = { isTTY: true } as TextStream
    const pipe = {} as TextStream
    assert.deepEqual(qrPaint(tty, { TERM: 'xterm' }), { kind: 'color', sgr: '30;47' })
    assert.deepEqual(qrPaint(tty, { TERM: 'xterm-256color' }), { kind: 'color', sgr: '38;5;232;48;5;231' })
    assert.deepEqual(qrPaint(tty, { TERM: 'xterm-256color', COLORTERM: 'truecolor' }), {
      kind: 'color',
      sgr: '38;2;0;0;0;48;2;255;255;255',
    })
    // No colour: NO_COLOR, TERM=dumb, a pipe. Dark unless COLORFGBG says the background is light.
    assert.deepEqual(qrPaint(tty, { NO_COLOR: '1' }), { kind: 'plain', background: 'dark' })
    assert.deepEqual(qrPaint(tty, { TERM: 'dumb' }), { kind: 'plain', background: 'dark' })
    assert.deepEqual(qrPaint(pipe, {}), { kind: 'plain', background: 'dark' })
    assert.deepEqual(qrPaint(pipe, { COLORFGBG: '0;15' }), { kind: 'plain', background: 'light' })
    assert.deepEqual(qrPaint(pipe, { COLORFGBG: '0;default;7' }), { kind: 'plain', background: 'light' })
    assert.deepEqual(qrPaint(pipe, { COLORFGBG: '15;0' }), { kind: 'plain', background: 'dark' })
    assert.deepEqual(qrPaint(pipe, { COLORFGBG: 'junk' }), { kind: 'plain', background: 'dark' })
    // The option: plain characters for that background, even on a colour TTY.
    assert.deepEqual(qrPaint(tty, { TERM: 'xterm' }, 'light'), { kind: 'plain', background: 'light' })
    assert.deepEqual(qrPaint(pipe, { COLORFGBG: '0;15' }, 'dark'), { kind: 'plain', background: 'dark' })
  })

  test('issue 11 #1: the display paints for its stream, environment and theme', async () => {
    const tty = capture()
    Object.assign(tty.stream, { isTTY: true })
    await createQrDisplay({ stream: tty.stream, env: { TERM: 'xterm' } }).show({
      ...base,
      verificationUriComplete: COMPLETE,
    })
    assert.ok(tty.text().startsWith(`${ESC}[30;47m`))
    const light = capture()
    Object.assign(light.stream, { isTTY: true })
    await createQrDisplay({ stream: light.stream, env: { TERM: 'xterm' }, theme: 'light' }).show({
      ...base,
      verificationUriComplete: COMPLETE,
    })
    assert.doesNotMatch(light.text(), ANSI)
    assert.equal(decodeScreen(parseScreen(light.text(), 80), LIGHT_THEME), COMPLETE)
  })

  test('an insecure URI is not drawn, with a warning', async () => {
    const { stream, text } = capture()
    const warnings: string[] = []
    const display = createQrDisplay({ stream, onWarning: (w) => warnings.push(w) })
    await display.show({ ...base, verificationUri: 'http://evil.example.com/device' })
    assert.equal(text(), '')
    assert.equal(warnings.length, 1)
  })
})
