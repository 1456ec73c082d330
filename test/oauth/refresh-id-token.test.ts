/**
 * Issue 17 #3: the ID token of a refresh response. Given the account's stored ID token claims, it
 * must keep their identity (OpenID Connect Core §12.2); received from an https token endpoint it is
 * checked without its signature (§3.1.3.7 item 6), every claim check kept; a sign-in's ID token, a
 * plain-http token endpoint, or a refresh without stored claims keep the signature check.
 * Hand-made responses and a MockAgent that fails on any request (a JWKS fetch would be one); the
 * last test refreshes against the real oidc-provider.
 */
import assert from 'node:assert/strict'
import { after, before, describe, type TestContext, test } from 'node:test'
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose'

type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey']

import { EdgeTokenError } from '../../src/errors.js'
import type { AuthorizationServer } from '../../src/oauth/authority.js'
import { pollDeviceAuthorization, startDeviceAuthorization } from '../../src/oauth/grants/device.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import type { HttpResponse } from '../../src/oauth/http.js'
import { clearJwksCache } from '../../src/oauth/jwks.js'
import { type ProcessTokenResponseOptions, processTokenResponse } from '../../src/oauth/tokens.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
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
const IAT = NOW / 1000
const REFRESH_TOKEN = 'rt-secret-rotated-4410'

/** The stored claims of the sign-in's ID token (verified with its signature then). */
const ORIGINAL = Object.freeze({
  iss: ORIGIN,
  sub: 'user-1',
  aud: CLIENT,
  iat: IAT - 3600,
  exp: IAT - 3000,
  auth_time: IAT - 3600,
})

let signingKey: SigningKey
let jwk: Record<string, unknown>
before(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true })
  signingKey = pair.privateKey
  jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }
})

/** A refreshed ID token: the original's identity, issued now, signed with the server's key. */
async function idToken(claims: JWTPayload = {}, key: SigningKey = signingKey): Promise<string> {
  const { iat, ...rest } = { ...ORIGINAL, iat: IAT, exp: IAT + 600, ...claims }
  return new SignJWT(Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== undefined)))
    .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
    .setIssuedAt(iat as number)
    .sign(key)
}

/** The same token with its signature replaced: only a signature check can tell. */
function forged(token: string): string {
  const [h, p] = token.split('.')
  return `${h}.${p}.${Buffer.alloc(64, 7).toString('base64url')}`
}

/** A token with a hand-made header and no valid signature. */
function withHeader(header: Record<string, unknown>, claims: Record<string, unknown> = {}): string {
  const part = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${part(header)}.${part({ ...ORIGINAL, iat: IAT, exp: IAT + 600, ...claims })}.${part('sig')}`
}

function response(id_token: string, origin = ORIGIN): HttpResponse {
  return {
    url: new URL(`${origin}/token`),
    status: 200,
    headers: JSON_HEADERS,
    body: JSON.stringify({
      access_token: 'AT-2',
      token_type: 'Bearer',
      refresh_token: REFRESH_TOKEN,
      id_token,
    }),
  }
}

const refresh: ProcessTokenResponseOptions = Object.freeze({
  grant: 'refresh_token',
  requestedScopes: [],
  clientId: CLIENT,
  now: () => NOW,
  originalIdTokenClaims: ORIGINAL,
})

/** No request may leave: a JWKS fetch (a signature check) fails the test. */
function noRequests(t: TestContext): void {
  clearJwksCache()
  mockHttp(t, { failOnUnmatched: true })
}

/** A JWKS answered once: a signature check happens. */
function jwksServed(t: TestContext, origin = ORIGIN): void {
  clearJwksCache()
  mockHttp(t, { failOnUnmatched: true })
    .get(origin)
    .intercept({ path: '/jwks' })
    .reply(200, { keys: [jwk] }, { headers: JSON_HEADERS })
}

async function refused(token: string, pattern: RegExp, options = refresh): Promise<void> {
  await assert.rejects(processTokenResponse(server, response(token), options), (err: unknown) => {
    assert.ok(err instanceof EdgeTokenError)
    assert.equal(err.code, 'ERR_JWT_INVALID')
    assert.match(err.message, pattern)
    assert.ok(!err.message.includes(REFRESH_TOKEN) && !err.message.includes(token))
    return true
  })
}

describe('OIDC Core §3.1.3.7 item 6: a refreshed ID token from an https token endpoint', () => {
  test('OIDC Core §3.1.3.7 item 6: is checked without its signature (no JWKS fetch) when the stored claims are given', async (t) => {
    noRequests(t)
    const tokens = await processTokenResponse(server, response(forged(await idToken())), refresh)
    assert.equal(tokens.idTokenClaims?.sub, 'user-1')
    assert.equal(tokens.refreshToken, REFRESH_TOKEN)
    assert.equal(tokens.warning, undefined)
  })

  test('OIDC Core §3.1.3.2: every claim check still applies: expired, foreign audience, wrong issuer, no sub, iat in the future', async (t) => {
    noRequests(t)
    // The original's audience and issuer too, so only the standard check can refuse them.
    const as = (claims: Record<string, unknown>) => ({
      ...refresh,
      originalIdTokenClaims: { ...ORIGINAL, ...claims },
    })
    await refused(await idToken({ exp: IAT - 61 }), /ERR_JWT_EXPIRED \(exp\)/)
    await refused(await idToken({ aud: 'other-client' }), /\(aud\)/, as({ aud: 'other-client' }))
    await refused(await idToken({ iss: 'https://evil.test' }), /\(iss\)/, as({ iss: 'https://evil.test' }))
    await refused(await idToken({ sub: undefined }), /\(sub\)/, as({ sub: undefined }))
    await refused(await idToken({ iat: IAT + 120 }), /iat is in the future/)
    await refused(await idToken({ nbf: IAT + 120 }), /\(nbf\)/)
    await refused(withHeader({ alg: 'ES256' }, { exp: undefined }), /\(exp\)/)
  })

  test('OIDC Core §3.1.3.7 item 7: alg none, an HMAC alg or an unknown crit extension is refused even over TLS', async (t) => {
    noRequests(t)
    await refused(withHeader({ alg: 'none' }), /ALG_NOT_ALLOWED/)
    await refused(withHeader({ alg: 'HS256' }), /ALG_NOT_ALLOWED/)
    await refused(withHeader({ alg: 'ES256', crit: ['exp'], exp: 1 }), /crit/)
    await refused('not.a-jwt', /id_token is not a JWT/)
  })
})

describe('OIDC Core §12.2: a refreshed ID token keeps the original authentication', () => {
  test('OIDC Core §12.2: its sub must be the same as the original ID token', async (t) => {
    noRequests(t)
    await refused(await idToken({ sub: 'user-2' }), /refreshed id_token: sub differs .*§12\.2/)
  })

  test('OIDC Core §12.2: its iss must be the same as the original ID token', async (t) => {
    noRequests(t)
    await refused(await idToken(), /refreshed id_token: iss differs/, {
      ...refresh,
      originalIdTokenClaims: { ...ORIGINAL, iss: `${ORIGIN}/tenant-a` },
    })
  })

  test('OIDC Core §12.2: its aud must be the same as the original ID token (as a set)', async (t) => {
    noRequests(t)
    await refused(await idToken({ aud: [CLIENT, 'https://api.test'] }), /refreshed id_token: aud differs/)
    // The same set, spelled as an array: the same audience.
    const same = await processTokenResponse(server, response(await idToken({ aud: [CLIENT] })), refresh)
    assert.deepEqual(same.idTokenClaims?.aud, [CLIENT])
  })

  test('OIDC Core §12.2: its azp must be the same, and absent when the original had none', async (t) => {
    noRequests(t)
    await refused(await idToken({ azp: CLIENT }), /refreshed id_token: azp differs/)
    const withAzp = { ...refresh, originalIdTokenClaims: { ...ORIGINAL, azp: CLIENT } }
    await refused(await idToken({ azp: 'other' }), /azp differs/, withAzp)
    await refused(await idToken(), /azp differs/, withAzp)
    const ok = await processTokenResponse(server, response(await idToken({ azp: CLIENT })), withAzp)
    assert.equal(ok.idTokenClaims?.azp, CLIENT)
  })

  test('OIDC Core §12.2: its auth_time must be the original authentication time', async (t) => {
    noRequests(t)
    await refused(await idToken({ auth_time: IAT }), /refreshed id_token: auth_time differs/)
    // Leaving it out is allowed (the rule is for a token that contains it).
    const ok = await processTokenResponse(server, response(await idToken({ auth_time: undefined })), refresh)
    assert.equal(ok.idTokenClaims?.auth_time, undefined)
  })

  test('OIDC Core §12.2: its iat is the new token issue time: older than the original is refused, the same second accepted', async (t) => {
    noRequests(t)
    await refused(await idToken({ iat: ORIGINAL.iat - 1 }), /iat is older .*not a new token/)
    const ok = await processTokenResponse(server, response(await idToken({ iat: ORIGINAL.iat })), refresh)
    assert.equal(ok.idTokenClaims?.iat, ORIGINAL.iat)
  })

  test('OIDC Core §12.2: no nonce check (the refresh request sent none)', async (t) => {
    noRequests(t)
    const ok = await processTokenResponse(server, response(await idToken({ nonce: 'n-0S6_WzA2Mj' })), refresh)
    assert.equal(ok.idTokenClaims?.sub, 'user-1')
  })

  test('OIDC Core §12.2: the rules apply with the signature checked too (plain-http token endpoint)', async (t) => {
    const http = 'http://127.0.0.1:9'
    jwksServed(t, http)
    const local = { ...server, issuer: http, tokenEndpoint: `${http}/token`, jwksUri: `${http}/jwks` }
    const original = { ...refresh, originalIdTokenClaims: { ...ORIGINAL, iss: http } }
    await assert.rejects(
      processTokenResponse(local, response(await idToken({ iss: http, sub: 'user-2' }), http), original),
      /refreshed id_token: sub differs/,
    )
  })
})

describe('the signature check is kept', () => {
  test('OIDC Core §3.1.3.7: on a plain-http token endpoint (loopback), a refreshed ID token is verified with the JWKS', async (t) => {
    const http = 'http://127.0.0.1:9'
    jwksServed(t, http)
    const local = { ...server, issuer: http, tokenEndpoint: `${http}/token`, jwksUri: `${http}/jwks` }
    const original = { ...refresh, originalIdTokenClaims: { ...ORIGINAL, iss: http } }
    const good = await processTokenResponse(local, response(await idToken({ iss: http }), http), original)
    assert.equal(good.idTokenClaims?.iss, http)
    await assert.rejects(
      processTokenResponse(local, response(forged(await idToken({ iss: http })), http), original),
      /id_token verification failed: ERR_JWS_SIGNATURE_VERIFICATION_FAILED/,
    )
  })

  test('OIDC Core §3.1.3.7: a refresh without the stored claims verifies the signature (https)', async (t) => {
    jwksServed(t)
    const { originalIdTokenClaims: _, ...withoutClaims } = refresh
    await assert.rejects(
      processTokenResponse(server, response(forged(await idToken())), withoutClaims),
      /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/,
    )
  })

  test("OIDC Core §3.1.3.7: a sign-in's first ID token is verified with its signature, even over https", async (t) => {
    jwksServed(t)
    await assert.rejects(
      processTokenResponse(server, response(forged(await idToken())), { ...refresh, grant: 'device_code' }),
      /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/,
    )
  })

  test('OIDC Core §3.1.3.7 item 6: with NODE_TLS_REJECT_UNAUTHORIZED=0 TLS proves nothing: verified', async (t) => {
    jwksServed(t)
    const previous = process.env.NODE_TLS_REJECT_UNAUTHORIZED
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0'
    t.after(() => {
      if (previous === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED
      else process.env.NODE_TLS_REJECT_UNAUTHORIZED = previous
    })
    await assert.rejects(
      processTokenResponse(server, response(forged(await idToken())), refresh),
      /ERR_JWS_SIGNATURE_VERIFICATION_FAILED/,
    )
  })
})

describe('OIDC Core §12.2 against oidc-provider', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 300, interval: 1 })
  })
  after(async () => {
    await idp?.close()
  })

  test("OIDC Core §12.2: oidc-provider's refreshed ID tokens pass the rules against the sign-in's, twice in a row", async () => {
    clearJwksCache()
    const real: AuthorizationServer = {
      issuer: idp.issuer,
      dialect: 'oidc',
      tokenEndpoint: `${idp.issuer}/token`,
      deviceAuthorizationEndpoint: `${idp.issuer}/device/auth`,
      jwksUri: `${idp.issuer}/jwks`,
    }
    const client = { clientId: idp.publicClientId }
    const scopes = ['openid', 'offline_access', idp.apiScope]
    const flow = await startDeviceAuthorization(real, client, scopes)
    await approveDevice(idp.issuer, flow.userCode)
    const signIn = await pollDeviceAuthorization(real, client, flow, { sleep: async () => {} })
    assert.ok(signIn.idTokenClaims && signIn.refreshToken)
    const first = await refreshTokenGrant(real, client, signIn.refreshToken, scopes, {
      originalIdTokenClaims: signIn.idTokenClaims,
    })
    assert.equal(first.idTokenClaims?.sub, signIn.idTokenClaims.sub)
    assert.ok(first.refreshToken)
    // The stored claims are then the refresh's: the rules hold from one refresh to the next.
    const second = await refreshTokenGrant(real, client, first.refreshToken, scopes, {
      originalIdTokenClaims: first.idTokenClaims,
    })
    assert.equal(second.idTokenClaims?.sub, signIn.idTokenClaims.sub)
  })
})
