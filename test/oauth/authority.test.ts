/**
 * Authority resolution with hostile or broken discovery documents (MockAgent), and the metadata
 * cache. The happy path against a real IdP is in idp.test.ts, Entra ID in entra.test.ts.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { InvalidResponseError, UnavailableError } from '../../src/errors.js'
import { parseAuthority, resolveAuthority, validateEntraMetadata } from '../../src/oauth/authority.js'
import { signInScopes, withOfflineAccess } from '../../src/oauth/scopes.js'
import type { MetadataCache } from '../../src/oauth/types.js'
import { JSON_HEADERS, mockHttp } from '../support/mock-http.js'

const ORIGIN = 'https://idp.test'
const WELL_KNOWN = '/tenant-a/.well-known/openid-configuration'
const AUTHORITY = `${ORIGIN}/tenant-a`

const doc = (extra: Record<string, unknown> = {}) => ({
  issuer: AUTHORITY,
  token_endpoint: `${AUTHORITY}/token`,
  device_authorization_endpoint: `${AUTHORITY}/device`,
  jwks_uri: `${AUTHORITY}/jwks`,
  ...extra,
})

function memoryCache(initial?: [string, unknown]) {
  const entries = new Map<string, { value: unknown; ttl: number }>()
  if (initial) entries.set(initial[0], { value: initial[1], ttl: 1 })
  const cache: MetadataCache = {
    get: async (key) => entries.get(key)?.value,
    set: async (key, value, ttl) => {
      entries.set(key, { value, ttl })
    },
  }
  return { cache, entries }
}

describe('OIDC discovery', () => {
  test('the authority with a trailing slash matches the issuer without one (normalised once)', async (t) => {
    const agent = mockHttp(t)
    agent.get(ORIGIN).intercept({ path: WELL_KNOWN }).reply(200, doc(), { headers: JSON_HEADERS })
    const server = await resolveAuthority(`${AUTHORITY}/`)
    assert.equal(server.issuer, AUTHORITY)
    assert.equal(server.tokenEndpoint, `${AUTHORITY}/token`)
    assert.ok(Object.isFrozen(server))
  })

  const hostile = (
    name: string,
    reply: { status?: number; body: unknown; headers?: Record<string, string> },
    message: RegExp,
  ) =>
    test(name, async (t) => {
      const agent = mockHttp(t)
      agent
        .get(ORIGIN)
        .intercept({ path: WELL_KNOWN })
        .reply(
          reply.status ?? 200,
          typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body),
          {
            headers: reply.headers ?? JSON_HEADERS,
          },
        )
      await assert.rejects(resolveAuthority(AUTHORITY), (err: unknown) => {
        assert.ok(err instanceof Error && 'code' in err, String(err))
        assert.match(err.message, message)
        return true
      })
    })

  hostile(
    'an issuer mismatch is rejected',
    { body: doc({ issuer: 'https://evil.test/tenant-a' }) },
    /names issuer https:\/\/evil\.test\/tenant-a, not the configured authority/,
  )
  hostile('a missing issuer is rejected', { body: doc({ issuer: undefined }) }, /issuer is missing/)
  hostile(
    'a missing token_endpoint is rejected',
    { body: doc({ token_endpoint: undefined }) },
    /token_endpoint/,
  )
  hostile('a missing jwks_uri is rejected', { body: doc({ jwks_uri: undefined }) }, /jwks_uri/)
  hostile(
    'an http token endpoint on another host is rejected',
    { body: doc({ token_endpoint: 'http://idp.test/token' }) },
    /token_endpoint must be an https:\/\/ URL/,
  )
  hostile(
    'a javascript: device endpoint is rejected',
    { body: doc({ device_authorization_endpoint: 'javascript:alert(1)' }) },
    /device_authorization_endpoint/,
  )
  hostile(
    'an HTML page (captive portal) is rejected as such',
    { body: '<html><body>Accept the terms</body></html>', headers: { 'content-type': 'text/html' } },
    /HTML page, not JSON \(captive portal\?\)/,
  )
  hostile('a 404 is an invalid response', { status: 404, body: { error: 'nope' } }, /answered 404/)
  hostile('a JSON array is rejected', { body: [1] }, /not a JSON object/)

  test('a redirect to another host is not followed', async (t) => {
    const agent = mockHttp(t)
    agent
      .get(ORIGIN)
      .intercept({ path: WELL_KNOWN })
      .reply(302, '', { headers: { location: 'https://evil.test/.well-known/openid-configuration' } })
    await assert.rejects(resolveAuthority(AUTHORITY), { code: 'ERR_INVALID_RESPONSE', message: /redirect/ })
  })

  test('a cached document is used without a request (and re-validated)', async (t) => {
    mockHttp(t)
    const key = `openid-configuration ${AUTHORITY}/.well-known/openid-configuration`
    const { cache } = memoryCache([key, doc()])
    const server = await resolveAuthority(AUTHORITY, { cache })
    assert.equal(server.tokenEndpoint, `${AUTHORITY}/token`)
  })

  test('a tampered cached document is ignored and fetched again; the TTL is configurable', async (t) => {
    const agent = mockHttp(t)
    agent.get(ORIGIN).intercept({ path: WELL_KNOWN }).reply(200, doc(), { headers: JSON_HEADERS })
    const key = `openid-configuration ${AUTHORITY}/.well-known/openid-configuration`
    const { cache, entries } = memoryCache([key, doc({ token_endpoint: 'http://evil.test/token' })])
    const server = await resolveAuthority(AUTHORITY, { cache, cacheTtlSeconds: 600 })
    assert.equal(server.tokenEndpoint, `${AUTHORITY}/token`)
    assert.equal(entries.get(key)?.ttl, 600)
  })

  test('a failing cache does not fail resolution', async (t) => {
    const agent = mockHttp(t)
    agent.get(ORIGIN).intercept({ path: WELL_KNOWN }).reply(200, doc(), { headers: JSON_HEADERS })
    const cache: MetadataCache = {
      get: () => Promise.reject(new Error('EACCES')),
      set: () => Promise.reject(new Error('ENOSPC')),
    }
    assert.equal((await resolveAuthority(AUTHORITY, { cache })).issuer, AUTHORITY)
  })
})

function recordingSleep() {
  const sleeps: number[] = []
  return {
    sleeps,
    sleep: async (ms: number) => {
      sleeps.push(ms)
    },
  }
}

describe('discovery retries (bounded)', () => {
  const down = (status: number, retryAfter?: string) => ({
    statusCode: status,
    data: 'down',
    responseOptions: {
      headers: { 'content-type': 'text/plain', ...(retryAfter ? { 'retry-after': retryAfter } : {}) },
    },
  })

  test('RFC 9110 §10.2.3: a 503 with Retry-After is retried after that many seconds', async (t) => {
    const pool = mockHttp(t).get(ORIGIN)
    pool.intercept({ path: WELL_KNOWN }).reply(() => down(503, '7'))
    pool.intercept({ path: WELL_KNOWN }).reply(200, doc(), { headers: JSON_HEADERS })
    const { sleeps, sleep } = recordingSleep()
    const server = await resolveAuthority(AUTHORITY, { sleep })
    assert.equal(server.issuer, AUTHORITY)
    assert.deepEqual(sleeps, [7000])
  })

  test('RFC 9110 §10.2.3: 429 on every attempt ends after 3 with ERR_UNAVAILABLE keeping Retry-After', async (t) => {
    const pool = mockHttp(t).get(ORIGIN)
    pool
      .intercept({ path: WELL_KNOWN })
      .reply(() => down(429, '2'))
      .times(3)
    const { sleeps, sleep } = recordingSleep()
    await assert.rejects(resolveAuthority(AUTHORITY, { sleep }), (err: unknown) => {
      assert.ok(err instanceof UnavailableError)
      assert.equal(err.status, 429)
      assert.equal(err.retryAfterSeconds, 2)
      return true
    })
    assert.deepEqual(sleeps, [2000, 2000])
  })

  test('without Retry-After a 503 is retried after 1 s, then 2 s', async (t) => {
    const pool = mockHttp(t).get(ORIGIN)
    pool
      .intercept({ path: WELL_KNOWN })
      .reply(() => down(503))
      .times(2)
    pool.intercept({ path: WELL_KNOWN }).reply(200, doc(), { headers: JSON_HEADERS })
    const { sleeps, sleep } = recordingSleep()
    await resolveAuthority(AUTHORITY, { sleep })
    assert.deepEqual(sleeps, [1000, 2000])
  })

  test('a Retry-After longer than 30 s is not waited for: the error carries it at once', async (t) => {
    mockHttp(t)
      .get(ORIGIN)
      .intercept({ path: WELL_KNOWN })
      .reply(() => down(503, '120'))
    const { sleeps, sleep } = recordingSleep()
    await assert.rejects(resolveAuthority(AUTHORITY, { sleep }), (err: unknown) => {
      assert.ok(err instanceof UnavailableError)
      assert.equal(err.retryAfterSeconds, 120)
      assert.match(err.message, /answered 503/)
      return true
    })
    assert.deepEqual(sleeps, [])
  })

  test('the wait between attempts ends with ERR_CANCELLED when the signal aborts', async (t) => {
    mockHttp(t)
      .get(ORIGIN)
      .intercept({ path: WELL_KNOWN })
      .reply(() => down(503, '5'))
    const controller = new AbortController()
    const sleep = async (_ms: number, signal: AbortSignal | undefined) => {
      controller.abort()
      if (signal?.aborted) throw signal.reason
    }
    await assert.rejects(resolveAuthority(AUTHORITY, { sleep, signal: controller.signal }), {
      code: 'ERR_CANCELLED',
    })
  })
})

describe('Entra ID metadata', () => {
  const parsed = { host: 'login.microsoftonline.com', tenant: 'common' }
  const entraDoc = (issuer: string) => ({
    issuer,
    token_endpoint: 'https://login.microsoftonline.com/common/oauth2/v2.0/token',
    jwks_uri: 'https://login.microsoftonline.com/common/discovery/v2.0/keys',
  })

  test('the device endpoint defaults to /oauth2/v2.0/devicecode', () => {
    const server = validateEntraMetadata(
      entraDoc('https://login.microsoftonline.com/{tenantid}/v2.0'),
      parsed,
    )
    assert.equal(
      server.deviceAuthorizationEndpoint,
      'https://login.microsoftonline.com/common/oauth2/v2.0/devicecode',
    )
  })

  test('an issuer on a foreign host is rejected', () => {
    assert.throws(
      () => validateEntraMetadata(entraDoc('https://evil.test/{tenantid}/v2.0'), parsed),
      InvalidResponseError,
    )
    assert.throws(
      () =>
        validateEntraMetadata(entraDoc('https://login.microsoftonline.com/{tenantid}/v2.0'), {
          ...parsed,
          tenant: 'contoso.com',
        }),
      InvalidResponseError,
    )
  })

  test('sovereign clouds parse as entra', () => {
    assert.equal(parseAuthority('https://login.microsoftonline.us/contoso.us').kind, 'entra')
  })
})

describe('scopes', () => {
  test('withOfflineAccess adds offline_access once, drops duplicates and blanks', () => {
    assert.deepEqual(withOfflineAccess(['a', 'a', ' ', 'b']), ['a', 'b', 'offline_access'])
    assert.deepEqual(withOfflineAccess(['offline_access', 'a']), ['offline_access', 'a'])
    assert.ok(Object.isFrozen(withOfflineAccess([])))
  })

  test('signInScopes adds openid and profile in front', () => {
    assert.deepEqual(signInScopes(['api']), ['openid', 'profile', 'api', 'offline_access'])
    assert.deepEqual(signInScopes(['openid', 'api']), ['profile', 'openid', 'api', 'offline_access'])
  })
})
