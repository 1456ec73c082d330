/**
 * Issue 14: DPoP at the protected API (RFC 9449 §7): the reference receiver's proof checks, and
 * the uploader presenting a DPoP-bound token with a fresh proof per request and the API's nonce.
 * Real servers: the test IdP (oidc-provider, DPoP on) issues the tokens, the receiver runs on
 * node:http.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { resolveAuthority } from '../../../src/oauth/authority.js'
import { type DPoPKeyRecord, dpopHandle, generateDPoPKey } from '../../../src/oauth/dpop.js'
import { pollDeviceAuthorization, startDeviceAuthorization } from '../../../src/oauth/grants/device.js'
import {
  createReceiver,
  type Receiver,
  type ReceiverDPoPOptions,
} from '../../../src/telemetry/receiver/receiver.js'
import { openSpool } from '../../../src/telemetry/spool/spool.js'
import { Uploader } from '../../../src/telemetry/upload/uploader.js'
import { approveDevice } from '../../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../../support/idp.js'
import { closeServer, listen } from '../../support/net.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']

interface Api {
  url: string
  receiver: Receiver
  statuses: number[]
  server: Server
}

async function startApi(idp: TestIdp, dpop?: ReceiverDPoPOptions): Promise<Api> {
  const receiver = createReceiver({ issuer: idp.issuer, audience: idp.audience, ...(dpop ? { dpop } : {}) })
  const statuses: number[] = []
  const server = createServer((req, res) => {
    res.on('finish', () => statuses.push(res.statusCode))
    receiver.handler(req, res)
  })
  const port = await listen(server)
  return { url: `http://127.0.0.1:${port}/ingest`, receiver, statuses, server }
}

let n = 0
function batch(): { body: string; key: string } {
  n += 1
  const key = `pi-7.dpop-${n}`
  return { key, body: JSON.stringify({ device_id: 'pi-7', batch_id: key, seq: n, records: [{ n }] }) }
}

async function post(
  api: Api,
  authorization: string | undefined,
  proof: string | undefined,
  b = batch(),
): Promise<{ status: number; challenge: string; nonce: string | null; body: string }> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': b.key }
  if (authorization !== undefined) headers.authorization = authorization
  if (proof !== undefined) headers.dpop = proof
  const answer = await fetch(api.url, { method: 'POST', headers, body: b.body })
  return {
    status: answer.status,
    challenge: answer.headers.get('www-authenticate') ?? '',
    nonce: answer.headers.get('dpop-nonce'),
    body: await answer.text(),
  }
}

describe('issue 14: the receiver verifies DPoP proofs (RFC 9449 §7.1)', () => {
  let idp: TestIdp
  let api: Api
  let key: DPoPKeyRecord
  let token: string
  before(async () => {
    idp = await startTestIdp({ interval: 1, rotateRefreshToken: 'default' })
    api = await startApi(idp)
    const server = await resolveAuthority(idp.issuer)
    key = await generateDPoPKey()
    const client = { clientId: idp.publicClientId }
    const flow = await startDeviceAuthorization(server, client, SCOPES)
    await approveDevice(idp.issuer, flow.userCode)
    const tokens = await pollDeviceAuthorization(server, client, flow, {
      sleep: async () => {},
      dpop: await dpopHandle(key),
    })
    assert.equal(tokens.tokenType, 'dpop')
    token = tokens.accessToken
  })
  after(async () => {
    await closeServer(api.server)
    await idp.close()
  })

  test('RFC 9449 §7.1: a fresh proof of the bound key for this request is accepted', async () => {
    const proof = await (await dpopHandle(key)).proof({ method: 'POST', url: api.url, accessToken: token })
    const answer = await post(api, `DPoP ${token}`, proof)
    assert.equal(answer.status, 200, answer.body)
  })

  test('RFC 9449 §7.2: the DPoP-bound token is refused as a Bearer token, and without a proof', async () => {
    const bearer = await post(api, `Bearer ${token}`, undefined)
    assert.equal(bearer.status, 401)
    assert.match(bearer.challenge, /^DPoP algs="[^"]+", error="invalid_token"$/)
    const proofless = await post(api, `DPoP ${token}`, undefined)
    assert.equal(proofless.status, 401)
    assert.match(proofless.challenge, /error="invalid_dpop_proof"/)
  })

  test('RFC 9449 §11.1: a replayed proof is refused', async () => {
    const proof = await (await dpopHandle(key)).proof({ method: 'POST', url: api.url, accessToken: token })
    assert.equal((await post(api, `DPoP ${token}`, proof)).status, 200)
    const replay = await post(api, `DPoP ${token}`, proof)
    assert.equal(replay.status, 401)
    assert.match(replay.challenge, /error="invalid_dpop_proof"/)
  })

  test('RFC 9449 §4.3: wrong ath, htm, htu, key or an old iat are refused', async () => {
    const handle = await dpopHandle(key)
    const other = await dpopHandle(await generateDPoPKey())
    const old = await dpopHandle(key, { now: () => Date.now() - 10 * 60_000 })
    const cases: [string, Promise<string>][] = [
      ['ath', handle.proof({ method: 'POST', url: api.url, accessToken: `${token}x` })],
      ['htm', handle.proof({ method: 'PUT', url: api.url, accessToken: token })],
      ['htu', handle.proof({ method: 'POST', url: `${api.url}/other`, accessToken: token })],
      ['key', other.proof({ method: 'POST', url: api.url, accessToken: token })],
      ['iat', old.proof({ method: 'POST', url: api.url, accessToken: token })],
    ]
    for (const [what, proof] of cases) {
      const answer = await post(api, `DPoP ${token}`, await proof)
      assert.equal(answer.status, 401, what)
      assert.match(answer.challenge, /error="invalid_dpop_proof"/, what)
    }
  })

  test('RFC 9449 §7.1: a bearer token cannot be presented with the DPoP scheme', async () => {
    const bearer = await idp.signAccessToken()
    const proof = await (await dpopHandle(key)).proof({ method: 'POST', url: api.url, accessToken: bearer })
    const answer = await post(api, `DPoP ${bearer}`, proof)
    assert.equal(answer.status, 401)
    assert.match(answer.challenge, /error="invalid_token"/)
    assert.equal((await post(api, `Bearer ${bearer}`, undefined)).status, 200, 'as Bearer it is fine')
  })

  test('RFC 9449 §9: with nonces on, use_dpop_nonce and a DPoP-Nonce; the uploader retries once with it', async (t) => {
    const strict = await startApi(idp, { requireNonce: true })
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-dpop-up-'))
    let forced = 0
    const spool = await openSpool(dir)
    const uploader = new Uploader({
      spool,
      endpoint: strict.url,
      deviceId: 'pi-7',
      getAccessToken: async ({ forceRefresh }) => {
        if (forceRefresh) forced += 1
        return { accessToken: token, tokenType: 'DPoP', dpopKey: key }
      },
      sleep: async () => {},
    })
    t.after(async () => {
      await uploader.close()
      await spool.close()
      await rm(dir, { recursive: true, force: true })
      await closeServer(strict.server)
    })
    const proof = await (await dpopHandle(key)).proof({ method: 'POST', url: strict.url, accessToken: token })
    const challenged = await post(strict, `DPoP ${token}`, proof)
    assert.equal(challenged.status, 401)
    assert.match(challenged.challenge, /error="use_dpop_nonce"/)
    assert.ok(challenged.nonce, 'DPoP-Nonce sent')

    strict.statuses.length = 0
    await spool.append([{ n: 1 }])
    await uploader.drain()
    await spool.append([{ n: 2 }])
    await uploader.drain()
    assert.equal(strict.receiver.batches.length, 2)
    // The first batch met the nonce challenge once; the second used the remembered nonce.
    assert.deepEqual(strict.statuses, [401, 200, 200])
    assert.equal(forced, 0, 'a nonce challenge is not a reason to refresh the token')
  })
})
