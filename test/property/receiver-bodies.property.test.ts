/**
 * Issue 16: property-based test over the reference receiver's request bodies: arbitrary bodies
 * POSTed with a valid token to a real receiver on loopback (node:http). Every request gets a
 * deliberate answer (200, 400, 413, 415, 422), never a 500 or a dropped connection; a body over
 * the cap is refused with 413 before it is parsed; an accepted batch is exactly the body's.
 */
import assert from 'node:assert/strict'
import { generateKeyPairSync } from 'node:crypto'
import { createServer, request } from 'node:http'
import { describe, test } from 'node:test'
import fc from 'fast-check'
import { importJWK, SignJWT } from 'jose'
import { createReceiver, type Receiver } from '../../src/telemetry/receiver/receiver.js'
import { closeServer, listen } from '../support/net.js'
import { bodyText, edgyJsonValue, forAll, mutatedObject, spyJsonParse } from '../support/property.js'

const MAX_BODY_BYTES = 4096
const AUDIENCE = 'api://telemetry'

interface Posted {
  status: number
  body: string
}

function post(
  port: number,
  body: Buffer,
  headers: Record<string, string>,
  chunked: boolean,
): Promise<Posted> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/ingest',
        headers: chunked ? headers : { ...headers, 'content-length': String(body.length) },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        )
        res.on('error', reject)
      },
    )
    // The server may answer 413 and close before the whole body is written.
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') resolve({ status: -1, body: err.code })
      else reject(err)
    })
    if (chunked) {
      // Two writes: no content-length, so the cap is enforced while streaming.
      req.write(body.subarray(0, body.length >> 1))
      req.end(body.subarray(body.length >> 1))
    } else {
      req.end(body)
    }
  })
}

// Mostly new ids; a few recurring ones exercise replays and reuse with another body (422).
const batchIds = fc.oneof(fc.stringMatching(/^b-[a-z0-9]{4,12}$/), fc.constantFrom('b-1', 'b-2'))
const batches = mutatedObject(
  {
    device_id: fc.constantFrom('pi-1', 'gw-7'),
    batch_id: batchIds,
    seq: fc.nat(1000),
    records: fc.array(fc.object({ maxDepth: 2 }), { maxLength: 5 }),
  },
  {
    device_id: fc.constantFrom('', 7),
    seq: fc.constantFrom(-1, 1.5, 2 ** 53, '3'),
    records: fc.oneof(fc.constant({}), edgyJsonValue()),
  },
)

const bodies = fc.oneof(
  { arbitrary: bodyText(batches).map((s) => Buffer.from(s)), weight: 12 },
  { arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), weight: 1 },
  {
    arbitrary: fc
      .integer({ min: 60, max: 5000 })
      .map((d) =>
        Buffer.from(
          `{"device_id":"pi-1","batch_id":"b-1","seq":0,"records":[{"a":${'['.repeat(d)}${']'.repeat(d)}}]}`,
        ),
      ),
    weight: 1,
  },
  {
    // Around the cap.
    arbitrary: fc.integer({ min: MAX_BODY_BYTES - 200, max: MAX_BODY_BYTES + 2000 }).map((n) =>
      Buffer.from(
        JSON.stringify({
          device_id: 'pi-1',
          batch_id: 'b-1',
          seq: 0,
          records: [{ x: 'x'.repeat(Math.max(0, n - 70)) }],
        }),
      ),
    ),
    weight: 2,
  },
)

const requests = fc.record({
  body: bodies,
  contentType: fc.constantFrom(
    'application/json',
    'application/json',
    'application/json; charset=utf-8',
    'application/vnd.edgetoken+json',
    'text/plain',
    undefined,
  ),
  key: fc.oneof(
    { arbitrary: fc.constant('from-body' as const), weight: 6 },
    { arbitrary: fc.option(batchIds, { nil: undefined }), weight: 1 },
  ),
  chunked: fc.boolean(),
})

describe('issue 16: property test over the receiver request bodies', () => {
  test('RFC 6750 §3: any body POSTed with a valid token gets a deliberate answer; over the cap 413 and never parsed', async (t) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' }
    let receiver: Receiver | undefined
    const server = createServer((req, res) => {
      if (req.url === '/jwks') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }))
      } else if (receiver) {
        receiver.handler(req, res)
      } else {
        res.writeHead(503).end()
      }
    })
    const port = await listen(server)
    t.after(() => closeServer(server))
    const issuer = `http://127.0.0.1:${port}`
    receiver = createReceiver({
      issuer,
      audience: AUDIENCE,
      jwksUri: `${issuer}/jwks`,
      maxBodyBytes: MAX_BODY_BYTES,
    })
    const token = await new SignJWT({ scope: 'telemetry:write' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(issuer)
      .setAudience(AUDIENCE)
      .setSubject('device-user')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(await importJWK({ ...privateKey.export({ format: 'jwk' }), alg: 'ES256' }, 'ES256'))

    const spy = spyJsonParse()
    t.after(() => spy.restore())
    await forAll(
      t,
      'receiver request body',
      requests,
      async (r) => {
        let key: string | undefined
        if (r.key === 'from-body') {
          const parsed = (() => {
            try {
              return JSON.parse(r.body.toString('utf8')) as unknown
            } catch {
              return undefined
            }
          })()
          const id = (parsed as { batch_id?: unknown } | undefined)?.batch_id
          key = typeof id === 'string' && id.length > 0 && !/[^\x20-\x7e]/.test(id) ? id : 'b-1'
        } else {
          key = r.key
        }
        const headers: Record<string, string> = { authorization: `Bearer ${token}` }
        if (r.contentType) headers['content-type'] = r.contentType
        if (key !== undefined) headers['idempotency-key'] = key
        const before = receiver.batches.length
        spy.reset()
        const answer = await post(port, r.body, headers, r.chunked)
        assert.ok(
          spy.lengths.every((n) => n <= MAX_BODY_BYTES),
          'a body over the cap was parsed',
        )
        if (r.body.length > MAX_BODY_BYTES) {
          // Refused unread: 413, or earlier for a header (415 content type, 400 no Idempotency-Key),
          // or the connection closed by the server while the body was still being sent.
          assert.ok(
            [413, 415, 400, -1].includes(answer.status),
            `over the cap: ${answer.status} ${answer.body}`,
          )
          return `over the cap: ${answer.status === -1 ? 'closed while sending' : answer.status}`
        }
        assert.ok(
          [200, 400, 415, 422].includes(answer.status),
          `unexpected answer ${answer.status} ${answer.body}`,
        )
        const body = JSON.parse(answer.body) as Record<string, unknown>
        if (answer.status !== 200) {
          assert.equal(typeof body.error, 'string')
          return String(answer.status)
        }
        assert.equal(typeof body.accepted, 'number')
        if (receiver.batches.length > before) {
          const batch = receiver.batches.at(-1)
          const sent = JSON.parse(r.body.toString('utf8')) as { records: unknown[]; batch_id: string }
          assert.deepEqual(batch?.records, sent.records)
          assert.equal(batch?.batchId, key)
          return '200 new'
        }
        return '200 replayed'
      },
      { numRuns: 300 },
    )
  })
})
