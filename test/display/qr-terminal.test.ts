/**
 * Issue 11, "What a person sees": the QR code `edgetoken login` draws must scan off a real
 * terminal. The CLI runs on a real pseudo-terminal (tmux, or util-linux `script`) against the test
 * IdP; the captured screen is painted as a dark and as a light terminal theme would paint it, and
 * jsQR (accepting dark-on-light codes only, as phone cameras do) must read
 * `verification_uri_complete` off it. The countdown must be one live line below the code.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { cliCommand, cliEnv, newTestDevice } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import {
  installed,
  type PtyRun,
  shellQuote,
  startScript,
  startTmux,
  waitForScreen,
} from '../support/qr-pty.js'
import { DARK_THEME, decodeScreen, LIGHT_THEME, type Screen, screenText } from '../support/qr-screen.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-qr-terminal-'))
after(() => rmSync(root, { recursive: true, force: true }))

const COUNTDOWN = /Waiting for approval\.\.\. \d+:\d\d left/
const BLOCKS = /[█▀▄]/

function loginCommand(args: readonly string[]): string {
  return [...cliCommand(), 'login', ...args].map(shellQuote).join(' ')
}

/** The CLI's environment: a fresh device, no colour or theme hints from the developer's terminal. */
function ptyEnv(issuer: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cliEnv({
    env: {
      ...newTestDevice(root, { issuer }).env,
      NO_COLOR: undefined,
      COLORTERM: undefined,
      COLORFGBG: undefined,
      FORCE_COLOR: undefined,
      TMUX: undefined,
      ...extra,
    },
  })
}

function waitingScreen(run: PtyRun): Promise<Screen> {
  return waitForScreen(run, 'the countdown', (s) => screenText(s).some((line) => COUNTDOWN.test(line)))
}

/** The countdown is exactly one line, below the whole QR code, and nothing else shares it. */
function assertOneLiveCountdown(screen: Screen) {
  const lines = screenText(screen)
  const countdown = lines.flatMap((line, i) => (/ left\b/.test(line) ? [i] : []))
  assert.equal(countdown.length, 1, `one countdown line, not a frozen one above it:\n${lines.join('\n')}`)
  const at = countdown[0] as number
  assert.match(
    lines[at] as string,
    /^Waiting for approval\.\.\. \d+:\d\d left$/,
    'the countdown line is its own',
  )
  const lastQrLine = lines.findLastIndex((line) => BLOCKS.test(line))
  assert.ok(lastQrLine >= 0 && lastQrLine < at, 'the QR code is drawn above the countdown')
  assert.ok(
    lines.slice(at + 1).every((line) => line === ''),
    'the countdown is the last line written',
  )
}

describe('issue 11 #1: the terminal QR code scans on a real pseudo-terminal', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1 })
  })
  after(() => idp.close())

  test('RFC 8628 §3.3.1 default displays on a colour TTY (tmux): verification_uri_complete decodes on a dark and a light theme; one live countdown, gone after approval', {
    skip: installed('tmux') ? false : 'tmux is not installed',
  }, async () => {
    const run = startTmux(loginCommand([]), ptyEnv(idp.issuer))
    try {
      const screen = await waitingScreen(run)
      const userCode = idp.issued.userCodes.at(-1) as string
      assert.ok(
        screenText(screen).some((line) => line.trim() === userCode),
        'the user code is on screen as text',
      )
      // oidc-provider's verification_uri_complete (the --json run below checks it against the event).
      const expected = `${idp.issuer}/device?user_code=${userCode}`
      assert.equal(decodeScreen(screen, DARK_THEME), expected, 'decodes on a dark theme')
      assert.equal(decodeScreen(screen, LIGHT_THEME), expected, 'decodes on a light theme')
      assertOneLiveCountdown(screen)

      await approveDevice(idp.issuer, userCode)
      assert.equal(await run.exited(), 0)
      const end = screenText(run.screen())
      assert.ok(
        end.some((line) => /^Signed in/.test(line)),
        end.join('\n'),
      )
      assert.ok(!end.some((line) => / left\b/.test(line)), `no countdown line remains:\n${end.join('\n')}`)
    } finally {
      run.close()
    }
  })

  test('RFC 8628 §3.3.1 --json with NO_COLOR and --qr-theme light (tmux, displays on stderr): the code decodes on a light theme; Ctrl-C clears the countdown', {
    skip: installed('tmux') ? false : 'tmux is not installed',
  }, async () => {
    const events = join(root, `events-${Date.now()}.ndjson`)
    const command = `${loginCommand(['--json', '--qr-theme', 'light'])} > ${shellQuote(events)}`
    const run = startTmux(command, ptyEnv(idp.issuer, { NO_COLOR: '1' }))
    try {
      const screen = await waitingScreen(run)
      const first = JSON.parse(readFileSync(events, 'utf8').split('\n')[0] as string) as Record<
        string,
        unknown
      >
      assert.equal(first.event, 'device_code')
      assert.equal(typeof first.verification_uri_complete, 'string')
      assert.equal(decodeScreen(screen, LIGHT_THEME), first.verification_uri_complete)
      // Plain characters for a light background: on a dark one the code is inverted.
      assert.equal(decodeScreen(screen, DARK_THEME), undefined)
      assert.ok(!screen.rows.flat().some((c) => c.fg !== 'default-fg' || c.bg !== 'default-bg'), 'no colours')
      assertOneLiveCountdown(screen)

      run.keys('C-c')
      assert.equal(await run.exited(), 4)
      const end = screenText(run.screen())
      // The terminal's own echo of Ctrl-C may stay after the wiped countdown.
      assert.ok(
        end.some((line) => /^Sign-in cancelled\.( *\^C)?$/.test(line)),
        end.join('\n'),
      )
      assert.ok(!end.some((line) => / left\b/.test(line)), `no countdown line remains:\n${end.join('\n')}`)
    } finally {
      run.close()
    }
  })

  test('RFC 8628 §3.3.1 NO_COLOR under util-linux script: plain characters for a dark background decode on a dark theme', {
    skip: installed('script') ? false : 'util-linux script is not installed',
  }, async () => {
    const run = startScript(loginCommand([]), ptyEnv(idp.issuer, { NO_COLOR: '1', TERM: 'xterm-256color' }))
    try {
      const screen = await waitingScreen(run)
      const userCode = idp.issued.userCodes.at(-1) as string
      assert.equal(decodeScreen(screen, DARK_THEME), `${idp.issuer}/device?user_code=${userCode}`)
      assertOneLiveCountdown(screen)
      run.keys('\u0003')
      assert.equal(await run.exited(), 4)
      const end = screenText(run.screen())
      // The terminal's own echo of Ctrl-C may stay after the wiped countdown.
      assert.ok(
        end.some((line) => /^Sign-in cancelled\.( *\^C)?$/.test(line)),
        end.join('\n'),
      )
      assert.ok(!end.some((line) => / left\b/.test(line)), `no countdown line remains:\n${end.join('\n')}`)
    } finally {
      run.close()
    }
  })
})
