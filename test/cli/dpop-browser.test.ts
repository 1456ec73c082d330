/**
 * Issue 14: DPoP on `login --browser` against the real test IdP (oidc-provider 9, DPoP on and
 * advertised): the authorization code is bound to the account's key (`dpop_jkt`), its redemption
 * proves it, the key is stored with the tokens, and refreshes afterwards prove the same key.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { newTestDevice, runCli } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { browserLogin, cnfJkt, type Env, storedAccount } from './sign-in-fixture.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-dpop-browser-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000
const HEADLESS = { DISPLAY: undefined, WAYLAND_DISPLAY: undefined, BROWSER: undefined }

describe('issue 14: DPoP on login --browser', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ loopbackClient: true, rotateRefreshToken: 'default' })
  })
  after(() => idp.close())

  function desktop(extra: Env = {}): Env {
    const { env } = newTestDevice(root, {
      issuer: idp.issuer,
      clientId: idp.loopbackClientId,
      scopes: SCOPES,
    })
    return { ...env, ...HEADLESS, ...extra }
  }

  test('RFC 9449 §5, §10: login --browser binds the code (dpop_jkt) and the tokens (cnf.jkt) to the stored key; token --json says DPoP; a refresh proves the same key', async () => {
    const env = desktop()
    const proofs = idp.dpop.proofs
    const { result, url } = await browserLogin(env, 'carol')
    assert.equal(result.code, 0, result.stderr)
    const signedIn = await storedAccount(idp, env, idp.loopbackClientId)
    assert.ok(signedIn.dpopKey, 'the DPoP key is in the encrypted store')
    assert.equal(signedIn.dpopKey.alg, 'ES256')
    assert.equal(
      url.searchParams.get('dpop_jkt'),
      signedIn.dpopKey.jkt,
      'RFC 9449 §10: the code is bound to it',
    )
    assert.ok(idp.dpop.proofs > proofs, 'the redemption carried a proof')
    assert.equal(signedIn.entry?.accessTokens[0]?.tokenType, 'DPoP')

    const json = await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(json.code, 0, json.stderr)
    const body = JSON.parse(json.stdout) as Record<string, string>
    assert.equal(body.token_type, 'DPoP')
    assert.equal(cnfJkt(body.access_token ?? ''), signedIn.dpopKey.jkt)

    const refreshes = idp.refreshes
    const forced = await runCli(['token', '--force-refresh', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(forced.code, 0, forced.stderr)
    assert.equal(idp.refreshes, refreshes + 1)
    const refreshed = JSON.parse(forced.stdout) as Record<string, string>
    assert.equal(refreshed.token_type, 'DPoP')
    assert.equal(
      cnfJkt(refreshed.access_token ?? ''),
      signedIn.dpopKey.jkt,
      'the refresh proved the same key',
    )
    assert.equal(
      (await storedAccount(idp, env, idp.loopbackClientId)).entry?.refreshToken,
      signedIn.entry?.refreshToken,
      'the DPoP-bound refresh token is kept, not rotated (RFC 9700 §4.14.2)',
    )
    for (const text of [result.stdout, result.stderr, json.stderr, forced.stderr]) {
      assert.ok(!text.includes(String(signedIn.dpopKey.privateJwk.d)), 'the private key never appears')
    }
  })

  test('RFC 9449 §5: a second login --browser keeps the account key (one key per account)', async () => {
    const env = desktop()
    assert.equal((await browserLogin(env, 'carol')).result.code, 0)
    const first = await storedAccount(idp, env, idp.loopbackClientId)
    const again = await browserLogin(env, 'carol')
    assert.equal(again.result.code, 0, again.result.stderr)
    const second = await storedAccount(idp, env, idp.loopbackClientId)
    assert.equal(second.dpopKey?.jkt, first.dpopKey?.jkt)
    assert.equal(again.url.searchParams.get('dpop_jkt'), first.dpopKey?.jkt)
  })

  test('issue 14: login --browser with dpop false: no dpop_jkt, no key stored, token --json says Bearer', async () => {
    const env = desktop({ EDGETOKEN_DPOP: 'false' })
    const { result, url } = await browserLogin(env, 'carol')
    assert.equal(result.code, 0, result.stderr)
    assert.equal(url.searchParams.get('dpop_jkt'), null)
    assert.equal((await storedAccount(idp, env, idp.loopbackClientId)).dpopKey, undefined)
    const json = await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS })
    const body = JSON.parse(json.stdout) as Record<string, string>
    assert.equal(body.token_type, 'Bearer')
    assert.equal(cnfJkt(body.access_token ?? ''), undefined)
  })
})
