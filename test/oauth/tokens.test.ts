/**
 * Token endpoint responses (RFC 6749 §5.1/§5.2), id_token verification and account derivation,
 * with the JWKS served by a MockAgent.
 */
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { beforeEach, describe, type TestContext, test } from 'node:test'
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose'
import { InvalidResponseError, OAuthServerError, UnavailableError } from '../../src/errors.js'
import type { AuthorizationServer } from '../../src/oauth/authority.js'
import type { HttpResponse } from '../../src/oauth/http.js'
import { clearJwksCache } from '../../src/oauth/jwks.js'
import {
  accountFromTokenSet,
  errorCodeFor,
  processTokenResponse,
  verifyIdToken,
} from '../../src/oauth/tokens.js'
import { JSON_HEADERS, mockHttp } from '../support/mock-http.js'

const ORIGIN = 'https://idp.test'
const server: AuthorizationServer = Object.freeze({
  issuer: ORIGIN,
  dialect: 'oidc',
  tokenEndpoint: `${ORIGIN}/token`,
  jwksUri: `${ORIGIN}/jwks`,
})
const CLIENT = 'client-1'
const NOW = 1_800_000_000_000

function response(
  status: number,
  body: unknown,
  headers: Record<string, string> = JSON_HEADERS,
): HttpResponse {
  return {
    url: new URL(`${ORIGIN}/token`),
    status,
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  }
}

const options = {
  grant: 'device_code' as const,
  requestedScopes: ['a', 'b'],
  clientId: CLIENT,
  now: () => NOW,
}

describe('RFC 6749 §5.1 token response', () => {
  test('a valid response: Bearer lower-cased, expires_in made absolute, scope parsed', async () => {
    const tokens = await processTokenResponse(
      server,
      response(200, {
        access_token: 'AT',
        token_type: 'Bearer',
        expires_in: 3599,
        scope: 'x y',
        refresh_token: 'RT',
      }),
      options,
    )
    assert.equal(tokens.tokenType, 'bearer')
    assert.equal(tokens.expiresAt, NOW + 3_599_000)
    assert.deepEqual(tokens.scopes, ['x', 'y'])
    assert.equal(tokens.refreshToken, 'RT')
    assert.equal(tokens.idTokenClaims, undefined)
    assert.ok(Object.isFrozen(tokens))
  })

  test('expires_in sent as a string is normalised; scope absent means the requested scopes', async () => {
    const tokens = await processTokenResponse(
      server,
      response(200, { access_token: 'AT', token_type: 'bearer', expires_in: '300' }),
      options,
    )
    assert.equal(tokens.expiresAt, NOW + 300_000)
    assert.deepEqual(tokens.scopes, ['a', 'b'])
  })

  const invalid = (name: string, body: unknown, field: RegExp) =>
    test(name, async () => {
      await assert.rejects(processTokenResponse(server, response(200, body), options), (err: unknown) => {
        assert.ok(err instanceof InvalidResponseError)
        assert.match(err.message, field)
        assert.ok(!err.message.includes('SECRET'))
        return true
      })
    })
  invalid('access_token missing', { token_type: 'Bearer', expires_in: 1 }, /access_token/)
  invalid(
    'access_token not a string',
    { access_token: 7, token_type: 'Bearer', expires_in: 1 },
    /access_token/,
  )
  invalid('token_type missing', { access_token: 'SECRET', expires_in: 1 }, /token_type/)
  invalid('token_type not bearer', { access_token: 'SECRET', token_type: 'mac', expires_in: 1 }, /token_type/)
  invalid('expires_in zero', { access_token: 'SECRET', token_type: 'Bearer', expires_in: 0 }, /expires_in/)
  invalid(
    'expires_in negative',
    { access_token: 'SECRET', token_type: 'Bearer', expires_in: -5 },
    /expires_in/,
  )
  invalid(
    'expires_in not a number',
    { access_token: 'SECRET', token_type: 'Bearer', expires_in: 'soon' },
    /expires_in/,
  )
  invalid('scope not a string', { access_token: 'SECRET', token_type: 'Bearer', scope: ['a'] }, /scope/)
  invalid(
    'refresh_token not a string',
    { access_token: 'SECRET', token_type: 'Bearer', refresh_token: 1 },
    /refresh_token/,
  )

  test('an HTML page instead of JSON is a clear error', async () => {
    await assert.rejects(
      processTokenResponse(
        server,
        response(200, '<html>Sign in to Wi-Fi</html>', { 'content-type': 'text/html' }),
        options,
      ),
      { code: 'ERR_INVALID_RESPONSE', message: /HTML page, not JSON \(captive portal\?\)/ },
    )
  })
})

describe('RFC 6749 §5.2 error responses', () => {
  test('error codes map to stable codes', () => {
    assert.equal(errorCodeFor('access_denied', 'device_code'), 'ERR_ACCESS_DENIED')
    assert.equal(errorCodeFor('authorization_declined', 'device_code'), 'ERR_ACCESS_DENIED')
    assert.equal(errorCodeFor('expired_token', 'device_code'), 'ERR_EXPIRED')
    assert.equal(errorCodeFor('invalid_grant', 'refresh_token'), 'ERR_SIGNIN_REQUIRED')
    assert.equal(errorCodeFor('invalid_grant', 'device_code'), 'ERR_OAUTH')
    assert.equal(errorCodeFor('invalid_client', 'refresh_token'), 'ERR_CONFIG')
    assert.equal(
      errorCodeFor('invalid_scope', 'refresh_token'),
      'ERR_CONFIG',
      'token --scope outside the grant',
    )
    assert.equal(errorCodeFor('server_error', 'refresh_token'), 'ERR_OAUTH')
    assert.equal(errorCodeFor('invalid_grant', 'other'), 'ERR_OAUTH')
  })

  test('client configuration errors from the device and token endpoints are ERR_CONFIG (exit 2)', () => {
    for (const error of [
      'invalid_client',
      'unauthorized_client',
      'invalid_scope',
      'unsupported_grant_type',
      'invalid_request',
      'invalid_target',
    ]) {
      assert.equal(errorCodeFor(error, 'device_code'), 'ERR_CONFIG', error)
      assert.equal(errorCodeFor(error, 'other'), 'ERR_CONFIG', error)
    }
  })

  test("a configuration error keeps the server's error and description in the message", async () => {
    await assert.rejects(
      processTokenResponse(
        server,
        response(401, { error: 'invalid_client', error_description: 'AADSTS7000215: bad secret' }),
        options,
      ),
      (err: unknown) => {
        assert.ok(err instanceof OAuthServerError)
        assert.equal(err.code, 'ERR_CONFIG')
        assert.equal(err.category, 'config')
        assert.equal(err.error, 'invalid_client')
        assert.match(err.message, /401 invalid_client: AADSTS7000215: bad secret/)
        return true
      },
    )
  })

  test('an error body becomes an OAuthServerError with description, status, hidden body', async () => {
    const body = {
      error: 'invalid_grant',
      error_description: 'refresh token revoked',
      error_uri: 'https://e',
    }
    await assert.rejects(
      processTokenResponse(server, response(400, body), { ...options, grant: 'refresh_token' }),
      (err: unknown) => {
        assert.ok(err instanceof OAuthServerError)
        assert.equal(err.code, 'ERR_SIGNIN_REQUIRED')
        assert.equal(err.category, 'signin_required')
        assert.equal(err.error, 'invalid_grant')
        assert.equal(err.errorDescription, 'refresh token revoked')
        assert.equal(err.status, 400)
        assert.deepEqual(err.body, body)
        assert.ok(!Object.keys(err).includes('body'))
        return true
      },
    )
  })

  test('a 400 without an error parameter is an invalid response', async () => {
    await assert.rejects(processTokenResponse(server, response(400, { oops: true }), options), {
      code: 'ERR_INVALID_RESPONSE',
    })
  })

  test('RFC 9110 §10.2.3 429 and 5xx are unavailable, with Retry-After', async () => {
    await assert.rejects(
      processTokenResponse(server, response(429, '', { 'retry-after': '120' }), options),
      (err: unknown) =>
        err instanceof UnavailableError && err.retryAfterSeconds === 120 && err.status === 429,
    )
    await assert.rejects(
      processTokenResponse(
        server,
        response(502, '<html>bad gateway</html>', { 'content-type': 'text/html' }),
        options,
      ),
      (err: unknown) => err instanceof UnavailableError && err.status === 502,
    )
  })
})

describe('id_token verification', () => {
  let keys: { privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']; jwk: JWK }
  beforeEach(async () => {
    clearJwksCache()
    keys ??= await (async () => {
      const pair = await generateKeyPair('ES256', { extractable: true })
      return {
        privateKey: pair.privateKey,
        jwk: { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' },
      }
    })()
  })

  const sign = (
    claims: Record<string, unknown> = {},
    header: { alg: string; kid?: string } = { alg: 'ES256', kid: 'k1' },
  ) => {
    const iat = Math.floor(NOW / 1000)
    return new SignJWT({ sub: 'user-1', iat, exp: iat + 600, ...claims })
      .setProtectedHeader(header)
      .setIssuer((claims.iss as string | undefined) ?? ORIGIN)
      .setAudience((claims.aud as string | undefined) ?? CLIENT)
      .sign(keys.privateKey)
  }

  function serveJwks(t: TestContext, ...sets: JWK[][]) {
    const agent = mockHttp(t)
    for (const set of sets) {
      agent.get(ORIGIN).intercept({ path: '/jwks' }).reply(200, { keys: set }, { headers: JSON_HEADERS })
    }
    return agent
  }

  test('a valid id_token gives its claims', async (t) => {
    serveJwks(t, [keys.jwk])
    const claims = await verifyIdToken(server, CLIENT, await sign({ preferred_username: 'u' }), {
      now: () => NOW,
    })
    assert.equal(claims.sub, 'user-1')
    assert.equal(claims.preferred_username, 'u')
  })

  test('the token response sets idTokenClaims only after verification', async (t) => {
    serveJwks(t, [keys.jwk])
    const tokens = await processTokenResponse(
      server,
      response(200, { access_token: 'AT', token_type: 'Bearer', expires_in: 60, id_token: await sign() }),
      options,
    )
    assert.equal(tokens.idTokenClaims?.sub, 'user-1')
  })

  const rejects = (name: string, make: () => Promise<string>, reason: RegExp, now = NOW) =>
    test(`OIDC Core §3.1.3.7: ${name}`, async (t) => {
      serveJwks(t, [keys.jwk])
      await assert.rejects(
        verifyIdToken(server, CLIENT, await make(), { now: () => now }),
        (err: unknown) => {
          assert.ok(err instanceof Error && 'code' in err)
          assert.equal(err.code, 'ERR_JWT_INVALID')
          assert.match(err.message, reason)
          return true
        },
      )
    })
  rejects('wrong audience', () => sign({ aud: 'someone-else' }), /aud/)
  rejects('wrong issuer', () => sign({ iss: 'https://evil.test' }), /iss/)
  rejects('expired beyond the 60 s skew', () => sign(), /exp/, NOW + 661_000)
  rejects('issued in the future beyond the skew', () => sign({ iat: Math.floor(NOW / 1000) + 120 }), /iat/)

  test('OIDC Core §3.1.3.7: expiry within the 60 s clock skew is accepted', async (t) => {
    serveJwks(t, [keys.jwk])
    const claims = await verifyIdToken(server, CLIENT, await sign(), { now: () => NOW + 650_000 })
    assert.equal(claims.sub, 'user-1')
  })

  test('OIDC Core §3.1.3.7: an HMAC-signed id_token is refused (asymmetric algorithms only)', async (t) => {
    mockHttp(t)
    const secret = new TextEncoder().encode('x'.repeat(32))
    const forged = await new SignJWT({ sub: 'admin' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(ORIGIN)
      .setAudience(CLIENT)
      .setIssuedAt(Math.floor(NOW / 1000))
      .setExpirationTime(Math.floor(NOW / 1000) + 60)
      .sign(secret)
    // Refused on its header: no key is even looked up (the mock allows no request).
    await assert.rejects(verifyIdToken(server, CLIENT, forged, { now: () => NOW }), {
      code: 'ERR_JWT_INVALID',
    })
  })

  test('OIDC Core §3.1.3.7: an unsigned (alg none) id_token is refused', async (t) => {
    mockHttp(t)
    const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
    const iat = Math.floor(NOW / 1000)
    const unsigned = `${enc({ alg: 'none' })}.${enc({ iss: ORIGIN, aud: CLIENT, sub: 'x', iat, exp: iat + 60 })}.`
    await assert.rejects(verifyIdToken(server, CLIENT, unsigned, { now: () => NOW }), {
      code: 'ERR_JWT_INVALID',
    })
  })

  test('OIDC Core §3.1.3.7: a token signed by another key is refused', async (t) => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    serveJwks(t, [keys.jwk])
    const token = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ORIGIN)
      .setAudience(CLIENT)
      .setIssuedAt(Math.floor(NOW / 1000))
      .setExpirationTime(Math.floor(NOW / 1000) + 60)
      .sign(other.privateKey)
    await assert.rejects(verifyIdToken(server, CLIENT, token, { now: () => NOW }), {
      code: 'ERR_JWT_INVALID',
      message: /signature/i,
    })
  })

  test('an unknown kid refetches the JWKS once (key rotation), not within the cooldown', async (t) => {
    const rotated = await generateKeyPair('ES256', { extractable: true })
    const rotatedJwk = { ...(await exportJWK(rotated.publicKey)), kid: 'k2', alg: 'ES256' }
    serveJwks(t, [keys.jwk], [keys.jwk, rotatedJwk])
    const iat = Math.floor(NOW / 1000)
    const byK2 = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k2' })
      .setIssuer(ORIGIN)
      .setAudience(CLIENT)
      .setIssuedAt(iat)
      .setExpirationTime(iat + 600)
      .sign(rotated.privateKey)
    // First fetch caches [k1]; within the cooldown an unknown kid does not refetch.
    assert.equal((await verifyIdToken(server, CLIENT, await sign(), { now: () => NOW })).sub, 'user-1')
    await assert.rejects(verifyIdToken(server, CLIENT, byK2, { now: () => NOW + 1000 }), {
      code: 'ERR_JWT_INVALID',
    })
    // After the cooldown the JWKS is fetched again and the rotated key found.
    const claims = await verifyIdToken(server, CLIENT, byK2, { now: () => NOW + 60_000 })
    assert.equal(claims.sub, 'x')
  })

  test('Entra {tenantid} issuer template is filled from tid', async (t) => {
    const tid = '72f988bf-86f1-41af-91ab-2d7cd011db47'
    const entra: AuthorizationServer = {
      ...server,
      dialect: 'entra',
      issuer: 'https://login.microsoftonline.com/{tenantid}/v2.0',
    }
    serveJwks(t, [keys.jwk])
    const good = await sign({ tid, iss: `https://login.microsoftonline.com/${tid}/v2.0` })
    assert.equal((await verifyIdToken(entra, CLIENT, good, { now: () => NOW })).tid, tid)
    const mismatch = await sign({
      tid,
      iss: 'https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0',
    })
    await assert.rejects(verifyIdToken(entra, CLIENT, mismatch, { now: () => NOW }), {
      code: 'ERR_JWT_INVALID',
    })
    const noTid = await sign({ iss: `https://login.microsoftonline.com/${tid}/v2.0` })
    await assert.rejects(verifyIdToken(entra, CLIENT, noTid, { now: () => NOW }), { message: /tid/ })
  })
})

describe('JWKS unavailable after the token response (the grant is spent)', () => {
  let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey']
  let jwk: JWK
  beforeEach(async () => {
    clearJwksCache()
    if (!jwk) {
      const pair = await generateKeyPair('ES256', { extractable: true })
      privateKey = pair.privateKey
      jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }
    }
  })
  const idToken = () => {
    const iat = Math.floor(NOW / 1000)
    return new SignJWT({ sub: 'user-1', iat, exp: iat + 600 })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ORIGIN)
      .setAudience(CLIENT)
      .sign(privateKey)
  }
  const recording = () => {
    const sleeps: number[] = []
    return { sleeps, sleep: async (ms: number) => void sleeps.push(ms) }
  }
  const jwksDown = (t: TestContext, times: number) =>
    mockHttp(t)
      .get(ORIGIN)
      .intercept({ path: '/jwks' })
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))
      .times(times)

  test('the JWKS is fetched again (bounded) while unreachable, then the id_token is verified', async (t) => {
    const agent = mockHttp(t)
    const pool = agent.get(ORIGIN)
    pool.intercept({ path: '/jwks' }).reply(503, 'down', { headers: { 'retry-after': '3' } })
    pool
      .intercept({ path: '/jwks' })
      .replyWithError(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))
    pool.intercept({ path: '/jwks' }).reply(200, { keys: [jwk] }, { headers: JSON_HEADERS })
    const { sleeps, sleep } = recording()
    const body = { access_token: 'AT', token_type: 'Bearer', expires_in: 60, id_token: await idToken() }
    const tokens = await processTokenResponse(server, response(200, body), { ...options, sleep })
    assert.equal(tokens.idTokenClaims?.sub, 'user-1')
    // RFC 9110 §10.2.3: the 503's Retry-After, then the default 2 s back-off.
    assert.deepEqual(sleeps, [3000, 2000])
  })

  test('device_code grant: JWKS down on every attempt is a clear ERR_UNAVAILABLE, not a poll failure', async (t) => {
    jwksDown(t, 3)
    const { sleeps, sleep } = recording()
    const body = { access_token: 'AT', token_type: 'Bearer', expires_in: 60, id_token: await idToken() }
    await assert.rejects(
      processTokenResponse(server, response(200, body), { ...options, sleep }),
      (err: unknown) => {
        assert.ok(
          !(err instanceof UnavailableError),
          'not an UnavailableError: pollers must not treat it as one',
        )
        assert.ok(err instanceof Error && 'code' in err)
        assert.equal(err.code, 'ERR_UNAVAILABLE')
        assert.match(
          err.message,
          /id_token cannot be verified: the signing keys at idp\.test cannot be fetched/,
        )
        assert.ok(!err.message.includes('AT'))
        return true
      },
    )
    assert.deepEqual(sleeps, [1000, 2000])
  })

  test('OIDC Core §12.2 refresh: JWKS down keeps the rotated refresh token, drops the unverified id_token', async (t) => {
    jwksDown(t, 3)
    const { sleep } = recording()
    const body = {
      access_token: 'AT-2',
      token_type: 'Bearer',
      expires_in: 60,
      refresh_token: 'RT-2-rotated',
      id_token: await idToken(),
    }
    const tokens = await processTokenResponse(server, response(200, body), {
      ...options,
      grant: 'refresh_token',
      sleep,
    })
    assert.equal(tokens.accessToken, 'AT-2')
    assert.equal(tokens.refreshToken, 'RT-2-rotated')
    assert.equal(tokens.idToken, undefined)
    assert.equal(tokens.idTokenClaims, undefined)
    assert.match(tokens.warning ?? '', /refreshed id_token was not verified/)
  })
})

describe('JWKS unreadable on refresh', () => {
  test('OIDC Core §12.2 refresh: an HTML page for the JWKS (captive portal) keeps the rotated refresh token', async (t) => {
    clearJwksCache()
    mockHttp(t)
      .get(ORIGIN)
      .intercept({ path: '/jwks' })
      .reply(200, '<html>Hotel Wi-Fi</html>', { headers: { 'content-type': 'text/html' } })
    const { privateKey } = await generateKeyPair('ES256')
    const iat = Math.floor(NOW / 1000)
    const idToken = await new SignJWT({ sub: 'user-1', iat, exp: iat + 600 })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ORIGIN)
      .setAudience(CLIENT)
      .sign(privateKey)
    const body = { access_token: 'AT-2', token_type: 'Bearer', refresh_token: 'RT-2', id_token: idToken }
    const tokens = await processTokenResponse(server, response(200, body), {
      ...options,
      grant: 'refresh_token',
    })
    assert.equal(tokens.refreshToken, 'RT-2')
    assert.equal(tokens.idTokenClaims, undefined)
    assert.match(tokens.warning ?? '', /signing keys at idp\.test cannot be fetched/)
  })
})

describe('accountFromTokenSet', () => {
  const base = { accessToken: 'AT', tokenType: 'bearer', expiresAt: NOW, scopes: [] }

  test('Entra client_info gives uid.utid', () => {
    const clientInfo = Buffer.from(JSON.stringify({ uid: 'u-1', utid: 't-1' })).toString('base64url')
    const account = accountFromTokenSet({ ...server, dialect: 'entra' }, CLIENT, {
      ...base,
      clientInfo,
      idTokenClaims: {
        iss: 'https://login.microsoftonline.com/t-1/v2.0',
        sub: 's',
        preferred_username: 'a@b',
      },
    })
    assert.deepEqual(account, {
      id: 'u-1.t-1',
      username: 'a@b',
      tenant: 't-1',
      issuer: 'https://login.microsoftonline.com/t-1/v2.0',
    })
  })

  test('Entra client_info utid must be the verified id_token tid', () => {
    const clientInfo = Buffer.from(JSON.stringify({ uid: 'u-1', utid: 't-1' })).toString('base64url')
    const entra = { ...server, dialect: 'entra' as const }
    assert.throws(
      () =>
        accountFromTokenSet(entra, CLIENT, {
          ...base,
          clientInfo,
          idTokenClaims: { iss: 'https://login.microsoftonline.com/t-2/v2.0', sub: 's', tid: 't-2' },
        }),
      { code: 'ERR_JWT_INVALID', message: /utid/ },
    )
    const same = accountFromTokenSet(entra, CLIENT, {
      ...base,
      clientInfo,
      idTokenClaims: { iss: 'https://login.microsoftonline.com/t-1/v2.0', sub: 's', tid: 'T-1' },
    })
    assert.equal(same.id, 'u-1.t-1')
  })

  test('otherwise the verified sub; without an id_token a stable hash', () => {
    assert.equal(accountFromTokenSet(server, CLIENT, { ...base, idTokenClaims: { sub: 'abc' } }).id, 'abc')
    const a = accountFromTokenSet(server, CLIENT, base)
    const b = accountFromTokenSet(server, CLIENT, base)
    assert.equal(a.id, b.id)
    assert.match(a.id, /^[0-9a-f]{32}$/)
    assert.notEqual(accountFromTokenSet(server, 'other', base).id, a.id)
  })

  test('a username with control characters is not shown', () => {
    const account = accountFromTokenSet(server, CLIENT, {
      ...base,
      idTokenClaims: { sub: 's', preferred_username: 'evil\u001b[2J', email: 'ok@example.com' },
    })
    assert.equal(account.username, 'ok@example.com')
  })
})
