/**
 * The device flow, discovery, refresh and revocation against the real test IdP (oidc-provider on
 * 127.0.0.1), with the user's side driven over HTTP by the headless user.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { PublicClient } from '../../src/client/public-client.js'
import { EdgeTokenError, InvalidResponseError, OAuthServerError } from '../../src/errors.js'
import { resolveAuthority } from '../../src/oauth/authority.js'
import {
  type PollEvent,
  pollDeviceAuthorization,
  startDeviceAuthorization,
} from '../../src/oauth/grants/device.js'
import { refreshTokenGrant, revokeToken } from '../../src/oauth/grants/refresh.js'
import type { MetadataCache } from '../../src/oauth/types.js'
import { approveDevice, denyDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function memoryCache() {
  const entries = new Map<string, { value: unknown; ttl: number }>()
  const cache: MetadataCache = {
    get: async (key) => entries.get(key)?.value,
    set: async (key, value, ttl) => {
      entries.set(key, { value, ttl })
    },
  }
  return { cache, entries }
}

function noSecretIn(idp: TestIdp, text: string): void {
  for (const secret of [...idp.issued.deviceCodes, ...idp.issued.accessTokens, ...idp.issued.refreshTokens]) {
    assert.ok(!text.includes(secret), 'a secret appeared in an error')
  }
}

describe('device flow against the test IdP (interval 1 s)', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1 })
  })
  after(() => idp.close())

  test('approve: tokens, verified id_token claims and the account', async (t) => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [idp.apiScope] })
    assert.equal(flow.intervalSeconds, 1)
    assert.match(flow.verificationUri, /^http:\/\/127\.0\.0\.1:\d+\/device$/)
    assert.ok(flow.verificationUriComplete?.includes('user_code='), 'the complete URI carries the user code')
    assert.ok(
      !JSON.stringify(flow).includes(idp.issued.deviceCodes.at(-1) ?? '?'),
      'no device code in the flow',
    )

    const started = Date.now()
    let approvedAt = 0
    const approval = wait(3500)
      .then(() => approveDevice(idp.issuer, flow.userCode, { login: 'alice' }))
      .then(() => {
        approvedAt = Date.now()
      })
    // Real waits, recorded: what the client asks for is checked exactly, the real timing (which a
    // loaded machine only stretches) from below.
    const waits: number[] = []
    const { tokens, account } = await flow.poll({
      sleep: async (ms, signal) => {
        waits.push(ms)
        await delay(ms, undefined, { signal })
      },
    })
    await approval
    const pendingMs = approvedAt - started
    assert.equal(tokens.tokenType, 'bearer')
    assert.ok(tokens.accessToken.length > 20, 'an access token')
    assert.ok(tokens.refreshToken, 'offline_access gives a refresh token')
    assert.ok(tokens.expiresAt > Date.now() + 200_000, 'expiry from expires_in')
    assert.deepEqual(tokens.scopes, [idp.apiScope])
    assert.equal(tokens.idTokenClaims?.sub, 'alice')
    assert.equal(tokens.idTokenClaims?.aud, idp.publicClientId)
    assert.equal(tokens.idTokenClaims?.iss, idp.issuer)
    assert.deepEqual(account, { id: 'alice', username: 'alice', tenant: undefined, issuer: idp.issuer })

    const hash = idp.polls.at(-1)?.deviceCodeHash
    const polls = idp.polls.filter((p) => p.deviceCodeHash === hash)
    const pending = polls.filter((p) => p.error === 'authorization_pending').length
    const expected = Math.ceil(pendingMs / 1000 / flow.intervalSeconds)
    t.diagnostic(
      `polls while pending: ${pending} in T = ${(pendingMs / 1000).toFixed(2)} s at interval ${flow.intervalSeconds} s; ceil(T/interval) = ${expected} (first poll waits one interval, so floor(T/interval) is the ideal)`,
    )
    // Never faster than the interval (at most ceil(T/interval)), and never waiting longer than it:
    // one wait of exactly the interval before each poll.
    assert.ok(pending >= 1, 'polled while pending')
    assert.ok(pending <= expected, `${pending} polls > ${expected}`)
    assert.deepEqual(
      waits,
      polls.map(() => flow.intervalSeconds * 1000),
      'one wait of the interval before each poll',
    )
    assert.equal(polls.at(-1)?.status, 200)
    // §3.5: the first poll waited one interval.
    assert.ok((polls[0]?.at ?? 0) - started >= 950, 'the first poll waited one interval')
    for (let i = 1; i < polls.length; i += 1) {
      assert.ok((polls[i]?.at ?? 0) - (polls[i - 1]?.at ?? 0) >= 950, 'polls no closer than the interval')
    }
  })

  test('deny at the code confirmation: ERR_ACCESS_DENIED', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [idp.apiScope] })
    await denyDevice(idp.issuer, flow.userCode, 'confirm')
    await assert.rejects(flow.poll(), (err: unknown) => {
      assert.ok(err instanceof OAuthServerError, 'an OAuthServerError')
      assert.equal(err.code, 'ERR_ACCESS_DENIED')
      assert.equal(err.error, 'access_denied')
      noSecretIn(idp, `${err.message} ${JSON.stringify(err)}`)
      return true
    })
  })

  test('deny at consent: ERR_ACCESS_DENIED', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [idp.apiScope] })
    await denyDevice(idp.issuer, flow.userCode, 'consent')
    await assert.rejects(flow.poll(), { code: 'ERR_ACCESS_DENIED' })
  })

  test('cancel through the signal: ERR_CANCELLED', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [] })
    await assert.rejects(flow.poll({ signal: AbortSignal.timeout(1500) }), { code: 'ERR_CANCELLED' })
  })

  test('refresh with rotation; a reused refresh token means sign-in required', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [idp.apiScope] })
    await approveDevice(idp.issuer, flow.userCode)
    const { tokens } = await flow.poll()
    const first = tokens.refreshToken
    assert.ok(first, 'a refresh token')
    const before = idp.refreshes
    const renewed = await client.refresh(first, [idp.apiScope])
    assert.equal(idp.refreshes, before + 1)
    assert.ok(renewed.refreshToken && renewed.refreshToken !== first, 'rotated')
    assert.notEqual(renewed.accessToken, tokens.accessToken)
    // oidc-provider sends no id_token on refresh; when one comes, it is verified like at sign-in.
    if (renewed.idToken) assert.equal(renewed.idTokenClaims?.sub, 'device-user')
    await assert.rejects(client.refresh(first, [idp.apiScope]), (err: unknown) => {
      assert.ok(err instanceof OAuthServerError, 'an OAuthServerError')
      assert.equal(err.code, 'ERR_SIGNIN_REQUIRED')
      assert.equal(err.error, 'invalid_grant')
      noSecretIn(idp, `${err.message} ${JSON.stringify(err)}`)
      return true
    })
  })

  test('revocation (RFC 7009) ends the refresh token', async () => {
    const server = await resolveAuthority(idp.issuer)
    const client = { clientId: idp.publicClientId }
    const flow = await startDeviceAuthorization(server, client, ['openid', 'offline_access', idp.apiScope])
    await approveDevice(idp.issuer, flow.userCode)
    const tokens = await pollDeviceAuthorization(server, client, flow)
    assert.ok(tokens.refreshToken, 'a refresh token')
    assert.equal(await revokeToken(server, client, tokens.refreshToken, 'refresh_token'), true)
    await assert.rejects(refreshTokenGrant(server, client, tokens.refreshToken, []), {
      code: 'ERR_SIGNIN_REQUIRED',
    })
  })
})

describe('discovery against the test IdP', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp()
  })
  after(() => idp.close())

  test('endpoints come from the discovery document; the issuer matches', async () => {
    const server = await resolveAuthority(`${idp.issuer}/`)
    assert.equal(server.issuer, idp.issuer)
    assert.equal(server.dialect, 'oidc')
    assert.equal(server.tokenEndpoint, `${idp.issuer}/token`)
    assert.equal(server.deviceAuthorizationEndpoint, `${idp.issuer}/device/auth`)
    assert.equal(server.jwksUri, `${idp.issuer}/jwks`)
    assert.equal(server.revocationEndpoint, `${idp.issuer}/token/revocation`)
  })

  test('an issuer that is not the authority is rejected', async () => {
    // Same server, other name: the document says 127.0.0.1, the authority says localhost.
    await assert.rejects(resolveAuthority(`http://localhost:${idp.port}`), (err: unknown) => {
      assert.ok(err instanceof InvalidResponseError, 'an InvalidResponseError')
      assert.match(err.message, /names issuer http:\/\/127\.0\.0\.1:\d+, not the configured authority/)
      return true
    })
  })

  test('the document is cached with a 24 h TTL and served from the cache', async () => {
    const { cache, entries } = memoryCache()
    const first = await resolveAuthority(idp.issuer, { cache })
    assert.equal(entries.size, 1)
    assert.equal([...entries.values()][0]?.ttl, 86400)
    await idp.close()
    const second = await resolveAuthority(idp.issuer, { cache })
    assert.deepEqual(second, first)
    idp = await startTestIdp()
  })

  test('an unreachable authority is ERR_UNAVAILABLE naming the host', async () => {
    const dead = await startTestIdp()
    const issuer = dead.issuer
    await dead.close()
    await assert.rejects(resolveAuthority(issuer), (err: unknown) => {
      assert.ok(err instanceof EdgeTokenError, 'an EdgeTokenError')
      assert.equal(err.code, 'ERR_UNAVAILABLE')
      assert.ok(err.message.includes(new URL(issuer).host), 'the message names the host')
      return true
    })
  })
})

describe('RFC 8628 rules against the test IdP', () => {
  test('§3.5 no poll after expiry (device code TTL 3 s)', async (t) => {
    const idp = await startTestIdp({ interval: 1, deviceCodeTtlSeconds: 3 })
    t.after(() => idp.close())
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [] })
    await assert.rejects(flow.poll(), { code: 'ERR_EXPIRED' })
    assert.ok(Date.now() >= flow.expiresAt - 5, 'polling ended at the expiry')
    assert.ok(idp.polls.length >= 1, 'it polled')
    assert.ok(
      idp.polls.every((p) => p.at < flow.expiresAt),
      'no poll at or after the expiry',
    )
    assert.ok(
      idp.polls.every((p) => p.error === 'authorization_pending'),
      'every poll was pending',
    )
    t.diagnostic(`polls in a 3 s code life at interval 1 s: ${idp.polls.length} (ceil(T/interval) = 3)`)
    assert.ok(idp.polls.length <= 3, 'at most ceil(T/interval) polls')
  })

  test('§3.5 slow_down: the gap grows by 5 s and stays grown', { timeout: 60_000 }, async (t) => {
    const idp = await startTestIdp({ interval: 1 })
    t.after(() => idp.close())
    const server = await resolveAuthority(idp.issuer)
    const client = { clientId: idp.publicClientId }
    const flow = await startDeviceAuthorization(server, client, [])
    assert.equal(flow.intervalSeconds, 1)
    // Which answer each poll gets must not depend on this machine's speed: the server wants an hour
    // between polls until it has said slow_down once (so the second poll gets it, however late),
    // then 1 s (so the 6 s gaps that follow satisfy it, however early a timer fires).
    idp.setInterval(3600)
    idp.setSlowDown(true)
    const waits: number[] = []
    const events: PollEvent[] = []
    const controller = new AbortController()
    const polling = pollDeviceAuthorization(server, client, flow, {
      signal: controller.signal,
      // Real waits, recorded: the gaps the client asks for are checked exactly, the real ones
      // (which a loaded machine only lengthens) from below.
      sleep: async (ms, signal) => {
        waits.push(ms)
        await delay(ms, undefined, { signal })
      },
      onPoll: (event) => {
        events.push(event)
        if (event.outcome === 'slow_down') idp.setInterval(1)
        if (events.length === 4) controller.abort()
      },
    })
    await assert.rejects(polling, { code: 'ERR_CANCELLED' })
    assert.deepEqual(
      idp.polls.map((p) => p.error),
      ['authorization_pending', 'slow_down', 'authorization_pending', 'authorization_pending'],
    )
    assert.deepEqual(waits, [1000, 1000, 6000, 6000], 'one interval, then 1 + 5 s from the slow_down on')
    assert.deepEqual(
      events.map((e) => e.intervalSeconds),
      [1, 6, 6, 6],
    )
    const at = idp.polls.map((p) => p.at)
    const gaps = at.slice(1).map((v, i) => v - (at[i] ?? 0))
    t.diagnostic(`gaps between polls (ms): ${gaps.join(', ')}`)
    assert.ok((gaps[0] ?? 0) >= 950, 'before slow_down: at least the 1 s interval')
    assert.ok((gaps[1] ?? 0) >= 5950, 'after slow_down: at least 1 + 5 s')
    assert.ok((gaps[2] ?? 0) >= 5950, 'and still at least 6 s')
  })
})
