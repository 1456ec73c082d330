import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, mock, test } from 'node:test'
import {
  createConsoleDisplay,
  formatDuration,
  printable,
  type TextStream,
} from '../../src/display/console.js'
import type { DisplayFlow } from '../../src/display/types.js'

// biome-ignore lint/suspicious/noControlCharactersInRegex: looking for ANSI escapes is the point
const ANSI = /\u001b\[/
const ESC = String.fromCharCode(27)
const BOLD_CODE = `${ESC}[1mWDJB-MJHT${ESC}[0m`

function capture(tty: boolean, columns = 80): { stream: TextStream; text: () => string } {
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean; columns?: number }
  if (tty) {
    stream.isTTY = true
    stream.columns = columns
  }
  let out = ''
  stream.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8')
  })
  return { stream, text: () => out }
}

const T0 = Date.parse('2026-11-25T10:00:00Z')
const flow: DisplayFlow = {
  userCode: 'WDJB-MJHT',
  verificationUri: 'https://idp.example.com/device',
  verificationUriComplete: 'https://idp.example.com/device?user_code=WDJB-MJHT',
  expiresAt: T0 + 15 * 60_000,
}

describe('console display', () => {
  test('RFC 8628 §3.3.1 the user code is always shown as text (piped: URL, code, time left; no ANSI, no countdown)', () => {
    const { stream, text } = capture(false)
    const display = createConsoleDisplay({ stream, now: () => T0, env: {} })
    display.show(flow)
    display.end('approved', { username: 'alice@example.com' })
    display.close()
    const out = text()
    assert.match(out, /open https:\/\/idp\.example\.com\/device and enter the code:/)
    assert.match(out, /^ {4}WDJB-MJHT$/m)
    assert.match(out, /expires in 15 minutes \(2026-11-25T10:15:00Z\)/)
    assert.match(out, /Signed in as alice@example\.com\.\n$/)
    assert.doesNotMatch(out, ANSI)
    assert.doesNotMatch(out, /\r/)
    assert.doesNotMatch(out, /Waiting/)
  })

  test("RFC 8628 §3.3.1 the user code is always shown as text: the IdP's message, plus the code when it lacks it", () => {
    const a = capture(false)
    createConsoleDisplay({ stream: a.stream, now: () => T0, env: {} }).show({
      ...flow,
      message:
        'To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code WDJB-MJHT to authenticate.',
    })
    assert.match(a.text(), /^To sign in, use a web browser .* WDJB-MJHT to authenticate\.$/m)
    assert.doesNotMatch(a.text(), /^Code:/m)
    assert.doesNotMatch(a.text(), /enter the code:$/m)

    const b = capture(false)
    createConsoleDisplay({ stream: b.stream, now: () => T0, env: {} }).show({
      ...flow,
      message: 'Open the page on your phone.',
    })
    assert.match(b.text(), /^Open the page on your phone\.$/m)
    assert.match(b.text(), /^Code: WDJB-MJHT$/m)
  })

  test('control characters from the server are neutralised', () => {
    const { stream, text } = capture(true)
    const display = createConsoleDisplay({ stream, now: () => T0, env: { NO_COLOR: '1' } })
    display.show({ ...flow, message: 'Hello\u001b[2J\u001b[31mred\u0007 WDJB-MJHT' })
    display.close()
    assert.doesNotMatch(text(), ANSI)
    assert.ok(!text().includes(String.fromCharCode(7)), 'no BEL')
    assert.equal(printable('a\u001b[2Jb\nc'), 'a [2Jb c')
  })

  test('TTY: bold code unless NO_COLOR, and a countdown updated in place at most once a second', (t) => {
    mock.timers.enable({ apis: ['setInterval'] })
    t.after(() => mock.timers.reset())
    let now = T0
    const { stream, text } = capture(true, 60)
    const display = createConsoleDisplay({ stream, now: () => now, env: {} })
    display.show(flow)
    assert.ok(text().includes(BOLD_CODE), 'the code is bold on a TTY')
    display.waiting?.()
    assert.match(text(), /\rWaiting for approval\.\.\. 15:00 left$/)
    now += 1000
    mock.timers.tick(1000)
    assert.match(text(), /\rWaiting for approval\.\.\. 14:59 left$/)
    // Ticks faster than a second are not possible.
    const before = text().length
    mock.timers.tick(500)
    assert.equal(text().length, before)
    now += 60_000
    mock.timers.tick(1000)
    assert.match(text(), /13:59 left$/)
    assert.equal(text().split('\n').length, 6, 'the countdown adds no new lines')
    display.end('denied')
    assert.match(text(), /\r {30,}\rSign-in was denied\.\n$/)
    // After the end, the timer is gone: no more output.
    const after = text().length
    mock.timers.tick(5000)
    assert.equal(text().length, after)
    display.close()
  })

  test('issue 11: a warning while the countdown runs gets a line of its own; the countdown is drawn again below', (t) => {
    mock.timers.enable({ apis: ['setInterval'] })
    t.after(() => mock.timers.reset())
    const { stream, text } = capture(true, 60)
    const display = createConsoleDisplay({ stream, now: () => T0, env: {} })
    display.show(flow)
    display.waiting?.()
    // The other output shares the terminal (stderr); here it is the same stream.
    display.interject(() => stream.write('edgetoken: warning: the MQTT broker is unreachable\n'))
    // What a terminal shows: each \r returns to the line's start, and later characters overwrite.
    const screen = text()
      .split('\n')
      .map((line) => {
        const cells: string[] = []
        let x = 0
        for (const ch of line) {
          if (ch === '\r') x = 0
          else cells[x++] = ch
        }
        return cells.join('').trimEnd()
      })
    assert.deepEqual(screen.slice(-2), [
      'edgetoken: warning: the MQTT broker is unreachable',
      'Waiting for approval... 15:00 left',
    ])
    display.end('approved')
    // Without a live line (piped, or after the end) other output just passes.
    const after = text().length
    display.interject(() => stream.write('x\n'))
    assert.equal(text().slice(after), 'x\n')
    display.close()
  })

  test('TTY with NO_COLOR: no bold, countdown still shown; a narrow terminal gets a truncated line', (t) => {
    mock.timers.enable({ apis: ['setInterval'] })
    t.after(() => mock.timers.reset())
    const { stream, text } = capture(true, 22)
    const display = createConsoleDisplay({ stream, now: () => T0, env: { NO_COLOR: '1' } })
    display.show(flow)
    display.waiting?.()
    display.close()
    assert.ok(!text().includes(`${ESC}[1m`), 'no bold with NO_COLOR')
    assert.match(text(), /\rWaiting for approval/)
    const countdown = text().split('\r')[1] ?? ''
    assert.ok(countdown.length <= 21, countdown)
  })

  test('issue 11 #1: the countdown starts only when waiting begins, never inside show, and is wiped at the end', (t) => {
    mock.timers.enable({ apis: ['setInterval'] })
    t.after(() => mock.timers.reset())
    const { stream, text } = capture(true, 80)
    const display = createConsoleDisplay({ stream, now: () => T0, env: {} })
    display.show(flow)
    // Another display (the QR code) writes whole lines here: the console's output so far ends a line.
    assert.match(text(), /\n$/)
    mock.timers.tick(5000)
    assert.doesNotMatch(text(), /Waiting/, 'no countdown before waiting()')
    display.waiting?.()
    display.waiting?.()
    assert.equal(text().match(/Waiting/g)?.length, 1, 'waiting() twice starts one countdown')
    display.end('approved')
    display.waiting?.()
    assert.match(text(), /\r {30,}\rSigned in\.\n$/, 'no countdown after the end')
    display.close()
  })

  test('piped: waiting() writes nothing', () => {
    const { stream, text } = capture(false)
    const display = createConsoleDisplay({ stream, now: () => T0, env: {} })
    display.show(flow)
    const before = text()
    display.waiting?.()
    display.close()
    assert.equal(text(), before)
  })

  test('end states', () => {
    const texts: Record<string, RegExp> = {
      approved: /^Signed in\.$/m,
      denied: /^Sign-in was denied \(access_denied\)\.$/m,
      expired: /^The code expired before sign-in completed\. Run 'edgetoken login' again\.$/m,
      cancelled: /^Sign-in cancelled\.$/m,
      failed: /^Sign-in failed \(the token store cannot be written\)\.$/m,
    }
    const reasons: Record<string, string> = {
      denied: 'access_denied',
      failed: 'the token store cannot be written',
    }
    for (const [state, re] of Object.entries(texts)) {
      const { stream, text } = capture(false)
      const display = createConsoleDisplay({ stream, now: () => T0, env: {} })
      const reason = reasons[state]
      display.end(state as 'approved', reason === undefined ? undefined : { reason })
      assert.match(text(), re)
    }
  })

  test('formatDuration', () => {
    assert.equal(formatDuration(0), '0:00')
    assert.equal(formatDuration(-5000), '0:00')
    assert.equal(formatDuration(59_001), '1:00')
    assert.equal(formatDuration(905_000), '15:05')
    assert.equal(formatDuration(3_723_000), '1:02:03')
  })
})
