/**
 * The clients over the partitioned token cache (issue 18), against the real oidc-provider test IdP
 * with refresh-token rotation and reuse detection (reusing a rotated refresh token revokes the
 * whole grant): users signed in through ConfidentialClient.acquireTokenByCode each get their own
 * token, removing one leaves the other, concurrent silent calls make one refresh, two instances
 * sharing one cache keep the grant alive, invalid_grant marks the account; PublicClient sign-ins
 * (device flow, authorization code) land in its cache too.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { decodeJwt } from 'jose'
import { ConfidentialClient } from '../../src/client/confidential-client.js'
import { PublicClient } from '../../src/client/public-client.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import type { Account } from '../../src/oauth/types.js'
import { FileTokenCache } from '../../src/store/partitions/file.js'
import { MemoryTokenCache } from '../../src/store/partitions/memory.js'
import type { TokenCache } from '../../src/store/partitions/token-cache.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { approveDevice, authorizeInBrowserless, authorizeWithFormPost } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const WEB_APP = 'edgetoken-webapp'
const SECRET = 'webapp-secret-5e6f7a8b9c'
const REDIRECT = 'https://app.example/auth'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-clients-cache-'))
after(() => rmSync(root, { recursive: true, force: true }))

describe('ConfidentialClient over the token cache, against the test IdP (rotation with reuse detection)', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({
      clients: [
        {
          client_id: WEB_APP,
          client_secret: SECRET,
          token_endpoint_auth_method: 'client_secret_basic',
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          redirect_uris: [REDIRECT],
        },
      ],
    })
  })
  after(() => idp.close())

  const webApp = (cache?: TokenCache) =>
    new ConfidentialClient({
      authority: idp.issuer,
      clientId: WEB_APP,
      credential: { clientSecret: SECRET },
      cache,
    })

  async function signIn(
    app: ConfidentialClient,
    login: string,
  ): Promise<{ account: Account; refreshToken: string }> {
    const request = await app.getAuthorizationUrl({
      scopes: [idp.apiScope],
      redirectUri: REDIRECT,
      prompt: 'consent',
    })
    const post = await authorizeWithFormPost(request.url, { login })
    const { account, tokens } = await app.acquireTokenByCode(request, post.fields)
    assert.ok(tokens.refreshToken)
    return { account, refreshToken: tokens.refreshToken }
  }

  test('issue 18: two users signed in by code each get their own token silently; removing one leaves the other', async () => {
    const app = webApp()
    const alice = (await signIn(app, 'alice')).account
    const bob = (await signIn(app, 'bob')).account
    assert.deepEqual((await app.getAccounts()).map((a) => a.id).sort(), ['alice', 'bob'])
    assert.equal((await app.getAccount('bob'))?.id, 'bob')

    const refreshes = idp.refreshes
    for (const [account, sub] of [
      [alice, 'alice'],
      [bob, 'bob'],
    ] as const) {
      const cached = await app.acquireTokenSilent({ account, scopes: [idp.apiScope] })
      assert.equal(cached.fromCache, true, 'the sign-in token is served')
      assert.equal(decodeJwt(cached.accessToken).sub, sub)
      assert.equal(cached.account.id, sub)
      const refreshed = await app.acquireTokenSilent({
        account: sub,
        scopes: [idp.apiScope],
        forceRefresh: true,
      })
      assert.equal(refreshed.fromCache, false)
      assert.equal(decodeJwt(refreshed.accessToken).sub, sub)
      assert.notEqual(refreshed.accessToken, cached.accessToken)
    }
    assert.equal(idp.refreshes - refreshes, 2)

    await app.removeAccount(alice)
    assert.deepEqual(
      (await app.getAccounts()).map((a) => a.id),
      ['bob'],
    )
    await assert.rejects(app.acquireTokenSilent({ account: alice, scopes: [idp.apiScope] }), {
      code: 'ERR_SIGNIN_REQUIRED',
    })
    assert.equal(
      decodeJwt((await app.acquireTokenSilent({ account: bob, scopes: [idp.apiScope] })).accessToken).sub,
      'bob',
    )
  })

  test('issue 18: 50 concurrent acquireTokenSilent({ forceRefresh }) for one user make exactly one refresh at the IdP', async () => {
    const app = webApp()
    const { account } = await signIn(app, 'carol')
    const refreshes = idp.refreshes
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        app.acquireTokenSilent({ account, scopes: [idp.apiScope], forceRefresh: true }),
      ),
    )
    assert.equal(idp.refreshes - refreshes, 1)
    assert.equal(new Set(results.map((r) => r.accessToken)).size, 1)
    assert.equal(decodeJwt(results[0]?.accessToken ?? '').sub, 'carol')
  })

  for (const kind of ['FileTokenCache', 'MemoryTokenCache'] as const) {
    test(`issue 18: two ConfidentialClient instances sharing one ${kind} refresh at once: one refresh, and the rotated grant stays alive (RFC 9700 §4.14.2)`, async () => {
      const cache =
        kind === 'FileTokenCache'
          ? new FileTokenCache(await openTokenStore({ stateDir: join(root, 'shared'), env: {} }))
          : new MemoryTokenCache()
      const one = webApp(cache)
      const two = webApp(cache)
      const { account } = await signIn(one, `dave-${kind}`)
      assert.equal((await two.getAccount(account.id))?.id, account.id, 'signed in on one, known to two')
      const refreshes = idp.refreshes
      const both = await Promise.all(
        [one, two, one, two].map((app) =>
          app.acquireTokenSilent({ account, scopes: [idp.apiScope], forceRefresh: true }),
        ),
      )
      assert.equal(idp.refreshes - refreshes, 1, 'the second instance waited for the first one’s refresh')
      assert.equal(new Set(both.map((r) => r.accessToken)).size, 1)
      // Had both sent the same refresh token, oidc-provider would have revoked the grant.
      const later = await two.acquireTokenSilent({ account, scopes: [idp.apiScope], forceRefresh: true })
      assert.equal(later.fromCache, false)
      assert.equal(decodeJwt(later.accessToken).sub, account.id)
    })
  }

  test('issue 18: invalid_grant (a grant revoked for refresh-token reuse) marks the account needsSignIn; it is kept and not refreshed again', async () => {
    const app = webApp()
    const { account, refreshToken: first } = await signIn(app, 'erin')
    await app.acquireTokenSilent({ account, scopes: [idp.apiScope], forceRefresh: true })
    // Someone replays the first, rotated-away refresh token: the IdP revokes the whole grant.
    const server = await app.resolve()
    await assert.rejects(
      refreshTokenGrant(
        server,
        { clientId: WEB_APP, auth: { method: 'client_secret_basic', clientSecret: SECRET } },
        first,
        [],
      ),
      { code: 'ERR_SIGNIN_REQUIRED' },
    )
    await assert.rejects(app.acquireTokenSilent({ account, scopes: [idp.apiScope], forceRefresh: true }), {
      code: 'ERR_SIGNIN_REQUIRED',
      error: 'invalid_grant',
    })
    const refreshes = idp.refreshes
    await assert.rejects(app.acquireTokenSilent({ account, scopes: [idp.apiScope], forceRefresh: true }), {
      code: 'ERR_SIGNIN_REQUIRED',
      message: /sign-in required/,
    })
    assert.equal(idp.refreshes, refreshes, 'the dead refresh token was not sent again')
    assert.equal((await app.getAccount(account.id))?.id, account.id, 'the account is kept')
  })
})

describe('PublicClient over the token cache, against the test IdP', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1 })
  })
  after(() => idp.close())

  test('issue 18: a device-flow sign-in and an authorization-code sign-in are saved; acquireTokenSilent serves and refreshes them', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [idp.apiScope] })
    await approveDevice(idp.issuer, flow.userCode, { login: 'frank' })
    const { account } = await flow.poll({ sleep: async () => {} })
    const request = await client.getAuthorizationUrl({
      scopes: [idp.apiScope],
      redirectUri: 'http://127.0.0.1/cb',
      prompt: 'consent',
    })
    const second = await client.acquireTokenByCode(
      request,
      await authorizeInBrowserless(request.url, { login: 'grace' }),
    )
    assert.deepEqual((await client.getAccounts()).map((a) => a.id).sort(), ['frank', 'grace'])
    for (const who of [account, second.account]) {
      const hit = await client.acquireTokenSilent({ account: who, scopes: [idp.apiScope] })
      assert.equal(hit.fromCache, true)
      assert.equal(decodeJwt(hit.accessToken).sub, who.id)
      const refreshed = await client.acquireTokenSilent({
        account: who.id,
        scopes: [idp.apiScope],
        forceRefresh: true,
      })
      assert.equal(refreshed.fromCache, false)
      assert.equal(decodeJwt(refreshed.accessToken).sub, who.id)
    }
  })
})
