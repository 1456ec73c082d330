/**
 * PublicClient: the thin MSAL-like face over the protocol core.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { PublicClient } from '../../src/client/public-client.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { JSON_HEADERS, mockHttp } from '../support/mock-http.js'

describe('PublicClient', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1 })
  })
  after(() => idp.close())

  test('the constructor refuses insecure and malformed authorities', () => {
    assert.throws(() => new PublicClient({ authority: 'http://idp.example.com', clientId: 'c' }), {
      code: 'ERR_INSECURE_URL',
    })
    assert.throws(() => new PublicClient({ authority: 'not a url', clientId: 'c' }), { code: 'ERR_CONFIG' })
    const client = new PublicClient({ authority: 'https://idp.example.com/', clientId: 'c' })
    assert.equal(client.authority, 'https://idp.example.com/')
    assert.equal(client.clientId, 'c')
  })

  test('a failed discovery is not remembered: the next call tries again', async (t) => {
    const agent = mockHttp(t)
    const pool = agent.get('https://idp.example.com')
    // A 404 is not retried inside resolve(), so the first call fails.
    pool.intercept({ path: '/.well-known/openid-configuration' }).reply(404, 'not here')
    pool.intercept({ path: '/.well-known/openid-configuration' }).reply(
      200,
      {
        issuer: 'https://idp.example.com',
        token_endpoint: 'https://idp.example.com/token',
        jwks_uri: 'https://idp.example.com/jwks',
      },
      { headers: JSON_HEADERS },
    )
    const client = new PublicClient({ authority: 'https://idp.example.com', clientId: 'c' })
    await assert.rejects(client.resolve(), { code: 'ERR_INVALID_RESPONSE' })
    const server = await client.resolve()
    assert.equal(server.tokenEndpoint, 'https://idp.example.com/token')
    assert.equal(await client.resolve(), server, 'resolved once, then reused')
  })

  test('startDeviceFlow -> poll gives tokens and the account; the flow holds no device_code', async () => {
    const client = new PublicClient({ authority: idp.issuer, clientId: idp.publicClientId })
    const flow = await client.startDeviceFlow({ scopes: [idp.apiScope] })
    const deviceCode = idp.issued.deviceCodes.at(-1) ?? '?'
    assert.ok(!JSON.stringify(flow).includes(deviceCode))
    assert.ok(!Object.values(flow).some((v) => v === deviceCode))
    assert.deepEqual(flow.scopes, ['openid', 'profile', idp.apiScope, 'offline_access'])
    await approveDevice(idp.issuer, flow.userCode, { login: 'bob' })
    const { tokens, account } = await flow.poll()
    assert.equal(account.id, 'bob')
    assert.equal(account.username, 'bob')
    assert.ok(tokens.refreshToken)
    const renewed = await client.refresh(tokens.refreshToken, [idp.apiScope])
    assert.ok(renewed.accessToken)
    assert.equal(await client.revoke(renewed.refreshToken ?? '', 'refresh_token'), true)
  })
})
