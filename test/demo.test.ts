/**
 * `npm run demo` end to end, headless: IdP, broker, API, simulators and the agent come up, the
 * sign-in is approved automatically, tokens are renewed, telemetry reaches the API, and the demo
 * stops by itself with exit 0 within a bound. The demo's command line and output shaping are
 * unit-tested below without starting it.
 */
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createActivitySummary, DEMO_USAGE, parseDemoArgs, renewalLine } from './demo-console.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))
const BOUND_MS = 90_000

test('the demo runs headless to completion: signed in, renewed, telemetry received, exit 0', {
  timeout: BOUND_MS + 10_000,
}, async () => {
  const started = Date.now()
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      'test/demo.ts',
      '--auto-approve',
      '--duration-seconds',
      '15',
      // 16 s tokens: the agent renews 4-8 s after it starts, well inside the 15 s.
      '--token-ttl-seconds',
      '16',
      '--sensor-interval-ms',
      '300',
    ],
    { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  child.stderr.on('data', (d) => {
    err += d
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), BOUND_MS)
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(timer)

  assert.equal(code, 0, `demo exit code\nstdout:\n${out.slice(-3000)}\nstderr:\n${err.slice(-2000)}`)
  assert.ok(Date.now() - started < BOUND_MS, 'finished within the bound')
  const match = /^demo: summary (.+)$/m.exec(out)
  assert.ok(match?.[1], `a summary line\n${out.slice(-2000)}`)
  const summary = JSON.parse(match[1]) as {
    signed_in: boolean
    renewals: number
    records_received: number
    agent_exit: number | null
  }
  assert.equal(summary.signed_in, true)
  assert.ok(summary.renewals >= 1, `at least one silent renewal (${summary.renewals})`)
  assert.ok(summary.records_received >= 1, `telemetry reached the API (${summary.records_received})`)
  assert.equal(summary.agent_exit, 0)
  // The code was shown to a person (console) and on the companion display.
  assert.match(out, /enter the code/i)
  assert.match(out, /companion display shows:/)
  assert.match(out, /Signed in/)
  // Issue 11: each renewal stands out; batches are summed up every 10 s, not a line each.
  assert.match(out, /^agent +\| ★ silent renewal #1: new access token, expires \d\d:\d\d:\d\d UTC/m)
  assert.match(out, /^api +\| last \d+ s: \d+ records? in \d+ batch(es)?/m)
  assert.doesNotMatch(out, /received batch|uploaded batch/)
})

/** Runs the demo script with argv; only for command lines that end before anything starts. */
function demoCommand(args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'test/demo.ts', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 30_000,
  })
}

describe('demo command line', () => {
  test('issue 11: --bogus prints one error line and the usage on stderr, exit 2, no stack trace', () => {
    const res = demoCommand(['--bogus'])
    assert.equal(res.status, 2, res.stderr)
    assert.equal(res.stdout, '')
    assert.equal(res.stderr, `demo: unknown option '--bogus'\n${DEMO_USAGE}`)
    assert.doesNotMatch(res.stderr, /^\s+at /m)
  })

  test('issue 11: --help prints the usage on stdout, exit 0', () => {
    const res = demoCommand(['--help'])
    assert.equal(res.status, 0, res.stderr)
    assert.equal(res.stdout, DEMO_USAGE)
    assert.equal(res.stderr, '')
  })

  test('issue 11: missing values, bad numbers and stray arguments are one-line usage errors', () => {
    const cases: [string[], string][] = [
      [['--bogus'], "unknown option '--bogus'"],
      [['-x'], "unknown option '-x'"],
      [['extra'], "unexpected argument 'extra'"],
      [['--duration-seconds'], '--duration-seconds needs a value (a whole number)'],
      [['--duration-seconds', '--auto-approve'], '--duration-seconds needs a value (a whole number)'],
      [['--auto-approve=yes'], '--auto-approve takes no value'],
      [
        ['--token-ttl-seconds', '1.5'],
        "--token-ttl-seconds must be a whole number from 1 to 86400, not '1.5'",
      ],
      [['--token-ttl-seconds=0'], "--token-ttl-seconds must be a whole number from 1 to 86400, not '0'"],
      [
        ['--sensor-interval-ms', '86401'],
        "--sensor-interval-ms must be a whole number from 1 to 86400, not '86401'",
      ],
      [
        ['--duration-seconds', '0x10'],
        "--duration-seconds must be a whole number from 1 to 86400, not '0x10'",
      ],
      [['--duration-seconds='], "--duration-seconds must be a whole number from 1 to 86400, not ''"],
    ]
    for (const [argv, message] of cases) {
      const parsed = parseDemoArgs(argv)
      assert.deepEqual(parsed, { kind: 'error', message }, argv.join(' '))
      assert.doesNotMatch(message, /\n/)
    }
    assert.deepEqual(parseDemoArgs(['--auto-approve', '-h']), { kind: 'help' })
    assert.deepEqual(parseDemoArgs([]), {
      kind: 'run',
      options: {
        autoApprove: false,
        durationSeconds: undefined,
        tokenTtlSeconds: 30,
        sensorIntervalMs: 1000,
      },
    })
    assert.deepEqual(
      parseDemoArgs(['--auto-approve', '--duration-seconds=15', '--token-ttl-seconds', '16']),
      {
        kind: 'run',
        options: { autoApprove: true, durationSeconds: 15, tokenTtlSeconds: 16, sensorIntervalMs: 1000 },
      },
    )
  })
})

describe('demo output', () => {
  test('issue 11: a renewal gets its own line with the new expiry', () => {
    assert.equal(
      renewalLine(
        { event: 'renewed', expires_at: '2026-11-25T10:31:05Z', next_renewal_at: '2026-11-25T10:30:57Z' },
        2,
      ),
      '★ silent renewal #2: new access token, expires 10:31:05 UTC (next renewal 10:30:57 UTC)',
    )
    assert.equal(
      renewalLine({ event: 'renewed', expires_at: 42 }, 1),
      '★ silent renewal #1: new access token, expires ?',
    )
  })

  test('issue 11: batches and renewals are one summary line every 10 s, not a line per batch', (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] })
    let clock = 1_000_000
    const printed: string[] = []
    const summary = createActivitySummary({ print: (line) => printed.push(line), now: () => clock })
    const advance = (ms: number) => {
      clock += ms
      t.mock.timers.tick(ms)
    }
    for (let i = 0; i < 19; i++) {
      summary.batch(2)
      advance(500)
    }
    summary.renewal()
    assert.deepEqual(printed, [], 'nothing before the window is over')
    advance(500)
    assert.deepEqual(printed, ['last 10 s: 38 records in 19 batches, 1 renewal (38 records in all)'])

    // A quiet window still says so: a stalled upload is visible.
    advance(10_000)
    assert.equal(printed[1], 'last 10 s: no batches received (38 records in all)')

    summary.batch(1)
    advance(4_000)
    summary.stop()
    summary.stop()
    assert.equal(printed[2], 'last 4 s: 1 record in 1 batch (39 records in all)')
    advance(60_000)
    assert.equal(printed.length, 3, 'the timer stopped')
  })
})
