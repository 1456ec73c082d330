/**
 * Issue 11 #1: a person's `login` (device code or `--browser`) replaces what the store held, and
 * the refresh token it replaced is revoked at the IdP (RFC 7009) after the new sign-in is saved,
 * whether the approval was for another account or the same one. Best effort: a revocation that
 * fails or is not offered is a warning, and the save stands. Against the real test IdP
 * (oidc-provider 9: revocation and introspection on), plus a node:http IdP that refuses.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { saveReplacingSignIn } from '../../src/identity/replace-sign-in.js'
import type { AuthorizationServer } from '../../src/oauth/authority.js'
import type { TokenSet } from '../../src/oauth/types.js'
import { readRefreshToken, saveSignIn } from '../../src/store/cache.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { newTestDevice } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { closeServer, listen } from '../support/net.js'
import { browserLogin, deviceLogin, type Env, isActive, storedAccount } from './sign-in-fixture.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-replace-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const HEADLESS = { DISPLAY: undefined, WAYLAND_DISPLAY: undefined, BROWSER: undefined }

describe('issue 11 #1: login revokes the refresh token it replaces', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1, loopbackClient: true, rotateRefreshToken: 'default' })
  })
  after(() => idp.close())

  function device(): Env {
    return newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES }).env
  }

  test('issue 11 #1: login approved as another account saves B, then revokes A’s refresh token (RFC 7009 §2.1)', async () => {
    const env = device()
    const first = await deviceLogin(idp, env, 'alice')
    assert.equal(first.code, 0, first.stderr)
    const alice = await storedAccount(idp, env, idp.publicClientId)
    const aliceToken = String(alice.entry?.refreshToken)
    assert.equal(await isActive(idp, idp.publicClientId, aliceToken), true)

    const second = await deviceLogin(idp, env, 'bob')
    assert.equal(second.code, 0, second.stderr)
    const bob = await storedAccount(idp, env, idp.publicClientId)
    assert.equal(bob.entry?.account.id, 'bob', 'B is stored')
    const bobToken = String(bob.entry?.refreshToken)
    assert.notEqual(bobToken, aliceToken)
    assert.equal(await isActive(idp, idp.publicClientId, aliceToken), false, 'A’s refresh token is revoked')
    assert.equal(await isActive(idp, idp.publicClientId, bobToken), true, 'B’s is not')
    assert.equal(bob.dpopKey?.jkt, alice.dpopKey?.jkt, 'the device keeps its DPoP key')
    assert.doesNotMatch(second.stderr, /could not revoke|offers no revocation/)
    for (const text of [second.stdout, second.stderr]) {
      assert.ok(!text.includes(aliceToken) && !text.includes(bobToken), 'no refresh token in the output')
    }
  })

  test('issue 11 #1: login again as the same account revokes the refresh token it replaced (RFC 7009 §2.1)', async () => {
    const env = device()
    assert.equal((await deviceLogin(idp, env, 'alice')).code, 0)
    const replaced = String((await storedAccount(idp, env, idp.publicClientId)).entry?.refreshToken)
    const again = await deviceLogin(idp, env, 'alice')
    assert.equal(again.code, 0, again.stderr)
    const now = String((await storedAccount(idp, env, idp.publicClientId)).entry?.refreshToken)
    assert.notEqual(now, replaced)
    assert.equal(await isActive(idp, idp.publicClientId, replaced), false, 'the replaced token is revoked')
    assert.equal(await isActive(idp, idp.publicClientId, now), true, 'the new one works')
  })

  test('issue 11 #1: login --browser as another account saves B, then revokes A’s refresh token (RFC 7009 §2.1)', async () => {
    const { env } = newTestDevice(root, {
      issuer: idp.issuer,
      clientId: idp.loopbackClientId,
      scopes: SCOPES,
    })
    const desktop = { ...env, ...HEADLESS }
    assert.equal((await browserLogin(desktop, 'carol')).result.code, 0)
    const carolToken = String((await storedAccount(idp, desktop, idp.loopbackClientId)).entry?.refreshToken)
    const { result } = await browserLogin(desktop, 'dave')
    assert.equal(result.code, 0, result.stderr)
    const dave = await storedAccount(idp, desktop, idp.loopbackClientId)
    assert.equal(dave.entry?.account.id, 'dave')
    assert.equal(
      await isActive(idp, idp.loopbackClientId, carolToken),
      false,
      'carol’s refresh token is revoked',
    )
    assert.equal(await isActive(idp, idp.loopbackClientId, String(dave.entry?.refreshToken)), true)
  })
})

describe('issue 11 #1: revoking the replaced refresh token is best effort', () => {
  const tokenSet = (refreshToken: string): TokenSet => ({
    accessToken: `at-${refreshToken}`,
    tokenType: 'bearer',
    expiresAt: Date.now() + 3_600_000,
    scopes: ['telemetry:write'],
    refreshToken,
  })

  async function seeded() {
    const dir = mkdtempSync(join(root, 'store-'))
    const keyFile = join(dir, 'key')
    writeFileSync(keyFile, Buffer.alloc(32, 7), { mode: 0o600 })
    writeFileSync(join(dir, 'machine-id'), '5c4e3d2f1a0b49c8a7d6e5f4c3b2a190\n')
    const store = await openTokenStore({
      stateDir: join(dir, 'state'),
      env: { EDGETOKEN_KEY_FILE: keyFile, EDGETOKEN_MACHINE_ID_FILE: join(dir, 'machine-id') },
    })
    const identity = { authority: 'http://127.0.0.1:1', clientId: 'device' }
    await saveSignIn(store, {
      ...identity,
      account: { id: 'alice', issuer: identity.authority },
      tokenSet: tokenSet('rt-alice'),
      requestedScopes: ['telemetry:write'],
    })
    return { store, identity }
  }

  function server(revocationEndpoint: string | undefined): AuthorizationServer {
    return {
      issuer: 'http://127.0.0.1:1',
      dialect: 'oidc',
      tokenEndpoint: 'http://127.0.0.1:1/token',
      ...(revocationEndpoint === undefined ? {} : { revocationEndpoint }),
    } as AuthorizationServer
  }

  test('issue 11 #1: an IdP without revocation (RFC 7009 §2) or one refusing it: a warning, and B is saved anyway', async () => {
    const refusing = createServer((_req, res) => {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"invalid_client"}')
    })
    const port = await listen(refusing)
    try {
      for (const endpoint of [undefined, `http://127.0.0.1:${port}/revoke`]) {
        const { store, identity } = await seeded()
        const warnings: string[] = []
        await saveReplacingSignIn(store, {
          ...identity,
          account: { id: 'bob', issuer: identity.authority },
          tokenSet: tokenSet('rt-bob'),
          requestedScopes: ['telemetry:write'],
          server: server(endpoint),
          client: { clientId: identity.clientId },
          onWarning: (line) => warnings.push(line),
        })
        assert.equal(await readRefreshToken(store, identity), 'rt-bob', 'B is saved')
        assert.equal(warnings.length, 1, `one warning line (${endpoint ?? 'no endpoint'})`)
        assert.match(
          warnings[0] ?? '',
          endpoint === undefined ? /offers no revocation/ : /could not revoke the replaced refresh token/,
        )
        assert.ok(!(warnings[0] ?? '').includes('rt-alice'), 'the token is not in the warning')
      }
    } finally {
      await closeServer(refusing)
    }
  })
})
