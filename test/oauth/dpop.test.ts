/**
 * Issue 14: DPoP (RFC 9449) in the protocol core, against the real test IdP (oidc-provider 9 with
 * `features.dPoP`, on by default): proofs, key binding of device-code and refresh tokens, the
 * server-nonce retry, and the key choice.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { decodeJwt, decodeProtectedHeader, EmbeddedJWK, jwtVerify } from 'jose'
import { OAuthServerError } from '../../src/errors.js'
import { type AuthorizationServer, resolveAuthority } from '../../src/oauth/authority.js'
import {
  accessTokenHash,
  chooseDPoPAlgorithm,
  type DPoPKeyRecord,
  dpopHandle,
  generateDPoPKey,
} from '../../src/oauth/dpop.js'
import { pollDeviceAuthorization, startDeviceAuthorization } from '../../src/oauth/grants/device.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import type { TokenSet } from '../../src/oauth/types.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const noWait = async () => {}

async function signInWith(idp: TestIdp, server: AuthorizationServer, key: DPoPKeyRecord): Promise<TokenSet> {
  const client = { clientId: idp.publicClientId }
  const flow = await startDeviceAuthorization(server, client, SCOPES)
  await approveDevice(idp.issuer, flow.userCode)
  return pollDeviceAuthorization(server, client, flow, { sleep: noWait, dpop: await dpopHandle(key) })
}

function cnfJkt(accessToken: string): unknown {
  const cnf = decodeJwt(accessToken).cnf
  return typeof cnf === 'object' && cnf !== null ? (cnf as Record<string, unknown>).jkt : undefined
}

describe('issue 14: DPoP proofs (RFC 9449 §4)', () => {
  test('RFC 9449 §4.2: typ dpop+jwt, public jwk, htm, htu without query, iat, fresh jti, ath, nonce', async () => {
    const key = await generateDPoPKey()
    assert.equal(key.alg, 'ES256')
    assert.equal(typeof key.privateJwk.d, 'string', 'the stored record holds the private key')
    const now = 1_800_000_000_000
    const handle = await dpopHandle(key, { now: () => now })
    const url = 'https://api.example/v1/ingest?x=1#frag'
    const first = await handle.proof({ method: 'POST', url, accessToken: 'at-1', nonce: 'n-1' })
    const second = await handle.proof({ method: 'POST', url, accessToken: 'at-1' })
    const header = decodeProtectedHeader(first)
    assert.equal(header.typ, 'dpop+jwt')
    assert.equal(header.alg, 'ES256')
    assert.equal((header.jwk as Record<string, unknown>).d, undefined, 'no private member in the header')
    const { payload } = await jwtVerify(first, EmbeddedJWK, { typ: 'dpop+jwt', currentDate: new Date(now) })
    assert.equal(payload.htm, 'POST')
    assert.equal(payload.htu, 'https://api.example/v1/ingest')
    assert.equal(payload.iat, now / 1000)
    assert.equal(payload.ath, accessTokenHash('at-1'))
    assert.equal(payload.nonce, 'n-1')
    assert.notEqual(payload.jti, decodeJwt(second).jti, 'every proof has its own jti')
  })

  test('RFC 9449 §5.1: ES256 unless the server offers only others; none we can make: none', () => {
    assert.equal(chooseDPoPAlgorithm(undefined), 'ES256')
    assert.equal(chooseDPoPAlgorithm(['RS256', 'ES256', 'EdDSA']), 'ES256')
    assert.equal(chooseDPoPAlgorithm(['PS256', 'EdDSA']), 'EdDSA')
    assert.equal(chooseDPoPAlgorithm(['HS256']), undefined)
  })
})

describe('issue 14: DPoP-bound tokens from the test IdP (RFC 9449 §5)', () => {
  let idp: TestIdp
  let server: AuthorizationServer
  before(async () => {
    idp = await startTestIdp({ interval: 1, rotateRefreshToken: 'default' })
    server = await resolveAuthority(idp.issuer)
  })
  after(() => idp.close())

  test('RFC 9449 §5.1: discovery shows the advertised algorithms', () => {
    assert.ok(server.dpopSigningAlgValues?.includes('ES256'), String(server.dpopSigningAlgValues))
  })

  test('RFC 9449 §5: device-code tokens are DPoP-bound: cnf.jkt is the key thumbprint', async () => {
    const key = await generateDPoPKey()
    const tokens = await signInWith(idp, server, key)
    assert.equal(tokens.tokenType, 'dpop')
    assert.equal(cnfJkt(tokens.accessToken), key.jkt)
    assert.ok(tokens.refreshToken)
    assert.ok(idp.dpop.proofs >= 1)
  })

  test('RFC 9449 §5: the bound refresh token works with its key only, and is not rotated (RFC 9700 §4.14.2)', async () => {
    const key = await generateDPoPKey()
    const other = await generateDPoPKey()
    const tokens = await signInWith(idp, server, key)
    const client = { clientId: idp.publicClientId }
    const rt = tokens.refreshToken ?? ''
    await assert.rejects(
      refreshTokenGrant(server, client, rt, [], { dpop: await dpopHandle(other) }),
      (err) => err instanceof OAuthServerError && err.error === 'invalid_grant',
    )
    await assert.rejects(
      refreshTokenGrant(server, client, rt, []),
      (err) => err instanceof OAuthServerError && err.error === 'invalid_grant',
      'without a proof',
    )
    const refreshed = await refreshTokenGrant(server, client, rt, [], { dpop: await dpopHandle(key) })
    assert.equal(refreshed.tokenType, 'dpop')
    assert.equal(cnfJkt(refreshed.accessToken), key.jkt)
    // oidc-provider's default policy keeps a sender-constrained public client's refresh token.
    assert.equal(refreshed.refreshToken, rt)
    const again = await refreshTokenGrant(server, client, rt, [], { dpop: await dpopHandle(key) })
    assert.equal(cnfJkt(again.accessToken), key.jkt, 'the same refresh token refreshes again')
  })
})

describe('issue 14: server nonces at the token endpoint (RFC 9449 §8)', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp({ interval: 1, dpop: 'nonce', rotateRefreshToken: 'default' })
  })
  after(() => idp.close())

  test('RFC 9449 §8: use_dpop_nonce is answered with one retry carrying the DPoP-Nonce', async () => {
    const server = await resolveAuthority(idp.issuer)
    const key = await generateDPoPKey()
    const tokens = await signInWith(idp, server, key)
    assert.equal(cnfJkt(tokens.accessToken), key.jkt)
    assert.equal(idp.dpop.nonceChallenges, 1, 'one challenge; later requests carry the nonce')
    const refreshed = await refreshTokenGrant(
      server,
      { clientId: idp.publicClientId },
      tokens.refreshToken ?? '',
      [],
      {
        dpop: await dpopHandle(key),
      },
    )
    assert.equal(cnfJkt(refreshed.accessToken), key.jkt)
    assert.equal(idp.dpop.nonceChallenges, 1, 'the remembered nonce is still good')
  })
})
