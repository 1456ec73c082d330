/**
 * Client credentials (RFC 6749 §4.4), authorization code + PKCE (RFC 6749 §4.1.3, RFC 7636 §4.5),
 * Entra ID on-behalf-of and RFC 8693 token exchange: request shapes against a MockAgent (no real
 * network), then end to end against the real test IdP (oidc-provider) and the Entra dialect server.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createRemoteJWKSet, decodeJwt, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose'
import { PublicClient } from '../../../src/client/public-client.js'
import { EdgeTokenError, InvalidResponseError, OAuthServerError } from '../../../src/errors.js'
import { type AuthorizationServer, resolveAuthority } from '../../../src/oauth/authority.js'
import {
  ACCESS_TOKEN_TYPE,
  authorizationCodeGrant,
  clientCredentialsGrant,
  JWT_BEARER_GRANT_TYPE,
  onBehalfOfGrant,
  TOKEN_EXCHANGE_GRANT_TYPE,
  tokenExchangeGrant,
} from '../../../src/oauth/grants/grants.js'
import {
  buildAuthorizationUrl,
  codeChallengeS256,
  generateCodeVerifier,
  generateNonce,
  generateState,
  validateAuthorizationResponse,
} from '../../../src/oauth/grants/pkce.js'
import { refreshTokenGrant } from '../../../src/oauth/grants/refresh.js'
import { clearJwksCache } from '../../../src/oauth/jwks.js'
import type { OAuthClient } from '../../../src/oauth/types.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../../support/entra.js'
import { authorizeInBrowserless } from '../../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../../support/idp.js'
import { JSON_HEADERS, mockHttp } from '../../support/mock-http.js'

const ORIGIN = 'https://idp.test'
const server: AuthorizationServer = Object.freeze({
  issuer: ORIGIN,
  dialect: 'oidc',
  tokenEndpoint: `${ORIGIN}/token`,
  authorizationEndpoint: `${ORIGIN}/authorize`,
  jwksUri: `${ORIGIN}/jwks`,
})
const entraServer: AuthorizationServer = Object.freeze({
  issuer: 'https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0',
  dialect: 'entra',
  tokenEndpoint: `${ORIGIN}/tenant/oauth2/v2.0/token`,
  jwksUri: `${ORIGIN}/tenant/discovery/v2.0/keys`,
  tenant: '72f988bf-86f1-41af-91ab-2d7cd011db47',
})
const SECRET = 'client-secret-7f3a9c'
const secretClient: OAuthClient = {
  clientId: 'svc',
  auth: { method: 'client_secret_basic', clientSecret: SECRET },
}
const postClient: OAuthClient = {
  clientId: 'svc',
  auth: { method: 'client_secret_post', clientSecret: SECRET },
}
const VERIFIER = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk'
const CODE = 'authz-code-secret-5521'
const ok = { access_token: 'at-secret-1', token_type: 'Bearer', expires_in: 300 }

interface Seen {
  body: URLSearchParams
  headers: Record<string, string>
}

/** Intercepts one POST to `path` and records its form body and headers. */
function expectPost(
  t: Parameters<typeof mockHttp>[0],
  path: string,
  status: number,
  reply: unknown,
  agent = mockHttp(t),
): { seen: Seen[]; agent: ReturnType<typeof mockHttp> } {
  const seen: Seen[] = []
  let body = ''
  agent
    .get(ORIGIN)
    .intercept({
      path,
      method: 'POST',
      body: (b) => {
        body = b
        return true
      },
      headers: (h) => {
        seen.push({ body: new URLSearchParams(body), headers: h as Record<string, string> })
        return true
      },
    })
    .reply(status, JSON.stringify(reply), { headers: JSON_HEADERS })
  return { seen, agent }
}

function noSecretsIn(err: unknown, secrets: string[]): boolean {
  const text = `${String((err as Error).message)} ${JSON.stringify(err)} ${String((err as Error).stack)}`
  return secrets.every((s) => !text.includes(s))
}

describe('grants: request shapes (MockAgent, no network)', () => {
  test('RFC 6749 §4.4.2: client credentials sends grant_type, scope and resource, authenticated with Basic', async (t) => {
    const { seen } = expectPost(t, '/token', 200, { ...ok, scope: 'api:write' })
    const tokens = await clientCredentialsGrant(server, secretClient, {
      scopes: ['api:write'],
      resource: 'https://api.test',
    })
    const [req] = seen
    assert.ok(req)
    assert.deepEqual(Object.fromEntries(req.body), {
      grant_type: 'client_credentials',
      scope: 'api:write',
      resource: 'https://api.test',
    })
    assert.match(req.headers.authorization ?? '', /^Basic /)
    assert.equal(tokens.accessToken, 'at-secret-1')
    assert.deepEqual(tokens.scopes, ['api:write'])
    assert.equal(tokens.refreshToken, undefined)
  })

  test('RFC 6749 §4.4: the client credentials grant MUST only be used by confidential clients', async () => {
    await assert.rejects(clientCredentialsGrant(server, { clientId: 'pub' }, { scopes: ['x'] }), {
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_VALUE',
    })
  })

  test('OIDC Core §12.2: JWKS down during a refresh keeps the rotated refresh token (id_token dropped)', async (t) => {
    clearJwksCache()
    const { privateKey } = await generateKeyPair('ES256')
    const iat = Math.floor(Date.now() / 1000)
    const idToken = await new SignJWT({ sub: 'user-1', iat, exp: iat + 600 })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(ORIGIN)
      .setAudience('app')
      .sign(privateKey)
    const { agent } = expectPost(t, '/token', 200, {
      ...ok,
      refresh_token: 'rt-2-rotated',
      id_token: idToken,
    })
    agent
      .get(ORIGIN)
      .intercept({ path: '/jwks' })
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))
      .times(3)
    const sleeps: number[] = []
    const tokens = await refreshTokenGrant(server, { clientId: 'app' }, 'rt-1', [], {
      sleep: async (ms) => void sleeps.push(ms),
    })
    assert.equal(tokens.refreshToken, 'rt-2-rotated')
    assert.equal(tokens.accessToken, 'at-secret-1')
    assert.equal(tokens.idTokenClaims, undefined)
    assert.match(tokens.warning ?? '', /signing keys at idp\.test cannot be fetched/)
    assert.deepEqual(sleeps, [1000, 2000])
  })

  test('an invalid_client answer is a typed OAuthServerError (ERR_CONFIG) without the secret', async (t) => {
    expectPost(t, '/token', 401, { error: 'invalid_client', error_description: 'bad secret' })
    await assert.rejects(clientCredentialsGrant(server, postClient, { scopes: ['x'] }), (err: unknown) => {
      return (
        err instanceof OAuthServerError &&
        err.code === 'ERR_CONFIG' &&
        err.error === 'invalid_client' &&
        err.status === 401 &&
        noSecretsIn(err, [SECRET])
      )
    })
  })

  test('RFC 6749 §4.1.3 + RFC 7636 §4.5: the code is redeemed with redirect_uri, client_id and code_verifier', async (t) => {
    const { seen } = expectPost(t, '/token', 200, { ...ok, refresh_token: 'rt-1' })
    const tokens = await authorizationCodeGrant(
      server,
      { clientId: 'app' },
      {
        code: CODE,
        redirectUri: 'http://127.0.0.1/cb',
        codeVerifier: VERIFIER,
        scopes: ['openid', 'offline_access'],
      },
    )
    assert.deepEqual(Object.fromEntries(seen[0]?.body ?? []), {
      grant_type: 'authorization_code',
      code: CODE,
      redirect_uri: 'http://127.0.0.1/cb',
      code_verifier: VERIFIER,
      client_id: 'app',
    })
    assert.equal(tokens.refreshToken, 'rt-1')
  })

  test('Entra ID: the code redemption repeats the scopes and asks for client_info', async (t) => {
    const { seen } = expectPost(t, '/tenant/oauth2/v2.0/token', 200, ok)
    await authorizationCodeGrant(
      entraServer,
      { clientId: 'app' },
      {
        code: CODE,
        redirectUri: 'http://localhost/cb',
        codeVerifier: VERIFIER,
        scopes: ['api://x/.default'],
      },
    )
    assert.equal(seen[0]?.body.get('scope'), 'api://x/.default')
    assert.equal(seen[0]?.body.get('client_info'), '1')
  })

  test('RFC 6749 §5.2: invalid_grant on a code redemption is ERR_OAUTH (not sign-in-required) and names no secret', async (t) => {
    expectPost(t, '/token', 400, { error: 'invalid_grant', error_description: 'PKCE verification failed' })
    await assert.rejects(
      authorizationCodeGrant(
        server,
        { clientId: 'app' },
        { code: CODE, redirectUri: 'http://127.0.0.1/cb', codeVerifier: VERIFIER, scopes: [] },
      ),
      (err: unknown) =>
        err instanceof OAuthServerError &&
        err.code === 'ERR_OAUTH' &&
        err.error === 'invalid_grant' &&
        noSecretsIn(err, [CODE, VERIFIER]),
    )
  })

  test('RFC 7636 §4.1: a malformed code_verifier is refused before any request', async () => {
    await assert.rejects(
      authorizationCodeGrant(
        server,
        { clientId: 'app' },
        { code: CODE, redirectUri: 'http://127.0.0.1/cb', codeVerifier: 'too-short', scopes: [] },
      ),
      { code: 'ERR_INVALID_ARG_VALUE' },
    )
  })

  test('OpenID Connect Core §3.1.3.7: the id_token nonce MUST equal the one sent', async (t) => {
    const { privateKey, publicKey } = await generateKeyPair('ES256')
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }
    const idToken = (nonce: string) =>
      new SignJWT({ nonce })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer(ORIGIN)
        .setSubject('u1')
        .setAudience('app')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(privateKey)
    const agent = mockHttp(t)
    agent
      .get(ORIGIN)
      .intercept({ path: '/jwks' })
      .reply(200, JSON.stringify({ keys: [jwk] }), { headers: JSON_HEADERS })
      .persist()
    const pool = agent.get(ORIGIN)
    pool
      .intercept({ path: '/token', method: 'POST' })
      .reply(200, JSON.stringify({ ...ok, id_token: await idToken('n-1') }), { headers: JSON_HEADERS })
    pool
      .intercept({ path: '/token', method: 'POST' })
      .reply(200, JSON.stringify({ ...ok, id_token: await idToken('forged') }), { headers: JSON_HEADERS })
    pool
      .intercept({ path: '/token', method: 'POST' })
      .reply(200, JSON.stringify(ok), { headers: JSON_HEADERS })
    const redeem = () =>
      authorizationCodeGrant(
        server,
        { clientId: 'app' },
        {
          code: CODE,
          redirectUri: 'http://127.0.0.1/cb',
          codeVerifier: VERIFIER,
          scopes: ['openid'],
          expectedNonce: 'n-1',
        },
      )
    const good = await redeem()
    assert.equal(good.idTokenClaims?.nonce, 'n-1')
    await assert.rejects(
      redeem(),
      (err: unknown) => err instanceof EdgeTokenError && /nonce/.test(err.message),
    )
    await assert.rejects(redeem(), { code: 'ERR_JWT_INVALID' })
  })

  test('Entra on-behalf-of: jwt-bearer grant, requested_token_use=on_behalf_of, assertion, scope, client_info', async (t) => {
    const ASSERTION = 'eyJ.incoming-user-token.sig'
    const { seen } = expectPost(t, '/tenant/oauth2/v2.0/token', 200, { ...ok, scope: 'api://down/.default' })
    const tokens = await onBehalfOfGrant(entraServer, postClient, {
      assertion: ASSERTION,
      scopes: ['api://down/.default'],
    })
    assert.deepEqual(Object.fromEntries(seen[0]?.body ?? []), {
      grant_type: JWT_BEARER_GRANT_TYPE,
      assertion: ASSERTION,
      requested_token_use: 'on_behalf_of',
      scope: 'api://down/.default',
      client_info: '1',
      client_id: 'svc',
      client_secret: SECRET,
    })
    assert.equal(tokens.accessToken, 'at-secret-1')
  })

  test('on-behalf-of is refused for a public client and for a non-Entra server', async () => {
    await assert.rejects(
      onBehalfOfGrant(entraServer, { clientId: 'pub' }, { assertion: 'a', scopes: ['x'] }),
      {
        code: 'ERR_INVALID_ARG_VALUE',
      },
    )
    await assert.rejects(onBehalfOfGrant(server, postClient, { assertion: 'a', scopes: ['x'] }), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
  })

  test('RFC 8693 §2.1: token exchange sends subject/actor tokens and types, requested_token_type, audience, resource, scope', async (t) => {
    const { seen } = expectPost(t, '/token', 200, { ...ok, issued_token_type: ACCESS_TOKEN_TYPE })
    const tokens = await tokenExchangeGrant(server, secretClient, {
      subjectToken: 'subject-secret',
      actorToken: 'actor-secret',
      actorTokenType: 'urn:ietf:params:oauth:token-type:jwt',
      audience: ['svc-a', 'svc-b'],
      resource: 'https://down.test',
      scopes: ['read'],
    })
    const body = seen[0]?.body ?? new URLSearchParams()
    assert.equal(body.get('grant_type'), TOKEN_EXCHANGE_GRANT_TYPE)
    assert.equal(body.get('subject_token'), 'subject-secret')
    assert.equal(body.get('subject_token_type'), ACCESS_TOKEN_TYPE)
    assert.equal(body.get('requested_token_type'), ACCESS_TOKEN_TYPE)
    assert.equal(body.get('actor_token'), 'actor-secret')
    assert.equal(body.get('actor_token_type'), 'urn:ietf:params:oauth:token-type:jwt')
    assert.deepEqual(body.getAll('audience'), ['svc-a', 'svc-b'])
    assert.deepEqual(body.getAll('resource'), ['https://down.test'])
    assert.equal(body.get('scope'), 'read')
    assert.equal(tokens.issuedTokenType, ACCESS_TOKEN_TYPE)
  })

  test('RFC 8693 §2.1: actor_token_type is REQUIRED with actor_token (and only then)', async () => {
    await assert.rejects(tokenExchangeGrant(server, secretClient, { subjectToken: 's', actorToken: 'a' }), {
      code: 'ERR_INVALID_ARG_VALUE',
    })
    await assert.rejects(
      tokenExchangeGrant(server, secretClient, { subjectToken: 's', actorTokenType: ACCESS_TOKEN_TYPE }),
      { code: 'ERR_INVALID_ARG_VALUE' },
    )
  })

  test('RFC 8693 §2.2.1: a response without issued_token_type (REQUIRED) is invalid', async (t) => {
    expectPost(t, '/token', 200, ok)
    await assert.rejects(
      tokenExchangeGrant(server, secretClient, { subjectToken: 'subject-secret' }),
      (err: unknown) =>
        err instanceof InvalidResponseError &&
        /issued_token_type/.test(err.message) &&
        noSecretsIn(err, ['subject-secret', 'at-secret-1']),
    )
  })
})

describe('grants against the real test IdP', () => {
  let idp: TestIdp
  let idpServer: AuthorizationServer
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 120 })
    idpServer = await resolveAuthority(idp.issuer)
  })
  after(() => idp.close())

  const serviceClient = (): OAuthClient => ({
    clientId: idp.confidentialClient.clientId,
    auth: {
      method: 'private_key_jwt',
      privateKey: idp.confidentialClient.privateJwk as Record<string, unknown>,
      alg: idp.confidentialClient.alg,
      kid: idp.confidentialClient.privateJwk.kid,
    },
  })

  test('client credentials with private_key_jwt: a JWT for the telemetry audience; every call signs a fresh assertion', async () => {
    const first = await clientCredentialsGrant(idpServer, serviceClient(), {
      scopes: [idp.apiScope],
      resource: idp.audience,
    })
    const { payload } = await jwtVerify(
      first.accessToken,
      createRemoteJWKSet(new URL(idpServer.jwksUri ?? '')),
      {
        issuer: idp.issuer,
        audience: idp.audience,
      },
    )
    assert.equal(payload.scope, idp.apiScope)
    assert.equal(payload.client_id, idp.confidentialClient.clientId)
    assert.ok(first.expiresAt > Date.now() + 100_000 && first.expiresAt <= Date.now() + 120_000)
    // The IdP refuses a replayed assertion (invalid_client); a second grant succeeds, so the jti was fresh.
    const second = await clientCredentialsGrant(idpServer, serviceClient(), { scopes: [idp.apiScope] })
    assert.notEqual(second.accessToken, first.accessToken)
    assert.equal(decodeJwt(second.accessToken).aud, idp.audience)
  })

  test('an unknown resource is invalid_target, typed', async () => {
    await assert.rejects(
      clientCredentialsGrant(idpServer, serviceClient(), {
        scopes: [idp.apiScope],
        resource: 'https://unknown.test',
      }),
      (err: unknown) => err instanceof OAuthServerError && err.error === 'invalid_target',
    )
  })

  test('auth code + PKCE end to end through PublicClient: tokens, verified id_token with the nonce, account', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    // OpenID Connect Core §11: this IdP grants offline_access (a refresh token) only with prompt=consent.
    const request = await client.getAuthorizationUrl({
      scopes: [idp.apiScope],
      redirectUri: 'http://127.0.0.1/cb',
      prompt: 'consent',
    })
    const url = new URL(request.url)
    assert.equal(url.searchParams.get('code_challenge'), codeChallengeS256(request.codeVerifier))
    assert.equal(url.searchParams.get('code_challenge_method'), 'S256')
    assert.ok(!request.url.includes(request.codeVerifier))
    const callback = await authorizeInBrowserless(request.url, { login: 'carol' })
    const { tokens, account } = await client.acquireTokenByCode(request, callback)
    assert.equal(account.id, 'carol')
    assert.equal(tokens.idTokenClaims?.nonce, request.nonce)
    assert.ok(tokens.refreshToken)
    assert.equal(decodeJwt(tokens.accessToken).aud, idp.audience)
  })

  async function authorize(): Promise<{ state: string; verifier: string; nonce: string; callback: URL }> {
    const verifier = generateCodeVerifier()
    const state = generateState()
    const nonce = generateNonce()
    const url = buildAuthorizationUrl(idpServer, {
      clientId: idp.publicClientId,
      redirectUri: 'http://127.0.0.1/cb',
      scopes: ['openid', idp.apiScope],
      state,
      nonce,
      codeChallenge: codeChallengeS256(verifier),
    })
    return { state, verifier, nonce, callback: await authorizeInBrowserless(url.href) }
  }

  test('RFC 6749 §10.12: a tampered state is rejected before the code is redeemed', async () => {
    const { callback } = await authorize()
    const tampered = new URL(callback)
    tampered.searchParams.set('state', 'attacker-state')
    const code = callback.searchParams.get('code') ?? '?'
    assert.throws(
      () =>
        validateAuthorizationResponse(tampered, { expectedState: callback.searchParams.get('state') ?? '' }),
      (err: unknown) => err instanceof InvalidResponseError && noSecretsIn(err, [code]),
    )
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const request = await client.getAuthorizationUrl({ scopes: [], redirectUri: 'http://127.0.0.1/cb' })
    await assert.rejects(client.acquireTokenByCode(request, callback), { code: 'ERR_INVALID_RESPONSE' })
  })

  test('RFC 9207: the IdP sends iss, and the response is checked against the discovered issuer', async () => {
    const { state, callback } = await authorize()
    assert.equal(callback.searchParams.get('iss'), idp.issuer)
    assert.throws(
      () => validateAuthorizationResponse(callback, { expectedState: state, issuer: 'https://other.test' }),
      InvalidResponseError,
    )
  })

  test('RFC 7636 §4.6: a wrong code_verifier is invalid_grant; RFC 6749 §4.1.2: a code MUST NOT be used twice', async () => {
    const { state, verifier, nonce, callback } = await authorize()
    const { code } = validateAuthorizationResponse(callback, {
      expectedState: state,
      issuer: idpServer.issuer,
      redirectUri: 'http://127.0.0.1/cb',
    })
    const redeem = (codeVerifier: string) =>
      authorizationCodeGrant(
        idpServer,
        { clientId: idp.publicClientId },
        { code, redirectUri: 'http://127.0.0.1/cb', codeVerifier, scopes: ['openid'], expectedNonce: nonce },
      )
    const wrong = generateCodeVerifier()
    await assert.rejects(
      redeem(wrong),
      (err: unknown) =>
        err instanceof OAuthServerError &&
        err.error === 'invalid_grant' &&
        noSecretsIn(err, [code, wrong, verifier]),
    )
    // The failed attempt does not consume the code at this IdP; the right verifier then redeems it.
    const tokens = await redeem(verifier)
    assert.equal(tokens.idTokenClaims?.nonce, nonce)
    // RFC 6749 §4.1.2: the code MUST NOT be used more than once.
    await assert.rejects(
      redeem(verifier),
      (err: unknown) => err instanceof OAuthServerError && err.error === 'invalid_grant',
    )
  })
})

describe('on-behalf-of against the Entra dialect server', () => {
  let entra: EntraDialectServer
  let entraAuthority: AuthorizationServer
  let unroute: () => Promise<void>
  before(async () => {
    entra = await startEntraDialect()
    unroute = routeEntraHosts(entra)
    entraAuthority = await resolveAuthority('https://login.microsoftonline.com/organizations')
  })
  after(async () => {
    await unroute()
    await entra.close()
  })

  const ASSERTION = 'eyJ0eXAiOiJKV1QifQ.user-token-for-middle-tier.sig'
  const middleTier: OAuthClient = {
    clientId: 'middle-tier',
    auth: { method: 'client_secret_post', clientSecret: SECRET },
  }

  test('the request has the on-behalf-of shape; openid in the scopes gives a verified id_token', async () => {
    const before = entra.requests.length
    const tokens = await onBehalfOfGrant(entraAuthority, middleTier, {
      assertion: ASSERTION,
      scopes: ['openid', 'api://downstream/.default'],
    })
    const req = entra.requests.slice(before).find((r) => r.path.endsWith('/oauth2/v2.0/token'))
    assert.ok(req)
    assert.equal(req.path, '/organizations/oauth2/v2.0/token')
    assert.equal(req.params.get('grant_type'), JWT_BEARER_GRANT_TYPE)
    assert.equal(req.params.get('requested_token_use'), 'on_behalf_of')
    assert.equal(req.params.get('assertion'), ASSERTION)
    assert.equal(req.params.get('scope'), 'openid api://downstream/.default')
    assert.equal(req.params.get('client_id'), 'middle-tier')
    assert.equal(req.params.get('client_secret'), SECRET)
    assert.deepEqual(tokens.scopes, ['api://downstream/.default'])
    assert.equal(tokens.idTokenClaims?.tid, entra.tenantId)
    assert.equal(tokens.refreshToken, undefined)
  })

  test('invalid_grant (AADSTS50013) is a typed error that shows neither assertion nor secret', async (t) => {
    entra.setOutcomes(['invalid_grant', 'success'])
    t.after(() => entra.setOutcomes(['success']))
    await assert.rejects(
      onBehalfOfGrant(entraAuthority, middleTier, {
        assertion: ASSERTION,
        scopes: ['api://downstream/.default'],
      }),
      (err: unknown) =>
        err instanceof OAuthServerError &&
        err.error === 'invalid_grant' &&
        /AADSTS50013/.test(err.message) &&
        noSecretsIn(err, [ASSERTION, SECRET]),
    )
  })
})
