/**
 * ConfidentialClient: credentials (secret, PEM/JWK/KeyObject key, X.509 certificate thumbprints),
 * client credentials against the real test IdP, on-behalf-of against the Entra dialect server,
 * token exchange elsewhere, and the in-memory token cache (fake clock, MockAgent).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import { ConfidentialClient } from '../../src/client/confidential-client.js'
import { ConfigError, OAuthServerError } from '../../src/errors.js'
import { ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT_TYPE } from '../../src/oauth/grants/grants.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../support/entra.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { JSON_HEADERS, mockHttp } from '../support/mock-http.js'
import { createTestPki, type TestPki } from '../support/tls.js'

const ORIGIN = 'https://idp.test'
const SECRET = 'app-secret-0c1d2e'
const DISCOVERY = {
  issuer: ORIGIN,
  token_endpoint: `${ORIGIN}/token`,
  jwks_uri: `${ORIGIN}/jwks`,
}

function hexToBase64url(fingerprint: string): string {
  return Buffer.from(fingerprint.replace(/:/g, ''), 'hex').toString('base64url')
}

/** A MockAgent with discovery and a queue of token responses; records each token request body. */
function mockIdp(t: Parameters<typeof mockHttp>[0], replies: Array<[number, unknown]>) {
  const agent = mockHttp(t)
  const pool = agent.get(ORIGIN)
  pool
    .intercept({ path: '/.well-known/openid-configuration' })
    .reply(200, JSON.stringify(DISCOVERY), { headers: JSON_HEADERS })
    .persist()
  const bodies: URLSearchParams[] = []
  const headers: Array<Record<string, string>> = []
  for (const [status, body] of replies) {
    pool.intercept({ path: '/token', method: 'POST' }).reply((request) => {
      bodies.push(new URLSearchParams(String(request.body)))
      headers.push(request.headers as Record<string, string>)
      return { statusCode: status, data: JSON.stringify(body), responseOptions: { headers: JSON_HEADERS } }
    })
  }
  return { bodies, headers }
}

const token = (n: number, extra: Record<string, unknown> = {}) => ({
  access_token: `at-${n}`,
  token_type: 'Bearer',
  expires_in: 3600,
  ...extra,
})

describe('ConfidentialClient: credentials', () => {
  test('a client secret goes as HTTP Basic (RFC 6749 §2.3.1) to a generic IdP', async (t) => {
    const { bodies, headers } = mockIdp(t, [[200, token(1)]])
    const app = new ConfidentialClient({
      authority: ORIGIN,
      clientId: 'svc',
      credential: { clientSecret: SECRET },
    })
    const tokens = await app.acquireTokenByClientCredentials({ scopes: ['api:write'] })
    assert.equal(tokens.accessToken, 'at-1')
    assert.equal(bodies[0]?.get('client_secret'), null)
    assert.equal(
      Buffer.from((headers[0]?.authorization ?? '').slice(6), 'base64').toString(),
      `svc:${SECRET}`,
    )
  })

  test('unusable credentials are ConfigErrors naming the credential, never showing it', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const publicJwk = publicKey.export({ format: 'jwk' }) as Record<string, unknown>
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
    const broken = `${pem.slice(0, 60)}\n-----END PRIVATE KEY-----\n`
    const cases: Array<ConstructorParameters<typeof ConfidentialClient>[0]['credential']> = [
      { clientSecret: '' },
      { privateKey: broken },
      { privateKey: publicJwk },
      { privateKey: publicKey },
      { privateKey: pem, certificate: 'not a certificate' },
    ]
    for (const credential of cases) {
      assert.throws(
        () => new ConfidentialClient({ authority: ORIGIN, clientId: 'svc', credential }),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.key === 'credential' &&
          !err.message.includes('PRIVATE KEY') &&
          !JSON.stringify(err).includes(pem.slice(40, 80)),
      )
    }
  })

  test('the default algorithm follows the key: RSA -> RS256, P-384 -> ES384, Ed25519 -> EdDSA; a JWK keeps its kid', async (t) => {
    const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' })
    const keys = [
      [generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, 'RS256'],
      [generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey, 'ES384'],
      [generateKeyPairSync('ed25519').privateKey, 'EdDSA'],
      [{ ...jwk, kid: 'jwk-1' }, 'ES256'],
    ] as const
    const { bodies } = mockIdp(
      t,
      keys.map((_, i) => [200, token(i)]),
    )
    for (const [privateKey] of keys) {
      const app = new ConfidentialClient({ authority: ORIGIN, clientId: 'svc', credential: { privateKey } })
      await app.acquireTokenByClientCredentials({ scopes: ['x'] })
    }
    const headers = bodies.map((b) => decodeProtectedHeader(b.get('client_assertion') ?? ''))
    assert.deepEqual(
      headers.map((h) => h.alg),
      keys.map(([, alg]) => alg),
    )
    assert.equal(headers[3]?.kid, 'jwk-1')
  })
})

describe('ConfidentialClient: certificate credential against the Entra dialect server', () => {
  let entra: EntraDialectServer
  let pki: TestPki
  let unroute: () => Promise<void>
  before(async () => {
    ;[entra, pki] = await Promise.all([startEntraDialect(), createTestPki()])
    unroute = routeEntraHosts(entra)
  })
  after(async () => {
    await unroute()
    await entra.close()
    await pki.close()
  })

  test('client credentials: the assertion carries x5t#S256 and x5t of the certificate and is signed by its key', async () => {
    const [certificate, privateKey] = await Promise.all([
      readFile(pki.clientCertFile, 'utf8'),
      readFile(pki.clientKeyFile, 'utf8'),
    ])
    const app = new ConfidentialClient({
      authority: 'https://login.microsoftonline.com/organizations',
      clientId: 'daemon-app',
      credential: { privateKey, certificate },
    })
    const tokens = await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
    assert.deepEqual(tokens.scopes, ['api://telemetry/.default'])
    const req = entra.requests.findLast((r) => r.path.endsWith('/token'))
    assert.ok(req)
    assert.equal(req.params.get('grant_type'), 'client_credentials')
    assert.equal(req.params.get('scope'), 'api://telemetry/.default')
    const assertion = req.params.get('client_assertion') ?? ''
    const cert = new X509Certificate(certificate)
    const header = decodeProtectedHeader(assertion)
    assert.equal(header.alg, 'ES256')
    assert.equal(header['x5t#S256'], hexToBase64url(cert.fingerprint256))
    assert.equal(header.x5t, hexToBase64url(cert.fingerprint))
    const { payload } = await jwtVerify(assertion, cert.publicKey, {
      issuer: 'daemon-app',
      subject: 'daemon-app',
      audience: `${entra.baseUrl}/organizations/oauth2/v2.0/token`,
    })
    assert.ok(payload.jti)
  })

  test('issue 12: x5c sends the chain (RFC 7515 §4.1.6, Entra subject name + issuer), checked by the Entra server', async () => {
    const [leaf, ca, privateKey] = await Promise.all([
      readFile(pki.clientCertFile, 'utf8'),
      readFile(pki.caFile, 'utf8'),
      readFile(pki.clientKeyFile, 'utf8'),
    ])
    const app = new ConfidentialClient({
      authority: 'https://login.microsoftonline.com/organizations',
      clientId: 'sni-app',
      credential: { privateKey, certificate: `${leaf}${ca}`, sendCertificateChain: true },
    })
    await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
    const req = entra.requests.findLast((r) => r.path.endsWith('/token'))
    const header = decodeProtectedHeader(req?.params.get('client_assertion') ?? '')
    assert.deepEqual(header.x5c, [
      new X509Certificate(leaf).raw.toString('base64'),
      new X509Certificate(ca).raw.toString('base64'),
    ])
    // Without the flag, no chain; a chain in the wrong order is refused at construction.
    const plain = new ConfidentialClient({
      authority: 'https://login.microsoftonline.com/organizations',
      clientId: 'sni-app',
      credential: { privateKey, certificate: leaf },
    })
    await plain.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
    assert.equal(
      decodeProtectedHeader(
        entra.requests.findLast((r) => r.path.endsWith('/token'))?.params.get('client_assertion') ?? '',
      ).x5c,
      undefined,
    )
    assert.throws(
      () =>
        new ConfidentialClient({
          authority: 'https://login.microsoftonline.com/organizations',
          clientId: 'sni-app',
          credential: { privateKey, certificate: `${ca}${leaf}` },
        }),
      (err: unknown) => err instanceof ConfigError,
    )
  })

  test('issue 12: an RSA certificate signs PS256 for Entra (x5t#S256 and x5t) with a 60 s lifetime', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-rsa-'))
    try {
      execFileSync(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'rsa:2048',
          '-nodes',
          '-keyout',
          join(dir, 'k'),
          '-out',
          join(dir, 'c'),
          '-days',
          '1',
          '-subj',
          '/CN=rsa-app',
        ],
        { stdio: 'ignore' },
      )
      const [privateKey, certificate] = await Promise.all([
        readFile(join(dir, 'k'), 'utf8'),
        readFile(join(dir, 'c'), 'utf8'),
      ])
      const app = new ConfidentialClient({
        authority: 'https://login.microsoftonline.com/organizations',
        clientId: 'rsa-app',
        credential: { privateKey, certificate, sendCertificateChain: true },
      })
      await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
      const assertion =
        entra.requests.findLast((r) => r.path.endsWith('/token'))?.params.get('client_assertion') ?? ''
      const header = decodeProtectedHeader(assertion)
      assert.equal(header.alg, 'PS256')
      assert.ok(header['x5t#S256'] && header.x5t)
      const claims = decodeJwt(assertion)
      assert.ok(
        typeof claims.exp === 'number' && typeof claims.iat === 'number' && claims.exp - claims.iat === 60,
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('issue 12: a federated assertion file is read again for every request (it rotates)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-fed-'))
    try {
      const file = join(dir, 'token')
      const jwt = (n: number) => `eyJhbGciOiJSUzI1NiJ9.eyJuIjo${n}fQ.c2lnbmF0dXJl`
      for (const n of [1, 2]) entra.trustFederatedAssertion(jwt(n))
      await writeFile(file, `${jwt(1)}\n`)
      const app = new ConfidentialClient({
        authority: 'https://login.microsoftonline.com/organizations',
        clientId: 'workload-app',
        credential: { clientAssertionFile: file },
      })
      await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
      await writeFile(file, jwt(2))
      await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'], forceRefresh: true })
      const sent = entra.requests.filter((r) => r.params.get('client_id') === 'workload-app')
      assert.deepEqual(
        sent.map((r) => [r.params.get('client_assertion'), r.params.get('client_assertion_type')]),
        [
          [jwt(1), 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'],
          [jwt(2), 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'],
        ],
      )
      // Not a JWT (RFC 7523 §2.2): refused before sending, and never shown.
      await writeFile(file, 'not a token')
      await assert.rejects(
        app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'], forceRefresh: true }),
        (err: unknown) =>
          err instanceof Error && /not a JWT/.test(err.message) && !err.message.includes('not a token'),
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('a certificate that does not belong to the key is refused at construction', async () => {
    const [certificate, otherKey] = await Promise.all([
      readFile(pki.clientCertFile, 'utf8'),
      readFile(pki.serverKeyFile, 'utf8'),
    ])
    assert.throws(
      () =>
        new ConfidentialClient({
          authority: 'https://login.microsoftonline.com/organizations',
          clientId: 'daemon-app',
          credential: { privateKey: otherKey, certificate },
        }),
      (err: unknown) => err instanceof ConfigError && /does not belong/.test(err.message),
    )
  })

  test('a client secret goes in the body for Entra ID (client_secret_post, as MSAL)', async () => {
    const app = new ConfidentialClient({
      authority: 'https://login.microsoftonline.com/organizations',
      clientId: 'daemon-app',
      credential: { clientSecret: SECRET },
    })
    await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
    const req = entra.requests.findLast((r) => r.path.endsWith('/token'))
    assert.equal(req?.params.get('client_secret'), SECRET)
    assert.equal(req?.authorization, undefined)
  })

  test('acquireTokenOnBehalfOf uses the on-behalf-of grant, cached per incoming token and scope set', async () => {
    const app = new ConfidentialClient({
      authority: 'https://login.microsoftonline.com/organizations',
      clientId: 'middle-tier',
      credential: { clientSecret: SECRET },
    })
    const tokenRequests = () => entra.requests.filter((r) => r.path.endsWith('/token')).length
    const start = tokenRequests()
    const a = await app.acquireTokenOnBehalfOf({ assertion: 'user-a-token', scopes: ['api://down/.default'] })
    const req = entra.requests.findLast((r) => r.path.endsWith('/token'))
    assert.equal(req?.params.get('requested_token_use'), 'on_behalf_of')
    assert.equal(req?.params.get('assertion'), 'user-a-token')
    const again = await app.acquireTokenOnBehalfOf({
      assertion: 'user-a-token',
      scopes: ['api://down/.default'],
    })
    assert.equal(again, a, 'served from the cache')
    const b = await app.acquireTokenOnBehalfOf({ assertion: 'user-b-token', scopes: ['api://down/.default'] })
    assert.notEqual(b.accessToken, a.accessToken, "another user's token is not served")
    assert.equal(tokenRequests() - start, 2)
  })

  test('an on-behalf-of failure is typed and not cached', async (t) => {
    entra.setOutcomes(['invalid_grant', 'success'])
    t.after(() => entra.setOutcomes(['success']))
    const app = new ConfidentialClient({
      authority: 'https://login.microsoftonline.com/organizations',
      clientId: 'middle-tier',
      credential: { clientSecret: SECRET },
    })
    const options = { assertion: 'user-c-token', scopes: ['api://down/.default'] }
    await assert.rejects(
      app.acquireTokenOnBehalfOf(options),
      (err: unknown) => err instanceof OAuthServerError && !JSON.stringify(err).includes('user-c-token'),
    )
    assert.ok((await app.acquireTokenOnBehalfOf(options)).accessToken)
  })
})

describe('ConfidentialClient: client credentials against the real test IdP', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 900 })
  })
  after(() => idp.close())

  test('private_key_jwt (JWK): a JWT for the telemetry audience, reused from the cache, fresh on forceRefresh', async () => {
    const app = new ConfidentialClient({
      authority: idp.issuer,
      clientId: idp.confidentialClient.clientId,
      credential: { privateKey: idp.confidentialClient.privateJwk as Record<string, unknown> },
    })
    const issuedBefore = idp.issued.accessTokens.length
    const first = await app.acquireTokenByClientCredentials({
      scopes: [idp.apiScope],
      resource: idp.audience,
    })
    assert.equal(decodeJwt(first.accessToken).aud, idp.audience)
    assert.equal(decodeJwt(first.accessToken).client_id, idp.confidentialClient.clientId)
    const cached = await app.acquireTokenByClientCredentials({
      scopes: [idp.apiScope],
      resource: idp.audience,
    })
    assert.equal(cached, first)
    // A new assertion (fresh jti) each time the server is asked: the IdP refuses replays.
    const forced = await app.acquireTokenByClientCredentials({
      scopes: [idp.apiScope],
      resource: idp.audience,
      forceRefresh: true,
    })
    assert.notEqual(forced.accessToken, first.accessToken)
    const other = await app.acquireTokenByClientCredentials({
      scopes: [idp.apiScope],
      resource: idp.otherAudience,
    })
    assert.equal(decodeJwt(other.accessToken).aud, idp.otherAudience)
    assert.equal(idp.issued.accessTokens.length - issuedBefore, 3)
  })
})

describe('ConfidentialClient: the token cache (fake clock)', () => {
  test('reused while more than minTtlSeconds are left; the scope set ignores order and duplicates', async (t) => {
    let now = 1_900_000_000_000
    const { bodies } = mockIdp(t, [
      [200, token(1)],
      [200, token(2)],
    ])
    const app = new ConfidentialClient({
      authority: ORIGIN,
      clientId: 'svc',
      credential: { clientSecret: SECRET },
      now: () => now,
    })
    const a = await app.acquireTokenByClientCredentials({ scopes: ['b', 'a'] })
    now += (3600 - 301) * 1000
    assert.equal(await app.acquireTokenByClientCredentials({ scopes: ['a', 'b', 'a'] }), a)
    now += 2000
    const b = await app.acquireTokenByClientCredentials({ scopes: ['a', 'b'] })
    assert.equal(b.accessToken, 'at-2')
    assert.equal(bodies.length, 2)
  })

  test("Entra ID's refresh_in renews early; failures are not cached", async (t) => {
    let now = 1_900_000_000_000
    const { bodies } = mockIdp(t, [
      [200, token(1, { refresh_in: 1800 })],
      [503, { error: 'temporarily_unavailable' }],
      [200, token(3)],
    ])
    const app = new ConfidentialClient({
      authority: ORIGIN,
      clientId: 'svc',
      credential: { clientSecret: SECRET },
      now: () => now,
    })
    await app.acquireTokenByClientCredentials({ scopes: ['x'] })
    now += 1799 * 1000
    assert.equal((await app.acquireTokenByClientCredentials({ scopes: ['x'] })).accessToken, 'at-1')
    now += 2000
    await assert.rejects(app.acquireTokenByClientCredentials({ scopes: ['x'] }), { code: 'ERR_UNAVAILABLE' })
    assert.equal((await app.acquireTokenByClientCredentials({ scopes: ['x'] })).accessToken, 'at-3')
    assert.equal(bodies.length, 3)
  })

  test('maxCachedTokens bounds the default cache: one partition per resource, the least recently used goes first; clearCache() empties it', async (t) => {
    const { bodies } = mockIdp(
      t,
      [1, 2, 3, 4, 5].map((n) => [200, token(n)]),
    )
    const app = new ConfidentialClient({
      authority: ORIGIN,
      clientId: 'svc',
      credential: { clientSecret: SECRET },
      maxCachedTokens: 2,
    })
    const get = (resource: string) =>
      app.acquireTokenByClientCredentials({ scopes: ['x'], resource: `https://${resource}.test` })
    await get('a')
    await get('b')
    await get('c')
    assert.equal((await get('c')).accessToken, 'at-3')
    assert.equal((await get('a')).accessToken, 'at-4')
    await app.clearCache()
    assert.equal((await get('c')).accessToken, 'at-5')
    assert.equal(bodies.length, 5)
  })
})

describe('ConfidentialClient: token exchange for non-Entra authorities', () => {
  test('acquireTokenOnBehalfOf sends an RFC 8693 token exchange with the incoming token as subject_token', async (t) => {
    const { bodies } = mockIdp(t, [[200, token(1, { issued_token_type: ACCESS_TOKEN_TYPE })]])
    const app = new ConfidentialClient({
      authority: ORIGIN,
      clientId: 'api',
      credential: { clientSecret: SECRET },
    })
    const tokens = await app.acquireTokenOnBehalfOf({
      assertion: 'incoming-user-token',
      scopes: ['down:read'],
      resource: 'https://down.test',
    })
    assert.equal(tokens.accessToken, 'at-1')
    assert.deepEqual(Object.fromEntries(bodies[0] ?? []), {
      grant_type: TOKEN_EXCHANGE_GRANT_TYPE,
      subject_token: 'incoming-user-token',
      subject_token_type: ACCESS_TOKEN_TYPE,
      requested_token_type: ACCESS_TOKEN_TYPE,
      resource: 'https://down.test',
      scope: 'down:read',
    })
  })
})
