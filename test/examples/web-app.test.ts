/**
 * Issue 18: the example web app end to end. Users sign in through it against the real test IdP
 * (oidc-provider: authorization code + PKCE, form_post, refresh token rotation with reuse
 * detection), and it calls the reference telemetry API as each of them. In one process with the
 * in-memory cache; then as two processes sharing one redis-server.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConfidentialClient, MemoryTokenCache, RedisTokenCache } from '../../src/index.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { closeServer, freePort } from '../support/net.js'
import { startRedis, type TestRedis } from '../support/redis.js'
import { type AppProcess, signIn, startAppProcess, telemetry } from './drive.js'
import { createWebApp } from './web-app/app.js'
import { MemorySessionStore } from './web-app/sessions.js'

const CLIENT_ID = 'edgetoken-webapp'
const SECRET = 'webapp-secret-0a1b2c3d4e5f'
// Short access tokens: one is due (less than half its lifetime left) after 2 s, without a clock.
const ACCESS_TOKEN_TTL = 4
const DUE_AFTER_MS = (ACCESS_TOKEN_TTL / 2) * 1000 + 150

function webClient(redirectUris: string[]): Record<string, unknown> {
  return {
    client_id: CLIENT_ID,
    client_secret: SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: redirectUris,
  }
}

/** The subject of the batch the API accepted last. */
function lastSubject(api: TestApi): string | undefined {
  return api.receiver.batches.at(-1)?.subject
}

/** An answer must name what failed without a stack trace or any secret the IdP issued. */
function assertClean(text: string, idp: TestIdp): void {
  assert.doesNotMatch(text, /\n\s+at |\.ts:\d+/, 'no stack trace')
  for (const secret of [...idp.issued.accessTokens, ...idp.issued.refreshTokens, ...idp.issued.idTokens]) {
    assert.ok(!text.includes(secret), 'no token in the answer')
  }
  assert.ok(!text.includes(SECRET), 'no client secret in the answer')
}

describe('issue 18 example web app, one process, in-memory token cache', () => {
  let idp: TestIdp
  let api: TestApi
  let server: Server
  let client: ConfidentialClient
  let appUrl: string

  before(async () => {
    const port = await freePort()
    appUrl = `http://127.0.0.1:${port}`
    idp = await startTestIdp({
      accessTokenTtlSeconds: ACCESS_TOKEN_TTL,
      clients: [webClient([`${appUrl}/auth/callback`])],
    })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    client = new ConfidentialClient({
      authority: idp.issuer,
      clientId: CLIENT_ID,
      credential: { clientSecret: SECRET },
      cache: new MemoryTokenCache(),
    })
    server = createServer(
      createWebApp({
        client,
        publicUrl: appUrl,
        scopes: [idp.apiScope],
        apiUrl: api.url,
        sessions: new MemorySessionStore(),
        prompt: 'consent',
        log: () => {},
      }),
    )
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  })
  after(async () => {
    await closeServer(server)
    await api.close()
    await idp.close()
  })

  test('issue 18 #1: two users signed in through the web app each get their own token (the API sees each sub)', async () => {
    const alice = await signIn(appUrl, 'alice')
    const bob = await signIn(appUrl, 'bob')
    assert.notEqual(alice, bob)
    const refreshes = idp.refreshes

    const asAlice = await telemetry(appUrl, alice)
    assert.equal(asAlice.status, 200, asAlice.text)
    assert.equal(asAlice.body.user, 'alice')
    assert.equal(asAlice.body.fromCache, true, 'the token from the sign-in is served from the cache')
    assert.equal(lastSubject(api), 'alice')

    const asBob = await telemetry(appUrl, bob)
    assert.equal(asBob.status, 200, asBob.text)
    assert.equal(asBob.body.user, 'bob')
    assert.equal(lastSubject(api), 'bob')

    // Alice again after Bob signed in: her partition was not replaced by his.
    await telemetry(appUrl, alice)
    assert.equal(lastSubject(api), 'alice')
    assert.equal(idp.refreshes, refreshes, 'no refresh: both tokens came from the sign-ins')
    assert.deepEqual((await client.getAccounts()).map((a) => a.id).sort(), ['alice', 'bob'])
    await Promise.all([client.removeAccount('alice'), client.removeAccount('bob')])
  })

  test('issue 18 #2: signing one user out removes their account from the cache; the other is still served', async () => {
    const alice = await signIn(appUrl, 'alice')
    const bob = await signIn(appUrl, 'bob')
    const signOut = await fetch(`${appUrl}/signout`, { headers: { cookie: alice }, redirect: 'manual' })
    assert.equal(signOut.status, 303)
    assert.match(signOut.headers.getSetCookie().join('\n'), /sid=; Max-Age=0/)

    const asAlice = await telemetry(appUrl, alice)
    assert.equal(asAlice.status, 401, 'her old session cookie no longer works')
    assert.equal(asAlice.body.error, 'signin_required')
    assert.equal(await client.getAccount('alice'), undefined)
    await assert.rejects(client.acquireTokenSilent({ account: 'alice', scopes: [idp.apiScope] }), {
      code: 'ERR_SIGNIN_REQUIRED',
    })

    const asBob = await telemetry(appUrl, bob)
    assert.equal(asBob.status, 200, asBob.text)
    assert.equal(lastSubject(api), 'bob')
    assert.deepEqual(
      (await client.getAccounts()).map((a) => a.id),
      ['bob'],
    )
  })

  test('issue 18 #3: 50 concurrent requests for one user whose access token is due make ONE refresh at the IdP', async () => {
    const carol = await signIn(appUrl, 'carol')
    const dan = await signIn(appUrl, 'dan')
    await sleep(DUE_AFTER_MS)
    const refreshes = idp.refreshes
    const batches = api.receiver.batches.length

    const answers = await Promise.all(Array.from({ length: 50 }, () => telemetry(appUrl, carol)))

    assert.deepEqual(
      answers.map((a) => a.status),
      Array(50).fill(200),
    )
    assert.equal(idp.refreshes - refreshes, 1, 'one refresh for the 50 requests')
    const subjects = api.receiver.batches.slice(batches).map((b) => b.subject)
    assert.equal(subjects.length, 50)
    assert.ok(subjects.every((s) => s === 'carol'))
    // Dan, due as well, was not handed Carol's new token.
    assert.equal((await telemetry(appUrl, dan)).body.user, 'dan')
    assert.equal(lastSubject(api), 'dan')
  })

  test('issue 18 #3b: library errors become clean answers: a forged callback is a 400 without a stack or a token', async () => {
    const start = await fetch(`${appUrl}/signin`, { redirect: 'manual' })
    const cookie = start.headers.getSetCookie()[0]?.split(';')[0] ?? ''
    const forged = await fetch(`${appUrl}/auth/callback`, {
      method: 'POST',
      body: new URLSearchParams({ code: 'stolen', state: 'attacker', iss: idp.issuer }),
      headers: { cookie },
    })
    const text = await forged.text()
    assert.equal(forged.status, 400, text)
    assert.equal(JSON.parse(text).error, 'invalid_response')
    assertClean(text, idp)
    // The sign-in is single use: replaying the cookie finds nothing.
    const again = await fetch(`${appUrl}/auth/callback`, { method: 'POST', body: '', headers: { cookie } })
    assert.equal(again.status, 400)
    assert.equal(((await again.json()) as { error?: string }).error, 'no_signin')
  })
})

describe('issue 18 example web app, two processes sharing one redis-server', () => {
  let redis: TestRedis
  let idp: TestIdp
  let api: TestApi
  let one: AppProcess
  let two: AppProcess
  const key = randomBytes(32).toString('base64url')

  before(async () => {
    const [portOne, portTwo] = [await freePort(), await freePort()]
    redis = await startRedis()
    idp = await startTestIdp({
      accessTokenTtlSeconds: ACCESS_TOKEN_TTL,
      clients: [
        webClient([`http://127.0.0.1:${portOne}/auth/callback`, `http://127.0.0.1:${portTwo}/auth/callback`]),
      ],
    })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    const env = {
      ISSUER: idp.issuer,
      CLIENT_ID,
      CLIENT_SECRET: SECRET,
      SCOPES: idp.apiScope,
      API_URL: api.url,
      REDIS_URL: redis.url,
      TOKEN_CACHE_KEY: key,
      PROMPT: 'consent',
    }
    ;[one, two] = await Promise.all([
      startAppProcess({ ...env, PORT: String(portOne) }),
      startAppProcess({ ...env, PORT: String(portTwo) }),
    ])
  })
  after(async () => {
    await Promise.all([one?.stop(), two?.stop()])
    await api?.close()
    await idp?.close()
    await redis?.close()
  })

  test('issue 18 #4: a user signed in on one instance is served silently by the other', async () => {
    const dave = await signIn(one.url, 'dave')
    const refreshes = idp.refreshes
    const answer = await telemetry(two.url, dave)
    assert.equal(answer.status, 200, answer.text)
    assert.equal(answer.body.user, 'dave')
    assert.equal(answer.body.fromCache, true, 'the second instance used the token the first saved')
    assert.equal(lastSubject(api), 'dave')
    assert.equal(idp.refreshes, refreshes)
    // What Redis holds is sealed: no token, no user name, no verifier in clear.
    const dump = (await redis.dump()).toString('latin1')
    for (const secret of [...idp.issued.accessTokens, ...idp.issued.refreshTokens]) {
      assert.ok(!dump.includes(secret), 'no token in Redis in clear')
    }
    assert.ok(!dump.includes('dave'), 'no account name in Redis in clear')
  })

  test('issue 18 #5: RFC 9700 §4.14.2 both instances refreshing one due user at once leave the rotated grant alive', async () => {
    const judy = await signIn(one.url, 'judy')
    // Both instances have served her once (nothing left to load lazily), then her token falls due.
    assert.equal((await telemetry(one.url, judy)).status, 200)
    assert.equal((await telemetry(two.url, judy)).status, 200)
    await sleep(DUE_AFTER_MS)
    const refreshes = idp.refreshes
    // A slow IdP: the refresh is still in flight when every request of both instances has arrived.
    idp.setTokenDelay(300)
    let answers: Awaited<ReturnType<typeof telemetry>>[]
    try {
      answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => telemetry(i % 2 === 0 ? one.url : two.url, judy)),
      )
    } finally {
      idp.setTokenDelay(0)
    }
    assert.deepEqual(
      answers.map((a) => a.status),
      Array(20).fill(200),
      answers.map((a) => a.text).join('\n'),
    )
    assert.equal(idp.refreshes - refreshes, 1, 'one refresh across both instances')

    // A reused refresh token would have revoked the grant (oidc-provider's reuse detection); a third
    // instance forcing a refresh with the refresh token now in Redis shows it is alive.
    const thirdCache = new RedisTokenCache({ url: redis.url, key })
    const third = new ConfidentialClient({
      authority: idp.issuer,
      clientId: CLIENT_ID,
      credential: { clientSecret: SECRET },
      cache: thirdCache,
    })
    try {
      await thirdCache.connect()
      const forced = await third.acquireTokenSilent({
        account: 'judy',
        scopes: [idp.apiScope],
        forceRefresh: true,
      })
      assert.equal(forced.fromCache, false)
      assert.equal(forced.account.id, 'judy')
    } finally {
      await thirdCache.close()
    }
    const after = await telemetry(two.url, judy)
    assert.equal(after.status, 200, after.text)
  })

  test('issue 18 #6: Redis stopped mid-run: a due user gets a clean 503 (ERR_CACHE_UNAVAILABLE), a user with a valid token is still served', async () => {
    const frank = await signIn(one.url, 'frank')
    await sleep(DUE_AFTER_MS)
    const erin = await signIn(one.url, 'erin')
    const refreshes = idp.refreshes

    await redis.stop()

    const asErin = await telemetry(one.url, erin)
    assert.equal(asErin.status, 200, asErin.text)
    assert.equal(asErin.body.user, 'erin')
    assert.equal(lastSubject(api), 'erin')

    const asFrank = await telemetry(one.url, frank)
    assert.equal(asFrank.status, 503, asFrank.text)
    assert.equal(asFrank.body.error, 'cache_unavailable')
    assert.match(String(asFrank.body.message), /token cache redis:\/\/127\.0\.0\.1:\d+ cannot be reached/)
    assert.equal(asFrank.retryAfter, '5')
    assertClean(asFrank.text, idp)
    assert.equal(idp.refreshes, refreshes, 'nothing refreshed while the cache cannot record it')
    // The app's log line comes over its stderr pipe, which may trail the HTTP answer a little.
    for (let i = 0; i < 100 && !/GET \/telemetry: 503 ERR_CACHE_UNAVAILABLE/.test(one.stderr); i++) {
      await sleep(20)
    }
    assert.match(one.stderr, /GET \/telemetry: 503 ERR_CACHE_UNAVAILABLE/)

    // The other instance never saw Erin's session: a clean 503 as well, not a hang or a crash.
    const elsewhere = await telemetry(two.url, erin)
    assert.equal(elsewhere.status, 503, elsewhere.text)
    assertClean(elsewhere.text, idp)
  })
})
