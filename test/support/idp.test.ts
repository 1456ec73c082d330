import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { createRemoteJWKSet, decodeJwt, importJWK, jwtVerify, SignJWT } from 'jose'
import { approveDevice, denyDevice } from './headless-user.js'
import { startTestIdp, type TestIdp } from './idp.js'

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code'
const SCOPE = 'openid offline_access telemetry:write'

interface Answer {
  status: number
  body: Record<string, unknown>
}

async function post(idp: TestIdp, path: string, form: Record<string, string>): Promise<Answer> {
  const response = await fetch(new URL(path, idp.issuer), { method: 'POST', body: new URLSearchParams(form) })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

async function startDevice(
  idp: TestIdp,
  scope = SCOPE,
): Promise<{ deviceCode: string; userCode: string; body: Record<string, unknown> }> {
  const { status, body } = await post(idp, '/device/auth', { client_id: idp.publicClientId, scope })
  assert.equal(status, 200)
  assert.equal(typeof body.device_code, 'string')
  assert.equal(typeof body.user_code, 'string')
  return { deviceCode: body.device_code as string, userCode: body.user_code as string, body }
}

function poll(idp: TestIdp, deviceCode: string): Promise<Answer> {
  return post(idp, '/token', {
    client_id: idp.publicClientId,
    grant_type: DEVICE_GRANT,
    device_code: deviceCode,
  })
}

function refresh(idp: TestIdp, refreshToken: string): Promise<Answer> {
  return post(idp, '/token', {
    client_id: idp.publicClientId,
    grant_type: 'refresh_token',
    refresh_token: refreshToken,
  })
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('test IdP: device flow', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp()
  })
  after(() => idp.close())

  test('a raw device flow yields a JWT access token for the API, a refresh token and an id_token', async () => {
    const { deviceCode, userCode, body } = await startDevice(idp)
    assert.equal(body.interval, 5)
    assert.equal(body.expires_in, 600)
    assert.equal(body.verification_uri, `${idp.issuer}/device`)

    const pending = await poll(idp, deviceCode)
    assert.equal(pending.status, 400)
    assert.equal(pending.body.error, 'authorization_pending')

    await approveDevice(idp.issuer, userCode, { login: 'alice' })
    const { status, body: tokens } = await poll(idp, deviceCode)
    assert.equal(status, 200)
    assert.equal(tokens.token_type, 'Bearer')
    assert.equal(tokens.scope, 'telemetry:write')
    assert.equal(typeof tokens.refresh_token, 'string')

    const jwks = createRemoteJWKSet(new URL(`${idp.issuer}/jwks`))
    const access = await jwtVerify(tokens.access_token as string, jwks, {
      issuer: idp.issuer,
      audience: idp.audience,
    })
    assert.equal(access.payload.sub, 'alice')
    assert.equal(access.payload.scope, 'telemetry:write')
    const id = await jwtVerify(tokens.id_token as string, jwks, {
      issuer: idp.issuer,
      audience: idp.publicClientId,
    })
    assert.equal(id.payload.sub, 'alice')
    assert.equal(id.payload.preferred_username, undefined)

    // The code is single use.
    assert.equal((await poll(idp, deviceCode)).body.error, 'invalid_grant')
  })

  test('records every poll without the device_code, and every secret issued', async () => {
    const before = idp.polls.length
    const { deviceCode, userCode } = await startDevice(idp, `${SCOPE} profile`)
    await poll(idp, deviceCode)
    await approveDevice(idp.issuer, userCode, { login: 'bob' })
    const tokens = (await poll(idp, deviceCode)).body
    // With the profile scope the id_token names the user.
    assert.equal(decodeJwt(tokens.id_token as string).preferred_username, 'bob')

    const mine = idp.polls.slice(before)
    assert.equal(mine.length, 2)
    assert.deepEqual(
      mine.map((p) => [p.status, p.error]),
      [
        [400, 'authorization_pending'],
        [200, undefined],
      ],
    )
    assert.match(mine[0]?.deviceCodeHash ?? '', /^[0-9a-f]{64}$/)
    assert.equal(mine[0]?.deviceCodeHash, mine[1]?.deviceCodeHash)
    assert.ok(!JSON.stringify(idp.polls).includes(deviceCode))
    assert.ok(mine.every((p) => p.at >= Date.now() - 60_000 && p.at <= Date.now()))

    assert.ok(idp.issued.deviceCodes.includes(deviceCode))
    assert.ok(idp.issued.userCodes.includes(userCode))
    assert.ok(idp.issued.accessTokens.includes(tokens.access_token as string))
    assert.ok(idp.issued.refreshTokens.includes(tokens.refresh_token as string))
    assert.ok(idp.issued.idTokens.includes(tokens.id_token as string))
  })

  test('denying on the confirmation page gives access_denied', async () => {
    const { deviceCode, userCode } = await startDevice(idp)
    await denyDevice(idp.issuer, userCode, 'confirm')
    const { status, body } = await poll(idp, deviceCode)
    assert.equal(status, 400)
    assert.equal(body.error, 'access_denied')
  })

  test('denying at consent gives access_denied', async () => {
    const { deviceCode, userCode } = await startDevice(idp)
    await denyDevice(idp.issuer, userCode, 'consent')
    const { status, body } = await poll(idp, deviceCode)
    assert.equal(status, 400)
    assert.equal(body.error, 'access_denied')
  })

  test('approveDevice fails with a clear message for an unknown user code', async () => {
    await assert.rejects(approveDevice(idp.issuer, 'BCDF-GHJK'), /user code was not accepted/)
  })

  test('refresh tokens rotate, and reusing an old one revokes the grant', async () => {
    const { deviceCode, userCode } = await startDevice(idp)
    await approveDevice(idp.issuer, userCode)
    const first = (await poll(idp, deviceCode)).body.refresh_token as string
    const refreshesBefore = idp.refreshes

    const rotated = await refresh(idp, first)
    assert.equal(rotated.status, 200)
    const second = rotated.body.refresh_token as string
    assert.equal(typeof second, 'string')
    assert.notEqual(second, first)
    assert.equal(decodeJwt(rotated.body.access_token as string).aud, idp.audience)

    const reuse = await refresh(idp, first)
    assert.equal(reuse.status, 400)
    assert.equal(reuse.body.error, 'invalid_grant')
    const afterReuse = await refresh(idp, second)
    assert.equal(afterReuse.status, 400)
    assert.equal(afterReuse.body.error, 'invalid_grant')
    assert.equal(idp.refreshes, refreshesBefore + 3)
    assert.ok(idp.issued.refreshTokens.includes(second))
  })

  test('revocation is enabled', async () => {
    const { deviceCode, userCode } = await startDevice(idp)
    await approveDevice(idp.issuer, userCode)
    const rt = (await poll(idp, deviceCode)).body.refresh_token as string
    const revoke = await fetch(`${idp.issuer}/token/revocation`, {
      method: 'POST',
      body: new URLSearchParams({ client_id: idp.publicClientId, token: rt }),
    })
    assert.equal(revoke.status, 200)
    assert.equal((await refresh(idp, rt)).body.error, 'invalid_grant')
  })
})

describe('test IdP: polling behaviour', () => {
  test('with slowDown, a poll sooner than interval after the previous one gets slow_down', async (t) => {
    const idp = await startTestIdp({ slowDown: true, interval: 30 })
    t.after(() => idp.close())
    const { deviceCode } = await startDevice(idp)
    // The first poll has no predecessor, so it is pending; the next one is too early.
    assert.equal((await poll(idp, deviceCode)).body.error, 'authorization_pending')
    const early = await poll(idp, deviceCode)
    assert.equal(early.status, 400)
    assert.equal(early.body.error, 'slow_down')
    assert.deepEqual(
      idp.polls.map((p) => p.error),
      ['authorization_pending', 'slow_down'],
    )

    idp.setSlowDown(false)
    assert.equal((await poll(idp, deviceCode)).body.error, 'authorization_pending')
    idp.setSlowDown(true)
    idp.setInterval(0)
    assert.equal((await poll(idp, deviceCode)).body.error, 'authorization_pending')
  })

  test('interval null sends no interval; setInterval changes later responses', async (t) => {
    const idp = await startTestIdp({ interval: null })
    t.after(() => idp.close())
    const { body } = await startDevice(idp)
    assert.equal('interval' in body, false)
    idp.setInterval(7)
    assert.equal((await startDevice(idp)).body.interval, 7)
    idp.setInterval(null)
    assert.equal('interval' in (await startDevice(idp)).body, false)
  })

  test('RFC 8628 §3.5 a device code past its lifetime gives expired_token, approved in time or not', async (t) => {
    const idp = await startTestIdp({ deviceCodeTtlSeconds: 2 })
    t.after(() => idp.close())
    const unapproved = await startDevice(idp)
    const approved = await startDevice(idp)
    assert.equal(unapproved.body.expires_in, 2)
    const issuedAt = Date.now()
    // Approved while the code is still valid (this must succeed), but polled only after expiry.
    await approveDevice(idp.issuer, approved.userCode)
    // Waits for the IdP's real clock to pass the advertised lifetime (the event under test).
    await sleep(Math.max(0, issuedAt + 2100 - Date.now()))
    for (const { deviceCode } of [unapproved, approved]) {
      const expired = await poll(idp, deviceCode)
      assert.equal(expired.status, 400)
      assert.equal(expired.body.error, 'expired_token')
    }
  })

  test('a second IdP starts in the same process (oidc-provider loaded once), on another port', async () => {
    const first = await startTestIdp()
    const second = await startTestIdp()
    try {
      assert.notEqual(first.port, second.port)
      assert.notEqual(first.issuer, second.issuer)
    } finally {
      await Promise.all([first.close(), second.close()])
    }
  })
})

describe('test IdP: confidential client', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 120 })
  })
  after(() => idp.close())

  async function assertion(): Promise<string> {
    const { clientId, privateJwk, alg } = idp.confidentialClient
    return new SignJWT({})
      .setProtectedHeader({ alg, kid: privateJwk.kid ?? '' })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(`${idp.issuer}/token`)
      .setJti(randomUUID())
      .setIssuedAt()
      .setExpirationTime('60s')
      .sign(await importJWK(privateJwk, alg))
  }

  function clientCredentials(clientAssertion: string, extra: Record<string, string> = {}): Promise<Answer> {
    return post(idp, '/token', {
      grant_type: 'client_credentials',
      client_id: idp.confidentialClient.clientId,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: clientAssertion,
      scope: 'telemetry:write',
      ...extra,
    })
  }

  test('private_key_jwt client credentials give a JWT for the API; a replayed assertion is refused', async () => {
    const signed = await assertion()
    const { status, body } = await clientCredentials(signed)
    assert.equal(status, 200)
    assert.equal(body.expires_in, 120)
    const jwks = createRemoteJWKSet(new URL(`${idp.issuer}/jwks`))
    const { payload } = await jwtVerify(body.access_token as string, jwks, {
      issuer: idp.issuer,
      audience: idp.audience,
    })
    assert.equal(payload.scope, 'telemetry:write')
    assert.equal(payload.client_id, idp.confidentialClient.clientId)
    assert.ok(idp.issued.accessTokens.includes(body.access_token as string))

    const replay = await clientCredentials(signed)
    assert.equal(replay.status, 401)
    assert.equal(replay.body.error, 'invalid_client')
  })

  test('the other resource gets a token with another audience; unknown resources are refused', async () => {
    const other = await clientCredentials(await assertion(), { resource: idp.otherAudience })
    assert.equal(other.status, 200)
    assert.equal(decodeJwt(other.body.access_token as string).aud, idp.otherAudience)

    const unknown = await clientCredentials(await assertion(), { resource: 'https://unknown.test' })
    assert.equal(unknown.status, 400)
    assert.equal(unknown.body.error, 'invalid_target')
  })

  test('introspection is enabled (JWT access tokens are not introspectable)', async () => {
    const introspect = async (token: string) =>
      post(idp, '/token/introspection', {
        client_id: idp.confidentialClient.clientId,
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await assertion(),
        token,
      })
    const unknown = await introspect('not-a-token')
    assert.equal(unknown.status, 200)
    assert.equal(unknown.body.active, false)
    const jwt = await introspect((await clientCredentials(await assertion())).body.access_token as string)
    assert.equal(jwt.body.error, 'unsupported_token_type')
  })

  test('the public JWK carries no private part', () => {
    assert.equal('d' in idp.confidentialClient.publicJwk, false)
    assert.equal(typeof idp.confidentialClient.privateJwk.d, 'string')
  })
})
