/**
 * `npm run demo` end to end, headless: IdP, broker, API, simulators and the agent come up, the
 * sign-in is approved automatically, tokens are renewed, telemetry reaches the API, and the demo
 * stops by itself with exit 0 within a bound.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

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
})
