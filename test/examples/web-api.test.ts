/**
 * Issue 18: the example web API end to end. It accepts a user's token with the reference
 * receiver's checks and forwards the user's telemetry downstream with a token obtained on the
 * user's behalf: RFC 8693 token exchange against oidc-provider (the token coming from a user signed
 * in through the example web app), and Entra ID's on-behalf-of grant against the Entra dialect
 * server.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { ConfidentialClient, MemoryTokenCache } from '../../src/index.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../support/entra.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { closeServer, freePort, listen } from '../support/net.js'
import { signIn, telemetry } from './drive.js'
import { createWebApi, type WebApi } from './web-api/api.js'
import { createWebApp } from './web-app/app.js'
import { MemorySessionStore } from './web-app/sessions.js'

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
const CALLER = 'edgetoken-webapp-caller'
const CALLER_SECRET = 'caller-secret-1a2b3c4d'
const WEB_API = 'edgetoken-webapi'
const WEB_API_SECRET = 'webapi-secret-5e6f7a8b'

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{
  server: Server
  url: string
}> {
  const server = createServer(handler)
  return { server, url: `http://127.0.0.1:${await listen(server)}` }
}

/** Posts one telemetry batch to the web API with a bearer token. */
async function postBatch(
  url: string,
  token: string,
  batchId = randomUUID(),
): Promise<{ status: number; text: string; challenge: string | null }> {
  const response = await fetch(`${url}/telemetry`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'idempotency-key': batchId,
    },
    body: JSON.stringify({ device_id: 'gw-1', batch_id: batchId, seq: 0, records: [{ t: 21.5 }] }),
  })
  return {
    status: response.status,
    text: await response.text(),
    challenge: response.headers.get('www-authenticate'),
  }
}

function assertNoSecrets(text: string, secrets: readonly string[]): void {
  assert.doesNotMatch(text, /\n\s+at |\.ts:\d+/, 'no stack trace')
  for (const secret of secrets) assert.ok(!text.includes(secret), 'no token or secret in the answer')
}

describe('issue 18 example web API: RFC 8693 token exchange against oidc-provider', () => {
  let idp: TestIdp
  let downstream: TestApi
  let api: { server: Server; url: string; webApi: WebApi }
  let app: Server
  let appUrl: string

  before(async () => {
    const port = await freePort()
    appUrl = `http://127.0.0.1:${port}`
    idp = await startTestIdp({
      tokenExchange: true,
      defaultResources: { [CALLER]: 'https://webapi.test' },
      clients: [
        {
          client_id: CALLER,
          client_secret: CALLER_SECRET,
          token_endpoint_auth_method: 'client_secret_basic',
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          redirect_uris: [`${appUrl}/auth/callback`],
        },
        {
          client_id: WEB_API,
          client_secret: WEB_API_SECRET,
          token_endpoint_auth_method: 'client_secret_basic',
          grant_types: [TOKEN_EXCHANGE],
          response_types: [],
          redirect_uris: [],
        },
      ],
    })
    downstream = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    const webApi = createWebApi({
      issuer: idp.issuer,
      audience: idp.webApiAudience,
      requiredScope: idp.webApiScope,
      client: new ConfidentialClient({
        authority: idp.issuer,
        clientId: WEB_API,
        credential: { clientSecret: WEB_API_SECRET },
        cache: new MemoryTokenCache(),
      }),
      downstream: { url: downstream.url, scopes: [idp.apiScope], resource: idp.audience },
      log: () => {},
    })
    api = { ...(await serve(webApi.handler)), webApi }
    app = createServer(
      createWebApp({
        client: new ConfidentialClient({
          authority: idp.issuer,
          clientId: CALLER,
          credential: { clientSecret: CALLER_SECRET },
          cache: new MemoryTokenCache(),
        }),
        publicUrl: appUrl,
        scopes: [idp.webApiScope],
        apiUrl: `${api.url}/telemetry`,
        sessions: new MemorySessionStore(),
        prompt: 'consent',
        log: () => {},
      }),
    )
    await listen(app, port)
  })
  after(async () => {
    await closeServer(app)
    api.webApi.close()
    await closeServer(api.server)
    await downstream.close()
    await idp.close()
  })

  test('issue 18 #7: RFC 8693 §2.1 the web API exchanges the user token it accepted and forwards the batch downstream as that user', async () => {
    const grace = await signIn(appUrl, 'grace')
    const first = await telemetry(appUrl, grace)
    assert.equal(first.status, 200, first.text)
    assert.equal(first.body.user, 'grace')
    assert.equal(idp.tokenExchanges, 1)
    assert.equal(
      downstream.receiver.batches.at(-1)?.subject,
      'grace',
      'downstream sees the user, not the API',
    )

    // The downstream token is cached per incoming token: the next batch costs no exchange.
    const second = await telemetry(appUrl, grace)
    assert.equal(second.status, 200, second.text)
    assert.equal(idp.tokenExchanges, 1)
    assert.equal(downstream.receiver.batches.length, 2)

    const heidi = await signIn(appUrl, 'heidi')
    assert.equal((await telemetry(appUrl, heidi)).status, 200)
    assert.equal(idp.tokenExchanges, 2, "another user's token is exchanged on its own")
    assert.equal(downstream.receiver.batches.at(-1)?.subject, 'heidi')
  })

  test('issue 18 #8: RFC 6750 §3.1 a token for another audience is refused by the receiver checks, before any exchange', async () => {
    const exchanges = idp.tokenExchanges
    const forTelemetry = await idp.signAccessToken({ sub: 'mallory' })
    const answer = await postBatch(api.url, forTelemetry)
    assert.equal(answer.status, 401)
    assert.match(answer.challenge ?? '', /error="invalid_token"/)
    const noScope = await idp.signAccessToken({ aud: idp.webApiAudience, scope: 'openid' })
    assert.equal((await postBatch(api.url, noScope)).status, 403)
    assert.equal(idp.tokenExchanges, exchanges)
  })

  test('issue 18 #9: a refused exchange is a clean 500 without stack or token, and the batch can be retried', async () => {
    const ivan = await signIn(appUrl, 'ivan')
    const batches = downstream.receiver.batches.length
    idp.revokeClient(WEB_API)
    try {
      const refused = await telemetry(appUrl, ivan)
      assert.equal(refused.status, 502, refused.text)
      assert.deepEqual(refused.body.api, {
        status: 500,
        error: 'server_error',
        error_description: 'the batch could not be processed',
      })
      assertNoSecrets(refused.text, [...idp.issued.accessTokens, ...idp.issued.refreshTokens, WEB_API_SECRET])
      assert.equal(downstream.receiver.batches.length, batches)
    } finally {
      idp.revokeClient(WEB_API, false)
    }
    const retried = await telemetry(appUrl, ivan)
    assert.equal(retried.status, 200, retried.text)
    assert.equal(downstream.receiver.batches.at(-1)?.subject, 'ivan')
  })
})

describe('issue 18 example web API: Entra ID on-behalf-of against the Entra dialect server', () => {
  // Entra ID v2.0 access tokens for an API carry its application (client) id as `aud`.
  const apiClientId = randomUUID()
  const callerClientId = randomUUID()
  let entra: EntraDialectServer
  let unroute: () => Promise<void>
  let api: { server: Server; url: string; webApi: WebApi }

  before(async () => {
    entra = await startEntraDialect()
    unroute = routeEntraHosts(entra)
    const webApi = createWebApi({
      issuer: `https://login.microsoftonline.com/${entra.tenantId}/v2.0`,
      jwksUri: entra.jwksUri,
      audience: apiClientId,
      requiredScope: 'access_as_user',
      client: new ConfidentialClient({
        authority: `https://login.microsoftonline.com/${entra.tenantId}`,
        clientId: apiClientId,
        credential: { clientSecret: WEB_API_SECRET },
        cache: new MemoryTokenCache(),
      }),
      downstream: { url: entra.apiUrl, scopes: ['api://downstream/.default'] },
      log: () => {},
    })
    api = { ...(await serve(webApi.handler)), webApi }
  })
  after(async () => {
    api.webApi.close()
    await closeServer(api.server)
    await unroute()
    await entra.close()
  })

  const userToken = (claims: Record<string, unknown> = {}) =>
    entra.signAccessToken({ aud: apiClientId, azp: callerClientId, scp: 'access_as_user', ...claims })
  const oboRequests = () =>
    entra.requests.filter(
      (r) => r.path.endsWith('/oauth2/v2.0/token') && r.params.get('grant_type') === JWT_BEARER,
    )

  test('issue 18 #10: Entra ID on-behalf-of: the web API trades the user token (jwt-bearer, requested_token_use=on_behalf_of) and forwards the batch', async () => {
    const token = await userToken()
    const batchId = randomUUID()
    const answer = await postBatch(api.url, token, batchId)
    assert.equal(answer.status, 200, answer.text)

    const [obo, ...more] = oboRequests()
    assert.equal(more.length, 0)
    assert.equal(obo?.params.get('assertion'), token, 'the assertion is the token the API received')
    assert.equal(obo?.params.get('requested_token_use'), 'on_behalf_of')
    assert.equal(obo?.params.get('scope'), 'api://downstream/.default')
    assert.equal(obo?.params.get('client_id'), apiClientId)
    assert.equal(obo?.params.get('client_secret'), WEB_API_SECRET, 'client_secret_post, as Entra ID takes it')
    assert.equal(entra.apiAccepted.at(-1)?.batch_id, batchId)

    // Cached per incoming token; another user's token is traded on its own.
    assert.equal((await postBatch(api.url, token)).status, 200)
    assert.equal(oboRequests().length, 1)
    assert.equal((await postBatch(api.url, await userToken({ oid: randomUUID(), sub: 'other' }))).status, 200)
    assert.equal(oboRequests().length, 2)
  })

  test('issue 18 #11: an on-behalf-of refused by Entra ID (invalid_grant, AADSTS50013) is a clean 500; the retry goes through', async () => {
    const token = await userToken({ oid: randomUUID() })
    const accepted = entra.apiAccepted.length
    const batchId = randomUUID()
    entra.setOutcomes(['invalid_grant', 'success'])
    const refused = await postBatch(api.url, token, batchId)
    assert.equal(refused.status, 500, refused.text)
    assert.deepEqual(JSON.parse(refused.text), {
      error: 'server_error',
      error_description: 'the batch could not be processed',
    })
    assertNoSecrets(refused.text, [token, WEB_API_SECRET])
    assert.equal(entra.apiAccepted.length, accepted)
    // A failure is not cached, and the receiver did not remember the batch: the same key goes through.
    const retried = await postBatch(api.url, token, batchId)
    assert.equal(retried.status, 200, retried.text)
    assert.equal(entra.apiAccepted.at(-1)?.batch_id, batchId)
  })

  test('issue 18 #12: RFC 6750 §3.1 a token for another API or without the scope is refused before any on-behalf-of', async () => {
    const before = oboRequests().length
    const otherAudience = await postBatch(api.url, await userToken({ aud: randomUUID() }))
    assert.equal(otherAudience.status, 401)
    assert.match(otherAudience.challenge ?? '', /error="invalid_token"/)
    assert.equal((await postBatch(api.url, await userToken({ scp: 'User.Read' }))).status, 403)
    assert.equal((await postBatch(api.url, 'not-a-token')).status, 401)
    assert.equal(oboRequests().length, before)
  })
})
