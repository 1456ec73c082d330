import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { generateKeyPair, importJWK, SignJWT } from 'jose'
import { isEdgeTokenError } from '../../../src/errors.js'
import {
  createReceiver,
  type Receiver,
  type ReceiverOptions,
} from '../../../src/telemetry/receiver/receiver.js'
import { approveDevice } from '../../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../../support/idp.js'
import { closeServer, freePort, listen } from '../../support/net.js'

interface Mounted {
  receiver: Receiver
  url: string
}

/** Mounts a receiver on its own 127.0.0.1 server, closed after the test. */
async function mount(t: { after: (fn: () => unknown) => void }, options: ReceiverOptions): Promise<Mounted> {
  const receiver = createReceiver(options)
  const server = createServer(receiver.handler)
  const port = await listen(server)
  t.after(() => {
    receiver.close()
    return closeServer(server)
  })
  return { receiver, url: `http://127.0.0.1:${port}/ingest` }
}

function batch(seq = 0, records: unknown[] = [{ t: 1 }]) {
  return { device_id: 'pi-1', batch_id: randomUUID(), seq, records }
}

async function upload(
  url: string,
  token: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const b = body as { batch_id?: unknown }
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(typeof b?.batch_id === 'string' ? { 'idempotency-key': b.batch_id } : {}),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await response.text()
  return {
    status: response.status,
    headers: response.headers,
    body: JSON.parse(text) as Record<string, unknown>,
  }
}

async function deviceToken(idp: TestIdp, login = 'device-user'): Promise<Record<string, unknown>> {
  const form = (f: Record<string, string>) => ({ method: 'POST', body: new URLSearchParams(f) })
  const start = (await (
    await fetch(
      `${idp.issuer}/device/auth`,
      form({ client_id: idp.publicClientId, scope: 'openid offline_access telemetry:write' }),
    )
  ).json()) as Record<string, string>
  await approveDevice(idp.issuer, start.user_code ?? '', { login })
  const response = await fetch(
    `${idp.issuer}/token`,
    form({
      client_id: idp.publicClientId,
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
      device_code: start.device_code ?? '',
    }),
  )
  assert.equal(response.status, 200)
  return (await response.json()) as Record<string, unknown>
}

async function clientCredentialsToken(idp: TestIdp, extra: Record<string, string>): Promise<string> {
  const { clientId, privateJwk, alg } = idp.confidentialClient
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg, kid: privateJwk.kid ?? '' })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(`${idp.issuer}/token`)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime('60s')
    .sign(await importJWK(privateJwk, alg))
  const response = await fetch(`${idp.issuer}/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
      ...extra,
    }),
  })
  assert.equal(response.status, 200)
  return ((await response.json()) as { access_token: string }).access_token
}

describe('receiver', () => {
  let idp: TestIdp
  let tokens: Record<string, unknown>
  let token: string
  before(async () => {
    idp = await startTestIdp()
    tokens = await deviceToken(idp, 'sensor-owner')
    token = tokens.access_token as string
  })
  after(() => idp.close())

  const options = (extra: Partial<ReceiverOptions> = {}): ReceiverOptions => ({
    issuer: idp.issuer,
    audience: idp.audience,
    ...extra,
  })

  test('accepts a batch with a real access token from the IdP', async (t) => {
    const seen: string[] = []
    const { receiver, url } = await mount(t, options({ onBatch: (b) => void seen.push(b.batchId) }))
    const sent = batch(3, [{ t: 1 }, { t: 2 }])
    const answer = await upload(url, token, sent)
    assert.equal(answer.status, 200)
    assert.deepEqual(answer.body, { accepted: 2 })
    assert.deepEqual(receiver.batches, [
      {
        deviceId: 'pi-1',
        batchId: sent.batch_id,
        seq: 3,
        records: [{ t: 1 }, { t: 2 }],
        subject: 'sensor-owner',
      },
    ])
    assert.deepEqual(seen, [sent.batch_id])
  })

  test('a repeated Idempotency-Key answers 200 again and is stored once', async (t) => {
    const { receiver, url } = await mount(t, options())
    const sent = batch()
    const first = await upload(url, token, sent)
    const second = await upload(url, token, sent)
    assert.equal(first.status, 200)
    assert.equal(first.headers.get('idempotent-replayed'), null)
    assert.equal(second.status, 200)
    assert.deepEqual(second.body, { accepted: 1 })
    assert.equal(second.headers.get('idempotent-replayed'), 'true')
    assert.equal(receiver.batches.length, 1)

    const other = await upload(url, token, { ...sent, records: [{ t: 'changed' }] })
    assert.equal(other.status, 422)
    assert.equal(receiver.batches.length, 1)
  })

  test('a missing token gets 401 with a Bearer challenge and no error code (RFC 6750 §3.1)', async (t) => {
    const { receiver, url } = await mount(t, options())
    const answer = await upload(url, undefined, batch())
    assert.equal(answer.status, 401)
    assert.equal(answer.headers.get('www-authenticate'), 'Bearer scope="telemetry:write"')
    const basic = await upload(url, undefined, batch(), { authorization: 'Basic dXNlcjpwYXNz' })
    assert.equal(basic.status, 401)
    assert.equal(receiver.batches.length, 0)
  })

  test('an expired token gets 401 invalid_token; within the clock tolerance it passes', async (t) => {
    const { receiver, url } = await mount(t, options({ clockToleranceSeconds: 30 }))
    const now = Math.floor(Date.now() / 1000)
    const expired = await idp.signAccessToken({ iat: now - 600, exp: now - 120 })
    const answer = await upload(url, expired, batch())
    assert.equal(answer.status, 401)
    assert.equal(answer.body.error, 'invalid_token')
    assert.match(answer.headers.get('www-authenticate') ?? '', /^Bearer .*error="invalid_token"/)
    assert.ok(!JSON.stringify(answer.body).includes(expired))

    const justExpired = await idp.signAccessToken({ iat: now - 600, exp: now - 5 })
    assert.equal((await upload(url, justExpired, batch())).status, 200)
    assert.equal(receiver.batches.length, 1)
  })

  test('a token signed with a key the issuer does not publish gets 401', async (t) => {
    const { url } = await mount(t, options())
    const { privateKey } = await generateKeyPair('ES256')
    const forged = await new SignJWT({ scope: 'telemetry:write' })
      .setProtectedHeader({ alg: 'ES256', kid: 'not-published' })
      .setIssuer(idp.issuer)
      .setAudience(idp.audience)
      .setSubject('mallory')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey)
    const answer = await upload(url, forged, batch())
    assert.equal(answer.status, 401)
    assert.equal(answer.body.error, 'invalid_token')
  })

  test('a real token for another audience, or an id_token, gets 401', async (t) => {
    const { url } = await mount(t, options())
    const other = await clientCredentialsToken(idp, { scope: 'telemetry:write', resource: idp.otherAudience })
    assert.equal((await upload(url, other, batch())).status, 401)
    assert.equal((await upload(url, tokens.id_token as string, batch())).status, 401)
    const wrongIssuer = await idp.signAccessToken({ iss: 'http://127.0.0.1:1' })
    assert.equal((await upload(url, wrongIssuer, batch())).status, 401)
  })

  test('a token without the required scope gets 403 insufficient_scope', async (t) => {
    const { receiver, url } = await mount(t, options())
    const noScope = await clientCredentialsToken(idp, {})
    const answer = await upload(url, noScope, batch())
    assert.equal(answer.status, 403)
    assert.equal(answer.body.error, 'insufficient_scope')
    assert.match(answer.headers.get('www-authenticate') ?? '', /error="insufficient_scope"/)
    const crafted = await idp.signAccessToken({ scope: 'telemetry:read' })
    assert.equal((await upload(url, crafted, batch())).status, 403)
    // A client-credentials token with the scope is fine.
    const withScope = await clientCredentialsToken(idp, { scope: 'telemetry:write' })
    assert.equal((await upload(url, withScope, batch())).status, 200)
    assert.equal(receiver.batches[0]?.subject, idp.confidentialClient.clientId)
  })

  test('Entra ID style scp claims are understood', async (t) => {
    const { url } = await mount(t, options())
    const scp = await idp.signAccessToken({ scope: undefined, scp: 'other telemetry:write' })
    assert.equal((await upload(url, scp, batch())).status, 200)
  })

  test('Idempotency-Key is required and must equal batch_id', async (t) => {
    const { receiver, url } = await mount(t, options())
    const sent = batch()
    const response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(sent),
    })
    assert.equal(response.status, 400)
    assert.match(
      ((await response.json()) as { error_description: string }).error_description,
      /Idempotency-Key/,
    )
    const mismatch = await upload(url, token, sent, { 'idempotency-key': 'something-else' })
    assert.equal(mismatch.status, 400)
    assert.equal(receiver.batches.length, 0)
  })

  test('malformed bodies get 400 with a JSON error', async (t) => {
    const { receiver, url } = await mount(t, options())
    const key = { 'idempotency-key': 'k1' }
    const cases: unknown[] = [
      'not json',
      '[]',
      { batch_id: 'k1', seq: 0, records: [] },
      { device_id: 'pi', batch_id: 'k1', seq: -1, records: [] },
      { device_id: 'pi', batch_id: 'k1', seq: 1.5, records: [] },
      { device_id: 'pi', batch_id: 'k1', seq: '1', records: [] },
      { device_id: 'pi', batch_id: 'k1', seq: 0, records: {} },
    ]
    for (const body of cases) {
      const answer = await upload(url, token, body, key)
      assert.equal(answer.status, 400, JSON.stringify(body))
      assert.equal(answer.body.error, 'invalid_request')
    }
    const textPlain = await upload(url, token, batch(), { 'content-type': 'text/plain' })
    assert.equal(textPlain.status, 415)
    assert.equal(receiver.batches.length, 0)
  })

  test('bodies over maxBodyBytes get 413', async (t) => {
    const { receiver, url } = await mount(t, options({ maxBodyBytes: 1024 }))
    const big = batch(0, [{ blob: 'x'.repeat(4096) }])
    const answer = await upload(url, token, big)
    assert.equal(answer.status, 413)
    assert.equal(receiver.batches.length, 0)
    assert.equal((await upload(url, token, batch())).status, 200)
  })

  test('only POST is allowed', async (t) => {
    const { url } = await mount(t, options())
    const response = await fetch(url, { headers: { authorization: `Bearer ${token}` } })
    assert.equal(response.status, 405)
    assert.equal(response.headers.get('allow'), 'POST')
    await response.body?.cancel()
  })

  test('a throwing onBatch answers 500 and the batch can be retried', async (t) => {
    let fail = true
    const { receiver, url } = await mount(
      t,
      options({
        onBatch: () => {
          if (fail) throw new Error('disk full')
        },
      }),
    )
    const sent = batch()
    const failed = await upload(url, token, sent)
    assert.equal(failed.status, 500)
    assert.ok(!JSON.stringify(failed.body).includes('disk full'))
    assert.equal(receiver.batches.length, 0)
    fail = false
    assert.equal((await upload(url, token, sent)).status, 200)
    assert.equal(receiver.batches.length, 1)
  })

  test('unreachable signing keys give 503 with Retry-After, not 401', async (t) => {
    const { url } = await mount(t, options({ jwksUri: `http://127.0.0.1:${await freePort()}/jwks` }))
    const answer = await upload(url, token, batch())
    assert.equal(answer.status, 503)
    assert.ok(answer.headers.get('retry-after'))
  })

  test('an explicit jwksUri skips discovery', async (t) => {
    const { url } = await mount(t, options({ jwksUri: `${idp.issuer}/jwks` }))
    assert.equal((await upload(url, token, batch())).status, 200)
  })

  test('after close() requests get 503', async (t) => {
    const { receiver, url } = await mount(t, options())
    receiver.close()
    assert.equal((await upload(url, token, batch())).status, 503)
  })

  test('refuses a plain-http issuer on a non-loopback host', () => {
    assert.throws(
      () => createReceiver({ issuer: 'http://idp.example.com', audience: 'x' }),
      (err: unknown) => isEdgeTokenError(err, 'ERR_INSECURE_URL'),
    )
  })
})
