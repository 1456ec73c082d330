/**
 * `edgetoken login --browser` (issue 13) end to end: the CLI as a child process against the real
 * test IdP (oidc-provider, a native client whose loopback redirect may use any port), the user's
 * side completed headlessly through the IdP's interaction pages, then the redirect followed to the
 * CLI's loopback listener, as a browser would. Plus the listener's own rules, in process.
 */
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { startLoopbackListener } from '../../src/identity/loopback-listener.js'
import { type CliResult, collect, newTestDevice, runCli, spawnCli } from '../support/cli.js'
import { authorizeInBrowserless, signInThroughLoopback } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-browser-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000
/** No display and no $BROWSER unless a test sets one: the developer's session must not leak in. */
const HEADLESS = { DISPLAY: undefined, WAYLAND_DISPLAY: undefined, BROWSER: undefined }

type Env = Record<string, string | undefined>

function desktopEnv(idp: TestIdp, extra: Env = {}): Env {
  const { env } = newTestDevice(root, { issuer: idp.issuer, clientId: idp.loopbackClientId, scopes: SCOPES })
  return { ...env, ...HEADLESS, ...extra }
}

interface Running {
  child: ChildProcess
  done: Promise<CliResult>
  /** The first NDJSON event on stdout. */
  first: Promise<Record<string, unknown>>
}

/** Children still running when a test failed early: killed when the file ends. */
const children = new Set<ChildProcess>()
after(() => {
  for (const child of children) child.kill('SIGKILL')
})

function startLogin(args: readonly string[], env: Env): Running {
  const child = spawnCli(['login', '--browser', ...args], { env })
  children.add(child)
  child.once('close', () => children.delete(child))
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = ''
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString('utf8')
      const newline = buffered.indexOf('\n')
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>)
    })
    child.once('close', () => reject(new Error('login exited before its first event')))
  })
  const done = collect(child, { timeoutMs: TIMEOUT_MS })
  first.catch(() => {})
  return { child, done, first }
}

function events(result: CliResult): Record<string, unknown>[] {
  return result.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
}

/** A GET the way a browser sends it (Host as in the URL), answered with status and text. */
async function get(url: string | URL): Promise<{ status: number; type: string | null; body: string }> {
  const response = await fetch(url, { redirect: 'manual' })
  return { status: response.status, type: response.headers.get('content-type'), body: await response.text() }
}

/** Whether something still accepts connections on a loopback port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/', method: 'GET' }, (res) => {
      res.resume()
      resolve(true)
    })
    req.on('error', () => resolve(false))
    req.end()
  })
}

function assertNoSecrets(idp: TestIdp, text: string) {
  const { accessTokens, refreshTokens, idTokens } = idp.issued
  for (const secret of [...accessTokens, ...refreshTokens, ...idTokens]) {
    assert.ok(!text.includes(secret), 'a token leaked into the output')
  }
}

describe('edgetoken login --browser', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ loopbackClient: true })
  })
  after(() => idp.close())

  test('issue 13 #1: RFC 8252 §7.3 loopback sign-in with PKCE S256, state and nonce; then token refreshes as after a device code', async () => {
    const env = desktopEnv(idp)
    const run = startLogin(['--no-open', '--json'], env)
    const first = await run.first
    assert.deepEqual(Object.keys(first), ['event', 'url'])
    assert.equal(first.event, 'authorization_url')
    const url = new URL(String(first.url))
    assert.equal(url.origin, idp.issuer)
    const q = url.searchParams
    assert.equal(q.get('response_type'), 'code')
    assert.equal(q.get('client_id'), idp.loopbackClientId)
    // RFC 8252 §7.3 / §8.3: the IPv4 literal, a port of its own, path exactly '/'.
    assert.match(String(q.get('redirect_uri')), /^http:\/\/127\.0\.0\.1:\d+\/$/)
    assert.equal(q.get('code_challenge_method'), 'S256')
    assert.match(String(q.get('code_challenge')), /^[A-Za-z0-9_-]{43}$/)
    assert.match(String(q.get('state')), /^[A-Za-z0-9_-]{43}$/)
    assert.match(String(q.get('nonce')), /^[A-Za-z0-9_-]{43}$/)
    assert.deepEqual(String(q.get('scope')).split(' ').sort(), [
      'offline_access',
      'openid',
      'profile',
      'telemetry:write',
    ])
    // OpenID Connect Core §11: offline_access needs prompt=consent at a strict provider.
    assert.equal(q.get('prompt'), 'consent')

    const page = await signInThroughLoopback(url.href, { login: 'carol' })
    assert.equal(page.status, 200)
    assert.equal(page.contentType, 'text/plain; charset=utf-8')
    assert.match(page.body, /You can close this window/)
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
    assert.deepEqual(events(result), [
      { event: 'authorization_url', url: url.href },
      { event: 'signed_in', account: { id: 'carol', username: 'carol' } },
    ])
    assert.ok(result.stderr.includes(url.href), 'the URL is printed on stderr too')
    assertNoSecrets(idp, result.stdout + result.stderr + page.body)
    assert.equal(idp.codeRedemptions, 1)
    // The listener is gone once the sign-in is over.
    const port = Number(new URL(String(q.get('redirect_uri'))).port)
    assert.equal(await listening(port), false)

    // Afterwards: the same store, the same silent refresh as after a device code sign-in.
    const token = await runCli(['token', '--force-refresh'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(token.code, 0, token.stderr)
    assert.ok(idp.issued.accessTokens.includes(token.stdout.trim()))
    const status = await runCli(['status', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(status.code, 0, status.stderr)
    assert.equal(JSON.parse(status.stdout).account.id, 'carol')
  })

  test('issue 13 #2: RFC 6749 §10.12 a forged callback (wrong state) gets a plain page, never reaches the token endpoint, and does not end the sign-in', async () => {
    const run = startLogin(['--no-open', '--json'], desktopEnv(idp))
    const url = new URL(String((await run.first).url))
    const redirectUri = String(url.searchParams.get('redirect_uri'))
    const state = String(url.searchParams.get('state'))
    const redemptions = idp.codeRedemptions

    // A real code for another request, delivered with a wrong state: the mix-up the state exists for.
    const forged = new URL(redirectUri)
    forged.search = new URLSearchParams({ code: 'attacker-code', state: 'not-the-state' }).toString()
    const wrongState = await get(forged)
    assert.equal(wrongState.status, 400)
    assert.equal(wrongState.type, 'text/plain; charset=utf-8')
    assert.match(wrongState.body, /state does not match/)
    assert.match(wrongState.body, /still waiting/)
    // The state but no code; an error= answer; an issuer mix-up (RFC 9207 §2.4): all ignored.
    const noCode = await get(`${redirectUri}?state=${state}`)
    assert.equal(noCode.status, 400)
    assert.match(noCode.body, /no code/)
    const denied = await get(`${redirectUri}?error=access_denied&state=${state}`)
    assert.equal(denied.status, 400)
    assert.match(denied.body, /answered access_denied/)
    const mixUp = await get(
      `${redirectUri}?code=x&state=${state}&iss=${encodeURIComponent('https://evil.example')}`,
    )
    assert.equal(mixUp.status, 400)
    assert.match(mixUp.body, /not the expected issuer/)
    // Another path (a favicon), another Host (DNS rebinding): not judged at all.
    assert.equal((await get(new URL('/favicon.ico', redirectUri))).status, 404)
    assert.equal(idp.codeRedemptions, redemptions, 'nothing was redeemed')

    const page = await signInThroughLoopback(url.href)
    assert.equal(page.status, 200)
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
    assert.equal(idp.codeRedemptions, redemptions + 1)
    assert.match(result.stderr, /ignored a sign-in callback: authorization response: state does not match/)
    // A replay of the accepted callback finds nobody listening.
    assert.equal(await listening(Number(new URL(redirectUri).port)), false)
    await assert.rejects(fetch(page.callbackUrl))
  })

  test('issue 13 #3: $BROWSER is started with the URL as its only argument (no shell)', async () => {
    const dir = mkdtempSync(join(root, 'browser-'))
    const seen = join(dir, 'seen')
    const script = join(dir, 'fake browser')
    writeFileSync(
      script,
      `#!/bin/sh\nprintf '%s\\n' "$#" "$1" > '${seen}.tmp' && mv '${seen}.tmp' '${seen}'\n`,
    )
    chmodSync(script, 0o755)
    const run = startLogin(['--json'], desktopEnv(idp, { BROWSER: script }))
    const url = String((await run.first).url)
    let handed = ''
    for (let i = 0; i < 200 && handed === ''; i++) {
      try {
        handed = readFileSync(seen, 'utf8')
      } catch {
        await new Promise((r) => setTimeout(r, 25))
      }
    }
    const [count, argument] = handed.split('\n')
    assert.equal(count, '1', 'one argument')
    assert.equal(argument, url, 'the URL, byte for byte (its & and ; were not read by a shell)')
    const page = await signInThroughLoopback(argument ?? '')
    assert.equal(page.status, 200)
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
  })

  test('issue 13 #4: no display and no $BROWSER: exit 2 at once with a one-line hint to the device code flow', async () => {
    const result = await runCli(['login', '--browser', '--json'], {
      env: desktopEnv(idp),
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(result.code, 2, result.stderr)
    const [event] = events(result)
    assert.equal(event?.event, 'error')
    assert.equal(event?.code, 'config')
    assert.match(
      String(event?.message),
      /no browser to open here \(neither DISPLAY, WAYLAND_DISPLAY nor BROWSER is set\)/,
    )
    assert.match(String(event?.message), /edgetoken login\)/)
    assert.match(String(event?.message), /--no-open/)
    assert.equal(result.stderr.trim().split('\n').length, 1)
  })

  test('issue 13 #5: a browser that cannot start is a warning; the printed URL still works', async () => {
    const run = startLogin(['--json'], desktopEnv(idp, { BROWSER: join(root, 'no-such-browser') }))
    const url = String((await run.first).url)
    const page = await signInThroughLoopback(url)
    assert.equal(page.status, 200)
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
    assert.match(
      result.stderr,
      /warning: cannot start the browser .*no-such-browser \(BROWSER\): ENOENT; open the URL above by hand/,
    )
  })

  test('issue 13 #6: --timeout-seconds ends the wait (exit 4, expired) and closes the listener', async () => {
    const run = startLogin(['--no-open', '--json', '--timeout-seconds', '3'], desktopEnv(idp))
    const first = await run.first
    assert.equal(first.event, 'authorization_url', JSON.stringify(first))
    const redirectUri = new URL(String(first.url)).searchParams.get('redirect_uri')
    const port = Number(new URL(String(redirectUri)).port)
    const result = await run.done
    assert.equal(result.code, 4, result.stderr)
    const last = events(result).at(-1)
    assert.equal(last?.code, 'expired')
    assert.match(String(last?.message), /no sign-in within 3 seconds \(--timeout-seconds\)/)
    assert.equal(await listening(port), false)
  })

  test('issue 13 #7: Ctrl-C ends the wait (exit 4, cancelled)', async () => {
    const run = startLogin(['--no-open', '--json'], desktopEnv(idp))
    await run.first
    run.child.kill('SIGINT')
    const result = await run.done
    assert.equal(result.code, 4, result.stderr)
    assert.equal(events(result).at(-1)?.code, 'cancelled')
  })

  test('issue 13: a declined sign-in is shown and ignored; the user can still approve from the same URL', async () => {
    const run = startLogin(['--no-open', '--json'], desktopEnv(idp))
    const url = String((await run.first).url)
    const request = new URL(url)
    const redirected = await authorizeInBrowserless(url)
    assert.ok(redirected.searchParams.has('code'))
    // Deliver an error answer with the right state first, then the real code.
    const errorCallback = new URL(redirected)
    errorCallback.search = new URLSearchParams({
      error: 'access_denied',
      state: String(request.searchParams.get('state')),
      iss: idp.issuer,
    }).toString()
    assert.equal((await get(errorCallback)).status, 400)
    assert.equal((await get(redirected)).status, 200)
    const result = await run.done
    assert.equal(result.code, 0, result.stderr)
  })
})

describe('loopback listener (RFC 8252 §7.3, §8.3)', () => {
  test('issue 13: only the literal 127.0.0.1 Host, GET and path / are judged; one at a time; closes after the accepted one', async () => {
    const listener = await startLoopbackListener()
    try {
      assert.match(listener.redirectUri, /^http:\/\/127\.0\.0\.1:\d+\/$/)
      let release: () => void = () => {}
      const judged: string[] = []
      const waiting = listener.waitForCallback(async (url) => {
        judged.push(url.search)
        if (url.searchParams.get('slow') === '1') await new Promise<void>((r) => (release = r))
        return url.searchParams.get('ok') === '1' ? { accept: 'done' } : { reject: 'not this one' }
      })
      // DNS rebinding: a name that resolves to 127.0.0.1 is still the wrong Host.
      const rebound = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          {
            host: '127.0.0.1',
            port: listener.port,
            path: '/?ok=1',
            headers: { host: `evil.example:${listener.port}` },
          },
          (res) => {
            res.resume()
            resolve(res.statusCode ?? 0)
          },
        )
        req.on('error', reject)
        req.end()
      })
      assert.equal(rebound, 421)
      assert.equal((await fetch(`${listener.redirectUri}?ok=1`, { method: 'POST' })).status, 405)
      assert.equal((await get(`${listener.redirectUri}x?ok=1`)).status, 404)
      const rejected = await get(`${listener.redirectUri}?ok=0`)
      assert.equal(rejected.status, 400)
      assert.match(rejected.body, /^not this one\n/)
      // While one callback is being judged, another gets a page and changes nothing.
      const slow = get(`${listener.redirectUri}?slow=1`)
      while (judged.length < 2) await new Promise((r) => setTimeout(r, 5))
      assert.equal((await get(`${listener.redirectUri}?ok=1`)).status, 409)
      release()
      assert.equal((await slow).status, 400)
      const accepted = await get(`${listener.redirectUri}?ok=1`)
      assert.equal(accepted.status, 200)
      assert.equal(await waiting, 'done')
      assert.deepEqual(judged, ['?ok=0', '?slow=1', '?ok=1'])
      assert.equal(await listening(listener.port), false)
    } finally {
      await listener.close()
    }
  })

  test('issue 13: the signal ends the wait and closes the listener', async () => {
    const listener = await startLoopbackListener()
    const controller = new AbortController()
    const waiting = listener.waitForCallback(async () => ({ accept: 1 }), { signal: controller.signal })
    controller.abort()
    await assert.rejects(waiting, { name: 'AbortError' })
    assert.equal(await listening(listener.port), false)
  })
})
