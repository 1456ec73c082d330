/**
 * ConfidentialClient redeems an authorization code (issue 13 #4): a web app with a secret signs a
 * user in at the real test IdP with PKCE, `state`, `nonce` and `response_mode=form_post`, and the
 * same checks as the public client before the code is redeemed. And client capabilities as
 * `xms_cc` claims.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { ConfidentialClient } from '../../src/client/confidential-client.js'
import { authorizeInBrowserless, authorizeWithFormPost } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const WEB_APP = 'edgetoken-webapp'
const SECRET = 'webapp-secret-5e6f7a8b9c'
const REDIRECT = 'https://app.example/auth'

describe('ConfidentialClient: authorization code (web app)', () => {
  let idp: TestIdp
  let app: ConfidentialClient
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
    app = new ConfidentialClient({
      authority: idp.issuer,
      clientId: WEB_APP,
      credential: { clientSecret: SECRET },
      clientCapabilities: ['cp1'],
    })
  })
  after(() => idp.close())

  test('issue 13 #12: form_post response (OAuth 2.0 Form Post Response Mode) with PKCE S256, state, nonce and iss (RFC 9207) -> tokens', async () => {
    const request = await app.getAuthorizationUrl({
      scopes: [idp.apiScope],
      redirectUri: REDIRECT,
      prompt: 'consent',
    })
    const q = new URL(request.url).searchParams
    assert.equal(q.get('response_mode'), 'form_post')
    assert.equal(q.get('code_challenge_method'), 'S256')
    assert.equal(q.get('state'), request.state)
    assert.equal(q.get('nonce'), request.nonce)
    assert.deepEqual(JSON.parse(q.get('claims') ?? ''), { access_token: { xms_cc: { values: ['cp1'] } } })

    const post = await authorizeWithFormPost(request.url, { login: 'dana' })
    assert.equal(post.action, REDIRECT)
    assert.equal(post.fields.get('iss'), idp.issuer)
    const redemptions = idp.codeRedemptions
    const { tokens, account } = await app.acquireTokenByCode(request, post.fields.toString())
    assert.equal(account.id, 'dana')
    assert.ok(tokens.accessToken)
    assert.ok(tokens.refreshToken)
    assert.equal(idp.codeRedemptions, redemptions + 1)
  })

  test('issue 13 #13: RFC 6749 §10.12 a form_post with a wrong state or a mix-up iss is refused before the token endpoint', async () => {
    const request = await app.getAuthorizationUrl({ scopes: [idp.apiScope], redirectUri: REDIRECT })
    const post = await authorizeWithFormPost(request.url)
    const redemptions = idp.codeRedemptions
    const forged = new URLSearchParams(post.fields)
    forged.set('state', 'attacker')
    await assert.rejects(app.acquireTokenByCode(request, forged), {
      code: 'ERR_INVALID_RESPONSE',
      message: /state does not match/,
    })
    const mixUp = new URLSearchParams(post.fields)
    mixUp.set('iss', 'https://evil.example')
    await assert.rejects(app.acquireTokenByCode(request, mixUp), { message: /not the expected issuer/ })
    const repeated = `${post.fields.toString()}&code=second`
    await assert.rejects(app.acquireTokenByCode(request, repeated), { message: /code is repeated/ })
    assert.equal(idp.codeRedemptions, redemptions, 'nothing was redeemed')
    // The genuine response still works afterwards.
    const { account } = await app.acquireTokenByCode(request, post.fields)
    assert.equal(account.id, 'device-user')
  })

  test('issue 13 #14: the query response mode works too (the callback URL)', async () => {
    const request = await app.getAuthorizationUrl({
      scopes: [idp.apiScope],
      redirectUri: REDIRECT,
      responseMode: 'query',
    })
    assert.equal(new URL(request.url).searchParams.get('response_mode'), 'query')
    const callback = await authorizeInBrowserless(request.url)
    const { tokens } = await app.acquireTokenByCode(request, callback)
    assert.ok(tokens.accessToken)
    // A code is single use (RFC 6749 §4.1.2).
    await assert.rejects(app.acquireTokenByCode(request, callback), { error: 'invalid_grant' })
  })
})
