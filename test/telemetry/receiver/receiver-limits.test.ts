// The reference receiver's bounds and token checks added by the telemetry audit (issue 6): it
// runs for months in `serve-api`, so nothing it remembers may grow without bound.
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { describe, test } from 'node:test'
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from 'jose'
import { isEdgeTokenError } from '../../../src/errors.js'
import {
  createReceiver,
  type Receiver,
  type ReceiverOptions,
} from '../../../src/telemetry/receiver/receiver.js'
import { closeServer, listen } from '../../support/net.js'

type Ctx = { after: (fn: () => unknown) => void }

/** An issuer of our own: a JWKS on loopback and a signer, so header fields can be chosen. */
async function issuer(t: Ctx, alg = 'ES256') {
  const { privateKey, publicKey } = await generateKeyPair(alg)
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg }
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ keys: [jwk] }))
  })
  const port = await listen(server)
  t.after(() => closeServer(server))
  const iss = `http://127.0.0.1:${port}`
  return {
    iss,
    jwksUri: `${iss}/jwks`,
    sign: (header: { typ?: string } = {}, claims: JWTPayload = {}) =>
      new SignJWT({ scope: 'telemetry:write', ...claims })
        .setProtectedHeader({ alg, kid: 'k1', ...header })
        .setIssuer(iss)
        .setAudience('api://telemetry')
        .setSubject('device-user')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(privateKey),
  }
}

async function mount(t: Ctx, options: ReceiverOptions): Promise<{ receiver: Receiver; url: string }> {
  const receiver = createReceiver(options)
  const server = createServer(receiver.handler)
  const port = await listen(server)
  t.after(() => {
    receiver.close()
    return closeServer(server)
  })
  return { receiver, url: `http://127.0.0.1:${port}/ingest` }
}

async function post(url: string, token: string, batchId: string, records: unknown[] = [{ t: 1 }]) {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'idempotency-key': batchId,
    },
    body: JSON.stringify({ device_id: 'pi-1', batch_id: batchId, seq: 0, records }),
  })
  await response.arrayBuffer()
  return response.status
}

describe('receiver limits and token checks', () => {
  test('remembered idempotency keys are bounded in count (the oldest is forgotten)', async (t) => {
    const idp = await issuer(t)
    const { url } = await mount(t, {
      issuer: idp.iss,
      audience: 'api://telemetry',
      jwksUri: idp.jwksUri,
      maxRememberedKeys: 2,
    })
    const token = await idp.sign()
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()]
    for (const key of [a, b]) assert.equal(await post(url, token, key), 200)
    // Still remembered: the same key with another body is refused.
    assert.equal(await post(url, token, a, [{ t: 'other' }]), 422)
    assert.equal(await post(url, token, c), 200)
    // a is the oldest of three with room for two: forgotten, so it is new again.
    assert.equal(await post(url, token, a, [{ t: 'other' }]), 200)
    assert.equal(await post(url, token, c, [{ t: 'other' }]), 422)
  })

  test('remembered idempotency keys are bounded in age', async (t) => {
    const idp = await issuer(t)
    let now = Date.now()
    const { url } = await mount(t, {
      issuer: idp.iss,
      audience: 'api://telemetry',
      jwksUri: idp.jwksUri,
      rememberKeySeconds: 60,
      now: () => now,
    })
    const token = await idp.sign()
    const key = randomUUID()
    assert.equal(await post(url, token, key), 200)
    now += 59_000
    assert.equal(await post(url, token, key, [{ t: 'other' }]), 422)
    now += 2_000
    assert.equal(await post(url, token, key, [{ t: 'other' }]), 200)
  })

  test('keepBatches: false hands batches to onBatch without keeping them', async (t) => {
    const idp = await issuer(t)
    const handed: string[] = []
    const { receiver, url } = await mount(t, {
      issuer: idp.iss,
      audience: 'api://telemetry',
      jwksUri: idp.jwksUri,
      keepBatches: false,
      onBatch: (b) => void handed.push(b.batchId),
    })
    const token = await idp.sign()
    const key = randomUUID()
    assert.equal(await post(url, token, key), 200)
    assert.deepEqual(handed, [key])
    assert.equal(receiver.batches.length, 0)
  })

  test('algorithms: a token signed with an algorithm outside the allowlist gets 401 (RFC 8725 §3.1)', async (t) => {
    const idp = await issuer(t, 'ES256')
    const { url } = await mount(t, {
      issuer: idp.iss,
      audience: 'api://telemetry',
      jwksUri: idp.jwksUri,
      algorithms: ['RS256'],
    })
    assert.equal(await post(url, await idp.sign(), randomUUID()), 401)
  })

  test('algorithms: only asymmetric algorithms may be allowed (no HS256, no none)', () => {
    for (const algorithms of [['HS256'], ['RS256', 'none'], []]) {
      assert.throws(
        () => createReceiver({ issuer: 'http://127.0.0.1:1', audience: 'x', algorithms }),
        (err: unknown) => isEdgeTokenError(err, 'ERR_CONFIG'),
        JSON.stringify(algorithms),
      )
    }
  })

  test('RFC 9068 §4: with requireAtJwtType a token without typ at+jwt gets 401; by default it passes (Entra ID)', async (t) => {
    const idp = await issuer(t)
    const base = { issuer: idp.iss, audience: 'api://telemetry', jwksUri: idp.jwksUri }
    const strict = await mount(t, { ...base, requireAtJwtType: true })
    const lax = await mount(t, base)
    const plain = await idp.sign({ typ: 'JWT' })
    const untyped = await idp.sign()
    const at = await idp.sign({ typ: 'at+jwt' })
    const appAt = await idp.sign({ typ: 'application/at+jwt' })
    assert.equal(await post(strict.url, plain, randomUUID()), 401)
    assert.equal(await post(strict.url, untyped, randomUUID()), 401)
    assert.equal(await post(strict.url, at, randomUUID()), 200)
    assert.equal(await post(strict.url, appAt, randomUUID()), 200)
    assert.equal(await post(lax.url, plain, randomUUID()), 200)
    assert.equal(await post(lax.url, untyped, randomUUID()), 200)
  })
})
