/**
 * Issue 16: property-based tests over the protocol core's parsers of server responses: device
 * authorization (RFC 8628 §3.2), token (RFC 6749 §5.1), error (RFC 6749 §5.2), discovery (OpenID
 * Connect Discovery §4.3, Entra ID v2.0), the JWKS (RFC 7517 §5) behind id_token verification,
 * and the HTTP layer's size cap. Each parser, fed generated hostile responses, either returns a
 * value that meets its invariants or throws an EdgeTokenError with a one-line message: never a
 * TypeError, a stack overflow or a hang, and never a secret of the response in the message.
 */
import assert from 'node:assert/strict'
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto'
import { describe, test } from 'node:test'
import { inspect } from 'node:util'
import fc from 'fast-check'
import { EdgeTokenError, InvalidResponseError, OAuthServerError, UnavailableError } from '../../src/errors.js'
import { secureUrl } from '../../src/lib/url.js'
import {
  type AuthorizationServer,
  resolveAuthority,
  validateEntraMetadata,
  validateOidcMetadata,
} from '../../src/oauth/authority.js'
import {
  processDeviceAuthorizationResponse,
  startDeviceAuthorization,
} from '../../src/oauth/grants/device.js'
import { DEFAULT_MAX_BYTES, type HttpResponse } from '../../src/oauth/http.js'
import { clearJwksCache } from '../../src/oauth/jwks.js'
import { errorFromResponse, processTokenResponse, verifyIdToken } from '../../src/oauth/tokens.js'
import { JSON_HEADERS, mockHttp } from '../support/mock-http.js'
import {
  assertTypedError,
  bodyText,
  edgyJsonValue,
  forAll,
  httpStatus,
  label,
  mutatedObject,
  outcome,
  responseHeaders,
  spyJsonParse,
} from '../support/property.js'

const ORIGIN = 'https://idp.test'
const CLIENT_ID = 'client-1'
const NOW = Date.now()
const now = () => NOW
const noSleep = async () => {}

/** Secrets are generated with this prefix, so a property can look for them in messages. */
const SECRET_PREFIX = 'S3CR3T'
const secret = fc
  .string({
    unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_'),
    minLength: 12,
    maxLength: 40,
  })
  .map((s) => `${SECRET_PREFIX}${s}`)

function secretsIn(value: unknown): string[] {
  const out: string[] = []
  const walk = (v: unknown) => {
    if (typeof v === 'string' && v.startsWith(SECRET_PREFIX)) out.push(v)
    else if (Array.isArray(v)) v.forEach(walk)
    else if (typeof v === 'object' && v !== null) Object.values(v).forEach(walk)
  }
  walk(value)
  return out
}

/** The error names no secret of the response, in its message or when logged whole. */
function assertNoSecretEchoed(error: EdgeTokenError, source: unknown): void {
  const logged = `${error.message}\n${inspect(error)}\n${JSON.stringify(error)}`
  for (const s of secretsIn(source))
    assert.ok(!logged.includes(s), `a secret of the response is in the error: ${error.message}`)
}

function response(
  status: number,
  headers: Record<string, string>,
  body: string,
  path = '/token',
): HttpResponse {
  return { url: new URL(`${ORIGIN}${path}`), status, headers, body }
}

/** Deep nesting that would overflow a recursive parser or serialiser. */
const deepBodies = fc
  .integer({ min: 1000, max: 100_000 })
  .chain((n) =>
    fc.constantFrom(
      `${'['.repeat(n)}${']'.repeat(n)}`,
      `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`,
      '['.repeat(n),
    ),
  )

function responses(objects: fc.Arbitrary<unknown>, success = 200): fc.Arbitrary<HttpResponse> {
  return fc
    .tuple(
      httpStatus(success),
      responseHeaders(),
      fc.oneof({ arbitrary: bodyText(objects), weight: 30 }, { arbitrary: deepBodies, weight: 1 }),
    )
    .map(([status, headers, body]) => response(status, headers, body))
}

// --- device authorization (RFC 8628 §3.2) -------------------------------------------------------

const deviceAuthorizationBodies = mutatedObject(
  {
    device_code: secret,
    user_code: fc.constantFrom('WDJB-MJHT', 'abcd', 'BCDF GHJK', 'é-ß'),
    verification_uri: fc.constantFrom(
      'https://idp.test/device',
      'http://127.0.0.1:8080/device',
      'https://[::1]/d',
      undefined,
    ),
    verification_uri_complete: fc.constantFrom('https://idp.test/device?user_code=WDJB-MJHT', undefined),
    verification_url: fc.constantFrom('https://idp.test/device', undefined),
    expires_in: fc.oneof(fc.integer({ min: 1, max: 1800 }), fc.constantFrom('600', ' 900 ')),
    interval: fc.oneof(fc.integer({ min: 1, max: 10 }), fc.constantFrom('5', undefined)),
    message: fc.option(fc.string({ maxLength: 100 }), { nil: undefined }),
  },
  {
    user_code: fc.string({ unit: 'binary', maxLength: 70 }),
    message: fc.string({ unit: 'binary', minLength: 1000, maxLength: 1100 }),
    interval: fc.constantFrom(0, -5, 0.999, 3601, '0', '1e3'),
    expires_in: fc.constantFrom(0, -1, 86401, '600s', ''),
  },
)

// --- token responses (RFC 6749 §5.1) and id_tokens ----------------------------------------------

const signing = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
const JWK = { ...signing.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256', use: 'sig' }
const JWKS_TEXT = JSON.stringify({ keys: [JWK] })

const b64 = (value: unknown) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

/** A compact JWS signed synchronously (ES256, IEEE P1363 signature) with `key`. */
function jws(header: unknown, payload: unknown, key: KeyObject): string {
  const input = `${b64(header)}.${b64(payload)}`
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' })
  return `${input}.${signature.toString('base64url')}`
}

const seconds = Math.floor(NOW / 1000)
const claims = mutatedObject(
  {
    iss: fc.constant(ORIGIN),
    sub: fc.constantFrom('alice', 'bob'),
    aud: fc.constantFrom(CLIENT_ID, [CLIENT_ID, 'other']),
    exp: fc.integer({ min: seconds + 60, max: seconds + 7200 }),
    iat: fc.integer({ min: seconds - 600, max: seconds }),
    nbf: fc.constantFrom(undefined, seconds - 10),
    tid: fc.constantFrom(undefined, '72f988bf-86f1-41af-91ab-2d7cd011db47'),
  },
  {
    iss: fc.constantFrom(`${ORIGIN}/`, 'https://evil.test'),
    aud: fc.constantFrom('other', [], [1]),
    exp: fc.constantFrom(seconds - 3600, '9999999999'),
    iat: fc.constantFrom(seconds + 3600, undefined),
    nbf: fc.constant(seconds + 3600),
  },
)
const headers = mutatedObject(
  {
    alg: fc.constant('ES256'),
    kid: fc.constantFrom('k1', undefined),
    typ: fc.constantFrom('JWT', undefined),
  },
  {
    alg: fc.constantFrom('none', 'HS256', 'RS256', 'ES384'),
    kid: fc.constantFrom('k2', ''),
    crit: fc.constantFrom(['b64'], ['exp']),
  },
)
const idTokens = fc.oneof(
  {
    arbitrary: fc
      .tuple(headers, claims, fc.boolean())
      .map(([h, c, own]) => jws(h, c, own ? signing.privateKey : otherKey.privateKey)),
    weight: 6,
  },
  { arbitrary: fc.string({ maxLength: 200 }), weight: 1 },
  { arbitrary: fc.tuple(fc.string(), fc.string(), fc.string()).map((p) => p.join('.')), weight: 1 },
  {
    arbitrary: fc
      .tuple(edgyJsonValue(), edgyJsonValue())
      .map(([h, c]) => `${b64(h)}.${b64(c)}.${b64('sig')}`),
    weight: 1,
  },
)

const tokenBodies = mutatedObject(
  {
    access_token: secret,
    token_type: fc.constantFrom('Bearer', 'bearer', 'BEARER'),
    expires_in: fc.oneof(fc.integer({ min: 1, max: 7200 }), fc.constantFrom('3599', undefined)),
    scope: fc.constantFrom('openid offline_access', 'telemetry:write', '', '  a  b ', undefined),
    refresh_token: fc.option(secret, { nil: undefined }),
    id_token: fc.option(idTokens, { nil: undefined }),
    client_info: fc.option(fc.string({ maxLength: 60 }), { nil: undefined }),
    refresh_in: fc.constantFrom(undefined, 1800, '1800'),
  },
  {
    token_type: fc.constantFrom('DPoP', 'mac', 'Bearer '),
    expires_in: fc.constantFrom(0, -1, 2e-63, 366 * 86400 + 1, '1e3', ' 12 '),
    refresh_in: fc.constantFrom(0, -1, 'soon'),
    refresh_token: fc.constantFrom('', 0),
  },
)

const errorBodies = mutatedObject({
  error: fc.constantFrom(
    'authorization_pending',
    'slow_down',
    'access_denied',
    'expired_token',
    'invalid_grant',
    'invalid_client',
    'authorization_declined',
    'x'.repeat(201),
  ),
  error_description: fc.option(
    fc.oneof(
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.constantFrom('AADSTS53003: blocked', 'AADSTS530035: x'),
    ),
    { nil: undefined },
  ),
  error_uri: fc.option(fc.string({ maxLength: 50 }), { nil: undefined }),
  error_codes: fc.option(
    fc.array(fc.oneof(fc.constantFrom(53003, 530035, 50126), fc.integer()), { maxLength: 3 }),
    { nil: undefined },
  ),
  device_code: fc.option(secret, { nil: undefined }),
})

const SERVER: AuthorizationServer = Object.freeze({
  issuer: ORIGIN,
  dialect: 'oidc',
  tokenEndpoint: `${ORIGIN}/token`,
  jwksUri: `${ORIGIN}/jwks`,
})

// --- discovery (OpenID Connect Discovery §4.3, Entra ID v2.0) -----------------------------------

const ENDPOINTS = [
  'token_endpoint',
  'jwks_uri',
  'device_authorization_endpoint',
  'authorization_endpoint',
  'revocation_endpoint',
  'introspection_endpoint',
  'end_session_endpoint',
] as const
const goodEndpoint = fc.constantFrom(
  'https://idp.test/token',
  'http://127.0.0.1:9/x',
  'https://login.microsoftonline.com/common/oauth2/v2.0/token',
)
const badEndpoint = fc.constantFrom(
  'http://evil.test/token',
  'https://idp.test/x#frag',
  'https://idp.test/\u0000',
  'javascript:alert(1)',
  `https://idp.test/${'x'.repeat(2048)}`,
)
const discoveryDocs = mutatedObject(
  {
    issuer: fc.constantFrom(
      ORIGIN,
      `${ORIGIN}/`,
      'https://login.microsoftonline.com/{tenantid}/v2.0',
      'https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0',
    ),
    token_endpoint: goodEndpoint,
    jwks_uri: goodEndpoint,
    ...Object.fromEntries(ENDPOINTS.slice(2).map((e) => [e, fc.option(goodEndpoint, { nil: undefined })])),
  },
  {
    issuer: fc.constantFrom(
      'https://evil.test',
      'https://sts.windows.net/{tenantid}/',
      'https://login.microsoftonline.com/contoso/v2.0',
      'https://evil.test/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0',
    ),
    ...Object.fromEntries(ENDPOINTS.map((e) => [e, badEndpoint])),
  },
)

function assertServer(server: AuthorizationServer): void {
  assert.ok(Object.isFrozen(server))
  for (const value of [server.tokenEndpoint, server.jwksUri, server.deviceAuthorizationEndpoint]) {
    if (value !== undefined) assert.ok(secureUrl(value), `an endpoint is not https or loopback: ${value}`)
  }
}

describe('issue 16: property tests over OAuth server responses', () => {
  test('RFC 8628 §3.2: a device authorization response is validated or refused with a typed error', async (t) => {
    await forAll(
      t,
      'device authorization response',
      responses(deviceAuthorizationBodies),
      async (res) => {
        const result = await outcome(() =>
          processDeviceAuthorizationResponse(res, { now, scopes: ['openid'] }),
        )
        if (!result.ok) {
          assertNoSecretEchoed(result.error, res.body)
          return label(result)
        }
        const flow = result.value
        assert.equal(res.status, 200)
        assert.ok(Object.isFrozen(flow))
        assert.ok(flow.userCode.length > 0 && flow.userCode.length <= 64)
        assert.ok(secureUrl(flow.verificationUri))
        assert.ok(flow.expiresAt >= NOW && flow.expiresAt <= NOW + 86_400_000)
        assert.ok(flow.intervalSeconds >= 1 && flow.intervalSeconds <= 3600, 'never busy polling')
        // The device code is held privately: never serialised with the flow.
        const text = `${JSON.stringify(flow)}${inspect(flow)}`
        for (const s of secretsIn(JSON.parse(res.body)))
          assert.ok(!text.includes(s), 'the device code is visible')
        return 'accepted'
      },
      { numRuns: 2000 },
    )
  })

  test('RFC 6749 §5.1: a token response (with an id_token checked against the JWKS) is validated or refused', async (t) => {
    const agent = mockHttp(t)
    agent.get(ORIGIN).intercept({ path: '/jwks' }).reply(200, JWKS_TEXT, { headers: JSON_HEADERS }).persist()
    clearJwksCache()
    await forAll(
      t,
      'token response',
      fc.tuple(
        responses(tokenBodies),
        fc.constantFrom('device_code', 'refresh_token', 'other') as fc.Arbitrary<
          'device_code' | 'refresh_token' | 'other'
        >,
      ),
      async ([res, grant]) => {
        const result = await outcome(() =>
          processTokenResponse(SERVER, res, {
            grant,
            requestedScopes: ['openid'],
            clientId: CLIENT_ID,
            now,
            sleep: noSleep,
          }),
        )
        if (!result.ok) {
          assertNoSecretEchoed(result.error, res.body)
          return label(result)
        }
        const tokens = result.value
        const body = JSON.parse(res.body) as Record<string, unknown>
        assert.equal(res.status, 200)
        assert.equal(tokens.accessToken, body.access_token)
        assert.equal(tokens.tokenType, 'bearer')
        // expires_in is only required to be positive: 1e-9 s is an (already) expired token.
        assert.ok(tokens.expiresAt >= NOW && tokens.expiresAt <= NOW + 366 * 86_400_000)
        assert.ok(tokens.scopes.every((s) => typeof s === 'string' && s.length > 0 && !/\s/.test(s)))
        if (tokens.idTokenClaims) {
          // Only a token signed by the JWKS's key, for this client and issuer, is ever accepted.
          assert.equal(tokens.idTokenClaims.iss, ORIGIN)
          const aud = tokens.idTokenClaims.aud
          assert.ok(aud === CLIENT_ID || (Array.isArray(aud) && aud.includes(CLIENT_ID)))
          return 'accepted with id_token'
        }
        return 'accepted'
      },
      { numRuns: 1500 },
    )
  })

  test('RFC 6749 §5.2: an error response becomes a typed error, never a crash', async (t) => {
    await forAll(
      t,
      'error response',
      fc.tuple(
        responses(errorBodies, 400),
        fc.constantFrom('device_code', 'refresh_token', 'other') as fc.Arbitrary<
          'device_code' | 'refresh_token' | 'other'
        >,
      ),
      async ([res, grant]) => {
        const result = await outcome(() => errorFromResponse(res, 'token request', grant, NOW))
        const error = result.ok ? result.value : result.error
        assert.ok(error instanceof EdgeTokenError, 'errorFromResponse returns an EdgeTokenError')
        assertTypedError(error)
        assertNoSecretEchoed(error, res.body)
        if (res.status === 429 || res.status >= 500) assert.ok(error instanceof UnavailableError)
        if (error instanceof OAuthServerError) {
          const body = JSON.parse(res.body) as Record<string, unknown>
          assert.equal(error.error, body.error)
          assert.ok(error.message.length <= 500)
        }
        return error.constructor.name
      },
      { numRuns: 1500 },
    )
  })

  test('OpenID Connect Discovery §4.3: a discovery document is validated or refused (OIDC and Entra ID)', async (t) => {
    await forAll(
      t,
      'discovery document (validate)',
      fc.tuple(
        fc.oneof({ arbitrary: discoveryDocs, weight: 9 }, { arbitrary: edgyJsonValue(3), weight: 1 }),
        fc.constantFrom(
          'common',
          'organizations',
          '72f988bf-86f1-41af-91ab-2d7cd011db47',
          'contoso.onmicrosoft.com',
        ),
      ),
      async ([doc, tenant]) => {
        const oidc = await outcome(() => validateOidcMetadata(doc, ORIGIN))
        if (oidc.ok) {
          assertServer(oidc.value)
          assert.equal(oidc.value.issuer.replace(/\/$/, ''), ORIGIN)
        }
        const entra = await outcome(() =>
          validateEntraMetadata(doc, { host: 'login.microsoftonline.com', tenant }),
        )
        if (entra.ok) {
          assertServer(entra.value)
          assert.match(entra.value.issuer, /^https:\/\/login\.microsoftonline\.com\/[^/]+\/v2\.0$/)
        }
        return `oidc ${label(oidc)} / entra ${label(entra)}`
      },
      { numRuns: 2000 },
    )
  })

  test('OpenID Connect Discovery §4: any discovery answer over HTTP resolves or fails with a typed error', async (t) => {
    const agent = mockHttp(t)
    let next = { status: 200, body: '', headers: {} as Record<string, string> }
    agent
      .get(ORIGIN)
      .intercept({ path: '/.well-known/openid-configuration' })
      .reply(() => ({ statusCode: next.status, data: next.body, responseOptions: { headers: next.headers } }))
      .persist()
    await forAll(
      t,
      'discovery response (HTTP)',
      fc.tuple(httpStatus(), responseHeaders(), bodyText(discoveryDocs)),
      async ([status, headers, body]) => {
        next = { status, headers, body }
        const result = await outcome(() => resolveAuthority(ORIGIN, { sleep: noSleep, timeoutMs: 5000 }))
        if (result.ok) assertServer(result.value)
        return label(result)
      },
      { numRuns: 250 },
    )
  })

  test('RFC 7517 §5: any JWKS answer leaves id_token verification with a typed error or the verified claims', async (t) => {
    const agent = mockHttp(t)
    let next = { status: 200, body: '', headers: {} as Record<string, string> }
    agent
      .get(ORIGIN)
      .intercept({ path: '/jwks' })
      .reply(() => ({ statusCode: next.status, data: next.body, responseOptions: { headers: next.headers } }))
      .persist()
    const payload = { iss: ORIGIN, sub: 'alice', aud: CLIENT_ID, iat: seconds, exp: seconds + 600 }
    const good = jws({ alg: 'ES256', kid: 'k1' }, payload, signing.privateKey)
    // The real key with a few of its members broken, keys of other types, and junk.
    const jwk = mutatedObject(
      {
        kty: fc.constant('EC'),
        crv: fc.constant('P-256'),
        x: fc.constant(JWK.x),
        y: fc.constant(JWK.y),
        kid: fc.constantFrom('k1', undefined),
        alg: fc.constantFrom('ES256', undefined),
        use: fc.constantFrom('sig', undefined),
      },
      {
        kty: fc.constantFrom('RSA', 'OKP', 'oct', 'x'),
        crv: fc.constantFrom('P-384', 'Ed25519', 'secp256k1'),
        x: fc.constantFrom('AAAA', '', otherKey.publicKey.export({ format: 'jwk' }).x),
        n: fc.constantFrom('AQAB', 'x'.repeat(700)),
        e: fc.constant('AQAB'),
        k: fc.constant('c2VjcmV0'),
        kid: fc.constant('k2'),
        alg: fc.constantFrom('RS256', 'HS256', 'none'),
        use: fc.constant('enc'),
        key_ops: fc.constantFrom(['verify'], ['encrypt'], 'verify'),
      },
    )
    const jwksDocs = mutatedObject(
      { keys: fc.array(jwk, { minLength: 1, maxLength: 3 }) },
      { keys: fc.oneof(fc.constant([]), edgyJsonValue(), fc.array(edgyJsonValue(), { maxLength: 3 })) },
    )
    await forAll(
      t,
      'JWKS response',
      fc.tuple(httpStatus(), responseHeaders(), bodyText(jwksDocs), fc.oneof(fc.constant(good), idTokens)),
      async ([status, headers, body, idToken]) => {
        next = { status, headers, body }
        clearJwksCache()
        const result = await outcome(() => verifyIdToken(SERVER, CLIENT_ID, idToken, { now }))
        if (result.ok) {
          assert.equal(result.value.iss, ORIGIN)
          assert.equal(status, 200)
        }
        return label(result)
      },
      { numRuns: 800 },
    )
  })

  test('issue 16: a response over the 1 MiB cap is refused before it is parsed (discovery, device authorization)', async (t) => {
    const agent = mockHttp(t)
    let next = { body: '', headers: {} as Record<string, string> }
    const reply = () => ({ statusCode: 200, data: next.body, responseOptions: { headers: next.headers } })
    agent.get(ORIGIN).intercept({ path: '/.well-known/openid-configuration' }).reply(reply).persist()
    agent.get(ORIGIN).intercept({ path: '/device', method: 'POST' }).reply(reply).persist()
    const spy = spyJsonParse()
    t.after(() => spy.restore())
    const server: AuthorizationServer = { ...SERVER, deviceAuthorizationEndpoint: `${ORIGIN}/device` }
    await forAll(
      t,
      'over-cap bodies (HTTP layer)',
      fc.tuple(
        fc.integer({ min: 1, max: 256 * 1024 }),
        fc.boolean(),
        fc.constantFrom('discovery', 'device') as fc.Arbitrary<'discovery' | 'device'>,
      ),
      async ([extra, declare, which]) => {
        const filler = 'x'.repeat(DEFAULT_MAX_BYTES + extra)
        next = {
          body: JSON.stringify({ issuer: ORIGIN, filler }),
          headers: { ...JSON_HEADERS, ...(declare ? { 'content-length': String(filler.length + 30) } : {}) },
        }
        spy.reset()
        const result = await outcome<unknown>(() =>
          which === 'discovery'
            ? resolveAuthority(ORIGIN, { sleep: noSleep })
            : startDeviceAuthorization(server, { clientId: CLIENT_ID }, ['openid'], { sleep: noSleep }),
        )
        assert.equal(result.ok, false)
        if (!result.ok) {
          assert.ok(result.error instanceof InvalidResponseError)
          assert.match(result.error.message, /larger than 1048576 bytes/)
        }
        assert.ok(
          spy.lengths.every((n) => n <= DEFAULT_MAX_BYTES),
          'an over-cap body was parsed',
        )
      },
      { numRuns: 40 },
    )
  })
})
