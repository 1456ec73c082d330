/**
 * Client authentication methods (RFC 6749 §2.3, RFC 7523 §2.2).
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify } from 'jose'
import { applyClientAuth, JWT_BEARER_ASSERTION } from '../../src/oauth/client-auth.js'

const TOKEN_ENDPOINT = 'https://idp.test/token'

async function apply(client: Parameters<typeof applyClientAuth>[0], now?: () => number) {
  const body = new URLSearchParams({ grant_type: 'refresh_token' })
  const headers: Record<string, string> = {}
  await applyClientAuth(client, TOKEN_ENDPOINT, body, headers, { now })
  return { body, headers }
}

describe('client authentication', () => {
  test('none (public client): client_id in the body, no header', async () => {
    const { body, headers } = await apply({ clientId: 'dev' })
    assert.equal(body.get('client_id'), 'dev')
    assert.deepEqual(headers, {})
  })

  test('client_secret_basic form-encodes id and secret before base64 (RFC 6749 §2.3.1)', async () => {
    const { body, headers } = await apply({
      clientId: 'my client:1',
      auth: { method: 'client_secret_basic', clientSecret: 'p@ss w%rd:+/' },
    })
    const decoded = Buffer.from((headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString()
    assert.equal(decoded, 'my+client%3A1:p%40ss+w%25rd%3A%2B%2F')
    assert.equal(body.get('client_secret'), null)
    assert.equal(body.get('client_id'), null)
  })

  test('client_secret_post puts both in the body', async () => {
    const { body, headers } = await apply({
      clientId: 'c',
      auth: { method: 'client_secret_post', clientSecret: 's' },
    })
    assert.equal(body.get('client_id'), 'c')
    assert.equal(body.get('client_secret'), 's')
    assert.equal(headers.authorization, undefined)
  })

  test('private_key_jwt: iss = sub = client_id, aud = token endpoint, jti, 60 s lifetime, x5t#S256', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk = await exportJWK(privateKey)
    const now = () => 1_800_000_000_000
    const auth = {
      method: 'private_key_jwt' as const,
      privateKey: jwk as Record<string, unknown>,
      alg: 'ES256',
      kid: 'key-1',
      x5tS256: 'dGh1bWJwcmludA',
    }
    const first = await apply({ clientId: 'svc', auth }, now)
    const second = await apply({ clientId: 'svc', auth }, now)
    assert.equal(first.body.get('client_assertion_type'), JWT_BEARER_ASSERTION)
    assert.equal(first.body.get('client_id'), 'svc')
    const assertion = first.body.get('client_assertion') ?? ''
    const header = decodeProtectedHeader(assertion)
    assert.equal(header.kid, 'key-1')
    assert.equal(header['x5t#S256'], 'dGh1bWJwcmludA')
    const { payload } = await jwtVerify(assertion, publicKey, {
      issuer: 'svc',
      subject: 'svc',
      audience: TOKEN_ENDPOINT,
      currentDate: new Date(now()),
    })
    assert.equal((payload.exp ?? 0) - (payload.iat ?? 0), 60)
    assert.equal(payload.iat, 1_800_000_000)
    const other = decodeProtectedHeader(second.body.get('client_assertion') ?? '')
    assert.ok(other)
    const jti2 = JSON.parse(
      Buffer.from((second.body.get('client_assertion') ?? '').split('.')[1] ?? '', 'base64url').toString(),
    ).jti
    assert.ok(typeof payload.jti === 'string' && payload.jti !== jti2, 'a fresh jti per assertion')
  })

  test('issue 12: private_key_jwt with x5c: the chain in the protected header (RFC 7515 §4.1.6)', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const chain = ['MIIBleaf+/==', 'MIIBca+/==']
    const auth = { method: 'private_key_jwt' as const, privateKey, alg: 'ES256', x5tS256: 't', x5c: chain }
    const { body } = await apply({ clientId: 'svc', auth })
    assert.deepEqual(decodeProtectedHeader(body.get('client_assertion') ?? '').x5c, chain)
  })

  test('issue 12: client_assertion: a federated JWT asked for per request, checked to be a JWT (RFC 7523 §2.2)', async () => {
    let n = 0
    const audiences: string[] = []
    const auth = {
      method: 'client_assertion' as const,
      getAssertion: async (audience: string) => {
        audiences.push(audience)
        n += 1
        return n < 3 ? `eyJhbGciOiJSUzI1NiJ9.eyJuIjo${n}fQ.c2ln\n` : 'not-a-jwt-secret'
      },
    }
    const first = await apply({ clientId: 'wl', auth })
    const second = await apply({ clientId: 'wl', auth })
    assert.equal(first.body.get('client_assertion_type'), JWT_BEARER_ASSERTION)
    assert.equal(first.body.get('client_id'), 'wl')
    assert.equal(first.body.get('client_assertion'), 'eyJhbGciOiJSUzI1NiJ9.eyJuIjo1fQ.c2ln')
    assert.equal(second.body.get('client_assertion'), 'eyJhbGciOiJSUzI1NiJ9.eyJuIjo2fQ.c2ln')
    assert.deepEqual(audiences, [TOKEN_ENDPOINT, TOKEN_ENDPOINT])
    await assert.rejects(
      apply({ clientId: 'wl', auth }),
      (err: unknown) =>
        err instanceof Error && /not a JWT/.test(err.message) && !err.message.includes('secret'),
    )
  })

  test('private_key_jwt with a KeyObject and an unusable JWK', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const { body } = await apply({
      clientId: 'svc',
      auth: { method: 'private_key_jwt', privateKey, alg: 'ES256' },
    })
    assert.ok(body.get('client_assertion'))
    await assert.rejects(
      apply({
        clientId: 'svc',
        auth: { method: 'private_key_jwt', privateKey: { kty: 'oct', k: 'AA' }, alg: 'ES256' },
      }),
      { code: 'ERR_CONFIG' },
    )
  })
})
