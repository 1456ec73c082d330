import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { runCli } from '../support/cli.js'

// A Pi without a real-time clock boots in the past until NTP answers. The one-shot commands must
// refuse to judge token expiry with such a clock (the daemon waits instead: test/agent/clock.test.ts).
const root = mkdtempSync(join(tmpdir(), 'edgetoken-clock-'))
after(() => rmSync(root, { recursive: true, force: true }))

// Preloaded before the CLI: the clock reads 2001-09-09.
const pastClock = `data:text/javascript,Date.now = () => 1e12`

test('token, login and upload refuse a clock before the build date: exit 5, one line', async () => {
  const env = {
    EDGETOKEN_AUTHORITY: 'http://127.0.0.1:9',
    EDGETOKEN_CLIENT_ID: 'edgetoken-device',
    EDGETOKEN_TELEMETRY_ENDPOINT: 'http://127.0.0.1:9/ingest',
  }
  for (const command of ['token', 'login', 'upload']) {
    const r = await runCli([command, '--json'], {
      stateDir: join(root, command),
      env,
      nodeArgs: ['--import', pastClock],
    })
    assert.equal(r.code, 5, `${command}: ${r.stderr}`)
    assert.match(
      r.stderr,
      /^edgetoken: the system clock reads 2001-09-09T\S+, before this build \([^)]+\): wait for time synchronisation\n$/,
    )
    const event = JSON.parse(r.stdout.trim()) as Record<string, unknown>
    assert.equal(event.code, 'unavailable')
  }
})
