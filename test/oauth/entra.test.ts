/**
 * The Microsoft Entra ID dialect: authority parsing, v2.0 paths, the `{tenantid}` issuer template,
 * `client_info=1` and `uid.utid` accounts, `authorization_declined` — against the loopback dialect
 * server (test/support/entra.ts), reached through an origin-rewriting HTTP dispatcher.
 */
import assert from 'node:assert/strict'
import { after, afterEach, before, describe, test } from 'node:test'
import { exitCodeFor } from '../../src/cli/exit-codes.js'
import { PublicClient } from '../../src/client/public-client.js'
import { ConfigError, OAuthServerError } from '../../src/errors.js'
import { parseAuthority, resolveAuthority } from '../../src/oauth/authority.js'
import { pollDeviceAuthorization, startDeviceAuthorization } from '../../src/oauth/grants/device.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import { accountFromTokenSet } from '../../src/oauth/tokens.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../support/entra.js'

const CLIENT_ID = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'

/** Instant sleep on a fake clock that starts now (the dialect server signs with the real time). */
function fakeClock() {
  let now = Date.now()
  const sleeps: number[] = []
  return {
    now: () => now,
    sleeps,
    sleep: async (ms: number) => {
      sleeps.push(ms)
      now += ms
    },
  }
}

describe('Entra ID authorities', () => {
  test('login.microsoftonline.com/<tenant> and the sovereign clouds are the entra dialect', () => {
    for (const host of [
      'login.microsoftonline.com',
      'login.microsoftonline.us',
      'login.chinacloudapi.cn',
      'login.partner.microsoftonline.cn',
    ]) {
      const parsed = parseAuthority(`https://${host}/contoso.onmicrosoft.com`)
      assert.equal(parsed.kind, 'entra', host)
      assert.ok(parsed.kind === 'entra' && parsed.tenant === 'contoso.onmicrosoft.com')
    }
    const v2 = parseAuthority('https://login.microsoftonline.com/common/v2.0')
    assert.ok(v2.kind === 'entra' && v2.tenant === 'common')
  })

  test('an Entra authority without a tenant is a config error', () => {
    assert.throws(
      () => parseAuthority('https://login.microsoftonline.com/'),
      (err: unknown) => {
        return err instanceof ConfigError && err.code === 'ERR_CONFIG' && /tenant/.test(err.message)
      },
    )
  })

  test('http:// authorities are refused except loopback, and the message says so', () => {
    assert.throws(
      () => parseAuthority('http://login.microsoftonline.com/common'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        assert.equal(err.code, 'ERR_INSECURE_URL')
        assert.equal(err.key, 'authority')
        assert.match(err.message, /https:\/\/.*http:\/\/ is allowed only for loopback hosts/)
        return true
      },
    )
    assert.throws(() => new PublicClient({ authority: 'http://idp.example.com', clientId: 'x' }), {
      code: 'ERR_INSECURE_URL',
    })
    assert.equal(parseAuthority('http://127.0.0.1:8080').kind, 'oidc')
    assert.equal(parseAuthority('http://localhost:8080/realms/x').kind, 'oidc')
    assert.throws(() => parseAuthority('ftp://idp.example.com'), { code: 'ERR_INSECURE_URL' })
  })
})

describe('Entra ID dialect server', () => {
  let entra: EntraDialectServer
  let unroute: () => Promise<void>
  before(async () => {
    entra = await startEntraDialect()
    // login.microsoftonline.com is answered by the loopback dialect server (an origin-rewriting
    // undici dispatcher): the library has no test-only option.
    unroute = routeEntraHosts(entra)
  })
  after(async () => {
    await unroute()
    await entra.close()
  })
  // Restores what a test changed on the shared server, even when it fails.
  let undo: (() => void)[] = []
  const t_after = (fn: () => void) => undo.push(fn)
  afterEach(() => {
    for (const fn of undo) fn()
    undo = []
  })

  const resolve = (tenant: string) => resolveAuthority(`https://login.microsoftonline.com/${tenant}`)

  test('discovery: v2.0 paths and the {tenantid} issuer template for common', async () => {
    const server = await resolve('common')
    assert.equal(server.dialect, 'entra')
    assert.equal(server.issuer, 'https://login.microsoftonline.com/{tenantid}/v2.0')
    assert.equal(server.tokenEndpoint, `${entra.baseUrl}/common/oauth2/v2.0/token`)
    assert.equal(server.deviceAuthorizationEndpoint, `${entra.baseUrl}/common/oauth2/v2.0/devicecode`)
    assert.ok(entra.requests.some((r) => r.path === '/common/v2.0/.well-known/openid-configuration'))
  })

  test('discovery: a tenant GUID authority gets that tenant as issuer; another tenant is rejected', async () => {
    const server = await resolve(entra.tenantId)
    assert.equal(server.issuer, `https://login.microsoftonline.com/${entra.tenantId}/v2.0`)
    // A GUID authority whose document names {tenantid} (or another GUID) is not that tenant.
    await assert.rejects(
      resolveAuthority('https://login.microsoftonline.com/00000000-0000-0000-0000-000000000001'),
      { code: 'ERR_INVALID_RESPONSE', message: /not an Entra ID issuer/ },
    )
  })

  test('device flow: message, no verification_uri_complete, client_info=1, uid.utid account', async () => {
    entra.setOutcomes(['authorization_pending', 'authorization_pending', 'success'])
    const server = await resolve('organizations')
    const clock = fakeClock()
    const client = { clientId: CLIENT_ID }
    const flow = await startDeviceAuthorization(
      server,
      client,
      ['openid', 'profile', 'offline_access', 'User.Read'],
      {
        now: clock.now,
      },
    )
    assert.equal(flow.verificationUri, 'https://microsoft.com/devicelogin')
    assert.equal(flow.verificationUriComplete, undefined)
    assert.equal(flow.intervalSeconds, 5)
    assert.match(flow.message ?? '', new RegExp(`enter the code ${flow.userCode} to authenticate`))
    const tokens = await pollDeviceAuthorization(server, client, flow, { now: clock.now, sleep: clock.sleep })
    assert.deepEqual(clock.sleeps, [5000, 5000, 5000])
    assert.equal(tokens.tokenType, 'bearer')
    assert.deepEqual(tokens.scopes, ['User.Read'])
    assert.equal(tokens.idTokenClaims?.iss, `https://login.microsoftonline.com/${entra.tenantId}/v2.0`)
    assert.equal(tokens.idTokenClaims?.tid, entra.tenantId)
    const polls = entra.requests.filter((r) => r.path === '/organizations/oauth2/v2.0/token')
    assert.equal(polls.length, 3)
    for (const poll of polls) {
      assert.equal(poll.params.get('client_info'), '1')
      assert.equal(poll.params.get('grant_type'), 'urn:ietf:params:oauth:grant-type:device_code')
      assert.equal(poll.params.get('client_id'), CLIENT_ID)
    }
    const account = accountFromTokenSet(server, CLIENT_ID, tokens)
    assert.deepEqual(account, {
      id: `${entra.objectId}.${entra.tenantId}`,
      username: 'adele@contoso.example',
      tenant: entra.tenantId,
      issuer: `https://login.microsoftonline.com/${entra.tenantId}/v2.0`,
    })
  })

  for (const [outcome, code] of [
    ['authorization_declined', 'ERR_ACCESS_DENIED'],
    ['expired_token', 'ERR_EXPIRED'],
    ['bad_verification_code', 'ERR_OAUTH'],
  ] as const) {
    test(`RFC 8628 §3.5 Entra ${outcome} ends polling with ${code}`, async () => {
      entra.setOutcomes(['authorization_pending', outcome])
      const client = new PublicClient({
        authority: 'https://login.microsoftonline.com/common',
        clientId: CLIENT_ID,
      })
      const flow = await client.startDeviceFlow({ scopes: ['User.Read'] })
      const clock = fakeClock()
      await assert.rejects(flow.poll({ now: clock.now, sleep: clock.sleep }), (err: unknown) => {
        assert.ok(err instanceof OAuthServerError)
        assert.equal(err.code, code)
        assert.equal(err.error, outcome)
        assert.match(err.message, /AADSTS/)
        return true
      })
      assert.equal(clock.sleeps.length, 2)
    })
  }

  const BLOCKED =
    /^the tenant blocks the device code flow by Conditional Access \(AADSTS53003\): sign in with a client certificate or managed identity \(config grant\), or run 'edgetoken login --browser'$/

  test('issue 11 #3: a tenant that blocks the device code flow by Conditional Access (AADSTS53003) at a poll says so and names the alternatives (exit 2)', async () => {
    entra.setOutcomes(['authorization_pending', 'conditional_access_blocked'])
    t_after(() => entra.setOutcomes(['success']))
    const server = await resolve('organizations')
    const clock = fakeClock()
    const client = { clientId: CLIENT_ID }
    const flow = await startDeviceAuthorization(server, client, ['openid', 'offline_access'], {
      now: clock.now,
    })
    await assert.rejects(
      pollDeviceAuthorization(server, client, flow, { now: clock.now, sleep: clock.sleep }),
      (err: unknown) => {
        assert.ok(err instanceof OAuthServerError)
        assert.equal(err.code, 'ERR_DEVICE_FLOW_BLOCKED')
        assert.equal(err.category, 'config')
        assert.equal(exitCodeFor(err.category), 2)
        // The server's answer stays on the error for callers that want it.
        assert.equal(err.error, 'invalid_grant')
        assert.equal(err.status, 400)
        assert.match(
          err.errorDescription ?? '',
          /^AADSTS53003: Access has been blocked by Conditional Access/,
        )
        assert.match(err.message, BLOCKED)
        return true
      },
    )
    // Polling ended at the block: no further request.
    assert.equal(clock.sleeps.length, 2)
  })

  test('issue 11 #3: AADSTS53003 at the device authorization request (RFC 8628 §3.2 error response) is the same error', async () => {
    entra.setDeviceCodeOutcome('conditional_access_blocked')
    t_after(() => entra.setDeviceCodeOutcome('success'))
    const server = await resolve('organizations')
    await assert.rejects(startDeviceAuthorization(server, { clientId: CLIENT_ID }, ['openid']), {
      code: 'ERR_DEVICE_FLOW_BLOCKED',
      message: BLOCKED,
    })
  })

  test('issue 11 #3: AADSTS53003 on a refresh is not about the device code flow: it keeps its OAuth mapping', async () => {
    entra.setOutcomes(['conditional_access_blocked'])
    t_after(() => entra.setOutcomes(['success']))
    const server = await resolve('organizations')
    await assert.rejects(
      refreshTokenGrant(server, { clientId: CLIENT_ID }, 'some-refresh-token', ['User.Read']),
      {
        code: 'ERR_SIGNIN_REQUIRED',
      },
    )
  })

  test('an id_token for another audience is rejected (ERR_JWT_INVALID)', async (t) => {
    entra.setOutcomes(['success'])
    entra.setIdTokenAudience('some-other-app')
    t.after(() => entra.setIdTokenAudience(undefined))
    const client = new PublicClient({
      authority: 'https://login.microsoftonline.com/common',
      clientId: CLIENT_ID,
    })
    const flow = await client.startDeviceFlow({ scopes: ['User.Read'] })
    const clock = fakeClock()
    await assert.rejects(flow.poll({ now: clock.now, sleep: clock.sleep }), {
      code: 'ERR_JWT_INVALID',
      message: /aud/,
    })
  })

  test('PublicClient adds openid profile offline_access; refresh sends client_info=1 and scope', async () => {
    entra.setOutcomes(['success'])
    const client = new PublicClient({
      authority: 'https://login.microsoftonline.com/common',
      clientId: CLIENT_ID,
    })
    const flow = await client.startDeviceFlow({ scopes: ['User.Read'] })
    const start = entra.requests.filter((r) => r.path === '/common/oauth2/v2.0/devicecode').at(-1)
    assert.equal(start?.params.get('scope'), 'openid profile User.Read offline_access')
    const clock = fakeClock()
    const { tokens, account } = await flow.poll({ now: clock.now, sleep: clock.sleep })
    assert.equal(account.id, `${entra.objectId}.${entra.tenantId}`)
    assert.ok(tokens.refreshToken)
    const server = await client.resolve()
    const renewed = await refreshTokenGrant(server, { clientId: CLIENT_ID }, tokens.refreshToken, [
      'User.Read',
    ])
    const refresh = entra.requests.at(-1)
    assert.equal(refresh?.params.get('grant_type'), 'refresh_token')
    assert.equal(refresh?.params.get('client_info'), '1')
    assert.equal(refresh?.params.get('scope'), 'User.Read')
    assert.ok(renewed.clientInfo)
    assert.notEqual(renewed.refreshToken, tokens.refreshToken)
  })
})
