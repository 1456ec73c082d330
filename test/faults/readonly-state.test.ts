/**
 * Issue 16: a state directory that turns read-only (a failing SD card remounted `ro` by the kernel,
 * an image with a read-only root). A tmpfs holds a signed-in device with records in its spool and
 * is remounted read-only (EROFS even for root, which `chmod` would not stop). Against the real test
 * IdP and API: what only reads keeps working; what must write fails with one line and a non-zero
 * exit before it spends anything (no refresh sent, no record acknowledged); once the mount is
 * writable again everything that was there is delivered, once.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { startTestApi, type TestApi } from '../support/api.js'
import { type CliResult, newTestDevice, runCli, seedSignIn } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { mountSupport, mountTmpfs } from '../support/mounts.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const root = mkdtempSync(join(tmpdir(), 'edgetoken-readonly-'))
after(() => rmSync(root, { recursive: true, force: true }))

function oneLine(r: CliResult, what: string): string {
  const lines = r.stderr.trim().split('\n')
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`)
  assert.doesNotMatch(r.stderr, /\n\s+at |eyJ/, `${what}: no stack, no token`)
  return lines[0] ?? ''
}

const records = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => `${JSON.stringify({ n: from + i })}\n`).join('')

describe('issue 16: a read-only state directory', {
  skip: mountSupport() === true ? false : String(mountSupport()),
}, () => {
  let idp: TestIdp
  let api: TestApi
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 600 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
  })
  after(async () => {
    await api?.close()
    await idp?.close()
  })

  test('token and status read on; refresh, login and send fail in one line before spending anything; nothing lost', async (t) => {
    const mount = mountTmpfs(t, 4096)
    const device = newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
    const stateDir = join(mount.dir, 'state')
    const env = { ...device.env, EDGETOKEN_STATE_DIR: stateDir, EDGETOKEN_TELEMETRY_ENDPOINT: api.url }
    await seedSignIn({ issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES, stateDir, env })
    const cached = await runCli(['token'], { env })
    assert.equal(cached.code, 0, cached.stderr)
    const sent = await runCli(['send'], { env, stdin: records(0, 50) })
    assert.equal(sent.code, 0, sent.stderr)
    const filesBefore = readdirSync(stateDir).sort()

    mount.remount('ro')
    const refreshes = idp.refreshes
    const deviceAuths = idp.issued.userCodes.length

    const token = await runCli(['token'], { env })
    assert.equal(token.code, 0, `a cached token needs no write: ${token.stderr}`)
    assert.equal(token.stdout, cached.stdout)

    const status = await runCli(['status', '--json'], { env })
    assert.equal(status.code, 0, status.stderr)
    assert.equal(JSON.parse(status.stdout).spool.pending, 50)

    const refresh = await runCli(['token', '--force-refresh'], { env })
    assert.equal(refresh.code, 6, refresh.stderr)
    assert.equal(refresh.stdout, '')
    assert.match(
      oneLine(refresh, 'token --force-refresh'),
      /token store lock .*tokens\.lock cannot be created \(EROFS\)$/,
    )
    assert.equal(
      idp.refreshes,
      refreshes,
      'no refresh sent that could not be saved (the refresh token would be spent)',
    )

    const login = await runCli(['login', '--display', 'console'], { env, timeoutMs: 20_000 })
    assert.equal(login.code, 6, login.stderr)
    assert.match(oneLine(login, 'login'), /tokens\.lock cannot be created \(EROFS\)$/)
    // The device code it asked for was never shown: nobody signs in for a login that cannot finish.
    const shown = idp.issued.userCodes.slice(deviceAuths)
    assert.ok(shown.every((code) => !login.stderr.includes(code) && !login.stdout.includes(code)))

    const more = await runCli(['send'], { env, stdin: records(50, 10) })
    assert.equal(more.code, 1, more.stderr)
    assert.match(oneLine(more, 'send'), /spool.*EROFS/)

    const upload = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(upload.code, 1, 'an upload that cannot record its progress must not report success')
    assert.match(oneLine(upload, 'upload'), /spool.*EROFS/)

    mount.remount('rw')
    assert.deepEqual(readdirSync(stateDir).sort(), filesBefore, 'nothing left behind or removed')
    const drained = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(drained.code, 0, drained.stderr)
    const delivered = api.receiver.batches
      .filter((b) => b.deviceId === (env as Record<string, string>).EDGETOKEN_DEVICE_ID)
      .flatMap((b) => b.records.map((r) => (r as { n: number }).n))
    assert.deepEqual(
      delivered,
      records(0, 50)
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).n),
      'the 50 records, once, in order',
    )
    const refreshed = await runCli(['token', '--force-refresh'], { env })
    assert.equal(refreshed.code, 0, `the refresh token survived: ${refreshed.stderr}`)
  })
})
