/**
 * Issue 11 #1 without a pty: the console and QR displays share one terminal stream through the
 * fan-out, and the console's live countdown line must start only after the QR code is drawn.
 */
import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, mock, test } from 'node:test'
import { setImmediate as tick } from 'node:timers/promises'
import { createConsoleDisplay, type TextStream } from '../../src/display/console.js'
import { createQrDisplay } from '../../src/display/qr.js'
import { type DisplayFlow, fanOut, type LoginDisplay } from '../../src/display/types.js'
import { DARK_THEME, decodeScreen, LIGHT_THEME, parseScreen, screenText } from '../support/qr-screen.js'

const T0 = Date.parse('2026-11-25T10:00:00Z')
const COMPLETE = 'https://idp.example.com/device?user_code=WDJB-MJHT'
const flow: DisplayFlow = {
  userCode: 'WDJB-MJHT',
  verificationUri: 'https://idp.example.com/device',
  verificationUriComplete: COMPLETE,
  expiresAt: T0 + 10 * 60_000,
}

function terminal(columns = 120): { stream: TextStream; text: () => string } {
  const stream = Object.assign(new PassThrough(), { isTTY: true, columns })
  let out = ''
  stream.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8')
  })
  return { stream, text: () => out }
}

/** The QR display as `login` builds it: its module is imported on first show, so it writes later. */
function lazyQr(stream: TextStream): LoginDisplay {
  const qr = createQrDisplay({ stream, env: { TERM: 'xterm-256color' } })
  return {
    name: 'qr',
    async show(f) {
      await tick()
      await qr.show(f)
    },
    end: () => qr.end('approved'),
    close: () => qr.close(),
  }
}

describe('issue 11 #1: no display writes into another display’s line', () => {
  for (const order of ['console,qr', 'qr,console']) {
    test(`${order}: the QR code, then one live countdown line below it; the code decodes on dark and light themes`, async (t) => {
      mock.timers.enable({ apis: ['setInterval'] })
      t.after(() => mock.timers.reset())
      const { stream, text } = terminal()
      const consoleDisplay = createConsoleDisplay({
        stream,
        now: () => T0 + 1000,
        env: { TERM: 'xterm-256color' },
      })
      const displays =
        order === 'console,qr' ? [consoleDisplay, lazyQr(stream)] : [lazyQr(stream), consoleDisplay]
      const fan = fanOut(displays, (w) => assert.fail(w))
      await fan.show(flow)
      mock.timers.tick(1000)
      mock.timers.tick(1000)

      const screen = parseScreen(text(), 120)
      const lines = screenText(screen)
      const countdown = lines.flatMap((line, i) => (/ left\b/.test(line) ? [i] : []))
      assert.equal(countdown.length, 1, lines.join('\n'))
      assert.match(lines[countdown[0] as number] as string, /^Waiting for approval\.\.\. 9:59 left$/)
      assert.ok(lines.findLastIndex((line) => /[█▀▄]/.test(line)) < (countdown[0] as number))
      assert.equal(decodeScreen(screen, DARK_THEME), COMPLETE)
      assert.equal(decodeScreen(screen, LIGHT_THEME), COMPLETE)

      await fan.end('approved')
      await fan.close()
      const end = screenText(parseScreen(text(), 120))
      assert.ok(!end.some((line) => / left\b/.test(line)), 'the countdown line is wiped')
      assert.equal(end.filter((line) => line !== '').at(-1), 'Signed in.')
    })
  }

  test('fanOut calls waiting() once every display has shown, also when one of them failed', async () => {
    const calls: string[] = []
    const display = (name: string, fail = false): LoginDisplay => ({
      name,
      async show() {
        await tick()
        calls.push(`${name}.show`)
        if (fail) throw new Error('broke')
      },
      waiting: () => {
        calls.push(`${name}.waiting`)
      },
      end() {},
      close() {},
    })
    const warnings: string[] = []
    const fan = fanOut([display('console'), display('mqtt', true), display('qr')], (w) => warnings.push(w))
    await fan.show(flow)
    assert.deepEqual(calls.slice(0, 3).sort(), ['console.show', 'mqtt.show', 'qr.show'])
    // The failed display is left out of later calls.
    assert.deepEqual(calls.slice(3), ['console.waiting', 'qr.waiting'])
    assert.deepEqual(warnings, ['mqtt display failed to show the code: broke'])
  })
})
