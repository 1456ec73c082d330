// The reference receiver applies the spool's nesting cap to the records it is sent (issue 11 #8).
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { describe, test } from 'node:test'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { createReceiver } from '../../../src/telemetry/receiver/receiver.js'
import { closeServer, listen } from '../../support/net.js'

describe('receiver nesting cap', () => {
  test('issue 11 #8: records nested deeper than 64 levels get 400 before onBatch; 64 levels are accepted', async (t) => {
    const { privateKey, publicKey } = await generateKeyPair('ES256')
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }
    const jwks = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys: [jwk] }))
    })
    const iss = `http://127.0.0.1:${await listen(jwks)}`
    t.after(() => closeServer(jwks))
    let batches = 0
    const receiver = createReceiver({
      issuer: iss,
      audience: 'api://telemetry',
      jwksUri: `${iss}/jwks`,
      onBatch: async () => {
        batches++
      },
    })
    const api = createServer(receiver.handler)
    const url = `http://127.0.0.1:${await listen(api)}/ingest`
    t.after(() => {
      receiver.close()
      return closeServer(api)
    })
    const token = await new SignJWT({ scope: 'telemetry:write' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuer(iss)
      .setAudience('api://telemetry')
      .setSubject('device-user')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey)
    const post = async (recordsJson: string) => {
      const batchId = randomUUID()
      const response = await fetch(url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'idempotency-key': batchId,
        },
        body: `{"device_id":"pi-1","batch_id":"${batchId}","seq":0,"records":${recordsJson}}`,
      })
      return { status: response.status, body: (await response.json()) as Record<string, unknown> }
    }
    const nest = (depth: number) => `${'{"a":'.repeat(depth - 1)}{"leaf":"[{"}${'}'.repeat(depth - 1)}`

    assert.equal((await post(`[${nest(64)}]`)).status, 200)
    assert.equal(batches, 1)
    for (const records of [`[${nest(65)}]`, `[${'['.repeat(100_000)}]`]) {
      const { status, body } = await post(records)
      assert.equal(status, 400)
      assert.equal(body.error, 'invalid_request')
      assert.match(String(body.error_description), /nested deeper than 64 levels/)
    }
    assert.equal(batches, 1, 'onBatch never saw the deep records')
  })
})
