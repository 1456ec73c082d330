/**
 * Issue 14 (2): a sign-in that survives a restart. The device code of a pending `login` is kept in
 * the encrypted store; the next `login` resumes it (same user code, `"resumed":true`, no new device
 * authorization request), at the interval last asked for; denied or cancelled on purpose (Ctrl-C),
 * it is gone. Real test IdP (oidc-provider, DPoP on), the CLI as a child process.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { accountKey } from '../../src/store/document.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { type CliResult, cliEnv, collect, newTestDevice, runCli, spawnCli } from '../support/cli.js'
import { approveDevice, denyDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-resume-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000

interface Running {
  child: ChildProcess
  done: Promise<CliResult>
  first: Promise<Record<string, unknown>>
  startedAt: number
}

function startLogin(env: Record<string, string>): Running {
  const startedAt = Date.now()
  const child = spawnCli(['login', '--json', '--display', 'none'], { env })
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = ''
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString('utf8')
      const newline = buffered.indexOf('\n')
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>)
    })
    child.once('close', () => reject(new Error('login exited before its first event')))
  })
  first.catch(() => {})
  return { child, done: collect(child, { timeoutMs: TIMEOUT_MS }), first, startedAt }
}

async function pending(idp: TestIdp, env: Record<string, string>) {
  const store = await openTokenStore({ stateDir: env.EDGETOKEN_STATE_DIR ?? '', env: cliEnv({ env }) })
  return (await store.read()).pendingSignIns?.[accountKey(idp.issuer, idp.publicClientId)]
}

function lastEvent(result: CliResult): Record<string, unknown> | undefined {
  const lines = result.stdout.split('\n').filter((l) => l.length > 0)
  const last = lines.at(-1)
  return last === undefined ? undefined : (JSON.parse(last) as Record<string, unknown>)
}

describe('issue 14: a pending login is resumed', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1, slowDown: true })
  })
  after(() => idp.close())

  test('issue 14: kill -9 during a pending login, then login: same user code, one device authorization, signed in', async () => {
    const { env } = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
    const authorizations = idp.deviceAuthorizations
    const first = startLogin(env)
    const shown = await first.first
    assert.equal(shown.resumed, undefined)
    first.child.kill('SIGKILL')
    await first.done

    const second = startLogin(env)
    const again = await second.first
    assert.equal(again.event, 'device_code')
    assert.equal(again.user_code, shown.user_code, 'the same code')
    assert.equal(again.expires_at, shown.expires_at)
    assert.equal(again.resumed, true)
    await approveDevice(idp.issuer, String(again.user_code))
    const result = await second.done
    assert.equal(result.code, 0, result.stderr)
    assert.equal(lastEvent(result)?.event, 'signed_in')
    assert.equal(idp.deviceAuthorizations, authorizations + 1, 'one device authorization request at the IdP')
    assert.equal(await pending(idp, env), undefined, 'the pending sign-in is gone once signed in')
    const token = await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(JSON.parse(token.stdout).token_type, 'DPoP', 'the resumed sign-in is DPoP-bound')
  })

  test('RFC 8628 §3.5: a slow_down outlives the restart: the resumed login polls at the interval last asked for', async () => {
    const { env } = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
    const first = startLogin(env)
    await first.first
    // Polls 1 s apart now count as too early: the next one is answered slow_down (1 + 5 = 6 s).
    idp.setInterval(3)
    try {
      const deadline = Date.now() + 20_000
      while ((await pending(idp, env))?.flow.intervalSeconds !== 6 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      assert.equal(
        (await pending(idp, env))?.flow.intervalSeconds,
        6,
        'the stored interval follows slow_down',
      )
      first.child.kill('SIGKILL')
      await first.done
      const polls = idp.polls.length
      const second = startLogin(env)
      assert.equal((await second.first).resumed, true)
      await approveDevice(idp.issuer, String((await second.first).user_code))
      const result = await second.done
      assert.equal(result.code, 0, result.stderr)
      const resumedPolls = idp.polls.slice(polls)
      assert.equal(resumedPolls.length, 1, 'one poll, answered with the tokens')
      assert.equal(resumedPolls[0]?.status, 200)
      assert.ok(
        (resumedPolls[0]?.at ?? 0) - second.startedAt >= 6000,
        'the first poll waited the 6 s interval, not the 1 s the IdP first sent',
      )
    } finally {
      idp.setInterval(1)
    }
  })

  test('issue 14: denied: the pending sign-in is removed and the next login starts a new code', async () => {
    const { env } = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
    const run = startLogin(env)
    const shown = await run.first
    await denyDevice(idp.issuer, String(shown.user_code), 'confirm')
    const result = await run.done
    assert.equal(result.code, 4)
    assert.equal(await pending(idp, env), undefined)
    const next = startLogin(env)
    const fresh = await next.first
    assert.notEqual(fresh.user_code, shown.user_code)
    assert.equal(fresh.resumed, undefined)
    next.child.kill('SIGINT')
    await next.done
  })

  test('issue 14: run resumes a pending sign-in left by a killed login, and signs in', async () => {
    const { env } = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
    const authorizations = idp.deviceAuthorizations
    const first = startLogin(env)
    const shown = await first.first
    first.child.kill('SIGKILL')
    await first.done

    const daemon = spawnCli(['run', '--json'], { env })
    const done = collect(daemon, { timeoutMs: TIMEOUT_MS })
    let stdout = ''
    let stderr = ''
    daemon.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString()
    })
    daemon.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString()
    })
    const waitFor = async (what: () => boolean, label: string) => {
      const deadline = Date.now() + 30_000
      while (!what()) {
        if (daemon.exitCode !== null || Date.now() > deadline) assert.fail(`${label}: ${stderr}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
    await waitFor(() => stderr.includes(String(shown.user_code)), 'the daemon shows the same code')
    await approveDevice(idp.issuer, String(shown.user_code))
    await waitFor(() => stdout.includes('"event":"signed_in"'), 'signed in')
    daemon.kill('SIGTERM')
    const result = await done
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stderr, /resuming the pending sign-in/)
    assert.equal(idp.deviceAuthorizations, authorizations + 1, 'no new device authorization')
    assert.equal(await pending(idp, env), undefined)
  })

  test('issue 14: Ctrl-C (SIGINT) forgets the code; SIGTERM (a system stop) keeps it for the next login', async () => {
    const { env } = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
    const interrupted = startLogin(env)
    await interrupted.first
    interrupted.child.kill('SIGINT')
    assert.equal((await interrupted.done).code, 4)
    assert.equal(await pending(idp, env), undefined, 'cancelled on purpose: forgotten')

    const stopped = startLogin(env)
    const shown = await stopped.first
    stopped.child.kill('SIGTERM')
    assert.equal((await stopped.done).code, 4)
    assert.equal((await pending(idp, env))?.flow.userCode, shown.user_code, 'stopped by the system: kept')
    const next = startLogin(env)
    assert.equal((await next.first).user_code, shown.user_code)
    next.child.kill('SIGINT')
    await next.done
  })
})
