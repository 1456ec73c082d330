import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { connect } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { startTestApi, type TestApi } from './api.js'
import { startTestIdp, type TestIdp } from './idp.js'

function post(api: TestApi, token: string | undefined, batchId = randomUUID()): Promise<Response> {
  return fetch(api.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'idempotency-key': batchId,
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ device_id: 'pi-1', batch_id: batchId, seq: 0, records: [{ n: 1 }] }),
  })
}

describe('test API', () => {
  let idp: TestIdp
  let api: TestApi
  let token: string
  before(async () => {
    idp = await startTestIdp()
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    token = await idp.signAccessToken()
  })
  after(async () => {
    await api.close()
    await idp.close()
  })

  test('up: the receiver accepts a batch and every request is recorded without the token', async () => {
    assert.equal(api.url, `http://127.0.0.1:${api.port}/ingest`)
    const key = randomUUID()
    const before = api.requests.length
    const ok = await post(api, token, key)
    assert.equal(ok.status, 200)
    assert.deepEqual(await ok.json(), { accepted: 1 })
    assert.equal(api.receiver.batches.at(-1)?.batchId, key)

    const anonymous = await post(api, undefined)
    assert.equal(anonymous.status, 401)
    await anonymous.body?.cancel()

    const mine = api.requests.slice(before)
    assert.deepEqual(
      mine.map((r) => [r.status, r.authorization]),
      [
        [200, true],
        [401, false],
      ],
    )
    assert.equal(mine[0]?.idempotencyKey, key)
    assert.ok(!JSON.stringify(api.requests).includes(token))
  })

  test('unknown paths get 404', async () => {
    const response = await fetch(new URL('/other', api.url), { method: 'POST' })
    assert.equal(response.status, 404)
    await response.body?.cancel()
  })

  test('down: the port refuses connections, and comes back on the same port', async () => {
    await api.setMode('down')
    assert.equal(api.mode, 'down')
    // A pooled keep-alive socket may fail with "other side closed" first; a new one is refused.
    await assert.rejects(post(api, token))
    const code = await new Promise<string | undefined>((resolve) => {
      const socket = connect(api.port, '127.0.0.1', () => {
        socket.destroy()
        resolve('connected')
      })
      socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code))
    })
    assert.equal(code, 'ECONNREFUSED')

    await api.setMode('up')
    const back = await post(api, token)
    assert.equal(back.status, 200)
    await back.body?.cancel()
    assert.equal(api.url, `http://127.0.0.1:${api.port}/ingest`)
  })

  test('unavailable: 503 with Retry-After, nothing stored', async () => {
    await api.setMode('unavailable', { retryAfterSeconds: 7 })
    const stored = api.receiver.batches.length
    const response = await post(api, token)
    assert.equal(response.status, 503)
    assert.equal(response.headers.get('retry-after'), '7')
    await response.body?.cancel()
    assert.equal(api.receiver.batches.length, stored)
    await api.setMode('up')
  })

  test('unauthorized-once: one 401 invalid_token, then back up', async () => {
    await api.setMode('unauthorized-once')
    const first = await post(api, token)
    assert.equal(first.status, 401)
    assert.match(first.headers.get('www-authenticate') ?? '', /error="invalid_token"/)
    await first.body?.cancel()
    assert.equal(api.mode, 'up')
    const second = await post(api, token)
    assert.equal(second.status, 200)
    await second.body?.cancel()
  })

  test('captive-portal: 200 with an HTML page, nothing stored', async () => {
    await api.setMode('captive-portal')
    const stored = api.receiver.batches.length
    const response = await post(api, token)
    assert.equal(response.status, 200)
    assert.match(response.headers.get('content-type') ?? '', /^text\/html/)
    assert.match(await response.text(), /<html/)
    assert.equal(api.receiver.batches.length, stored)
    await api.setMode('up')
  })
})
