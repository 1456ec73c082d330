/**
 * Issue 14: DPoP from the command line against the real test IdP (oidc-provider 9, DPoP on and
 * advertised) and the reference API: `login` binds the tokens to a key kept in the encrypted store,
 * `token --json` says `DPoP`, `proof` makes proofs a script can send, `upload` presents the token
 * with a proof per request, and `dpop: false` keeps bearer tokens.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { decodeJwt } from 'jose'
import { accountKey } from '../../src/store/document.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { type CliResult, cliEnv, collect, newTestDevice, runCli, spawnCli } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-dpop-cli-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TIMEOUT_MS = 60_000

async function login(idp: TestIdp, env: Record<string, string>): Promise<CliResult> {
  const child = spawnCli(['login', '--json', '--display', 'none'], { env })
  const first = new Promise<Record<string, unknown>>((resolve) => {
    let buffered = ''
    child.stdout?.on('data', (b: Buffer) => {
      buffered += b.toString('utf8')
      const newline = buffered.indexOf('\n')
      if (newline >= 0) resolve(JSON.parse(buffered.slice(0, newline)) as Record<string, unknown>)
    })
  })
  const done = collect(child, { timeoutMs: TIMEOUT_MS })
  await approveDevice(idp.issuer, String((await first).user_code))
  return done
}

function cnfJkt(accessToken: string): unknown {
  const cnf = decodeJwt(accessToken).cnf as Record<string, unknown> | undefined
  return cnf?.jkt
}

async function storedDocument(idp: TestIdp, env: Record<string, string>) {
  const store = await openTokenStore({ stateDir: env.EDGETOKEN_STATE_DIR ?? '', env: cliEnv({ env }) })
  const doc = await store.read()
  return { doc, key: accountKey(idp.issuer, idp.publicClientId) }
}

describe('issue 14: DPoP from the command line', () => {
  let idp: TestIdp
  let api: TestApi
  before(async () => {
    idp = await startTestIdp({ interval: 1, rotateRefreshToken: 'default' })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
  })
  after(async () => {
    await api.close()
    await idp.close()
  })

  test('RFC 9449 §5: login binds the tokens to the stored key (cnf.jkt), token --json says DPoP, a refresh keeps it', async () => {
    const { env } = newTestDevice(root, {
      issuer: idp.issuer,
      scopes: SCOPES,
      extra: { EDGETOKEN_TELEMETRY_ENDPOINT: api.url },
    })
    const signedIn = await login(idp, env)
    assert.equal(signedIn.code, 0, signedIn.stderr)
    const { doc, key } = await storedDocument(idp, env)
    const stored = doc.dpopKeys?.[key]
    assert.ok(stored, 'the DPoP key is in the encrypted store')
    assert.equal(stored.alg, 'ES256')
    assert.equal(doc.pendingSignIns?.[key], undefined, 'the pending sign-in is gone once signed in')

    const json = await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(json.code, 0, json.stderr)
    const body = JSON.parse(json.stdout) as Record<string, string>
    assert.equal(body.token_type, 'DPoP')
    assert.equal(cnfJkt(body.access_token ?? ''), stored.jkt)
    const plain = await runCli(['token'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(plain.stdout, `${body.access_token}\n`, 'plain token output is still the access token')

    const refreshes = idp.refreshes
    const forced = await runCli(['token', '--force-refresh', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(forced.code, 0, forced.stderr)
    const refreshed = JSON.parse(forced.stdout) as Record<string, string>
    assert.equal(idp.refreshes, refreshes + 1)
    assert.equal(refreshed.token_type, 'DPoP')
    assert.equal(cnfJkt(refreshed.access_token ?? ''), stored.jkt)
    const after = await storedDocument(idp, env)
    assert.equal(
      after.doc.accounts[key]?.refreshToken,
      doc.accounts[key]?.refreshToken,
      'the DPoP-bound refresh token is not rotated (RFC 9700 §4.14.2)',
    )
    for (const text of [signedIn.stdout, signedIn.stderr, json.stderr, forced.stderr]) {
      assert.ok(!text.includes(String(stored.privateJwk.d)), 'the private key never appears')
    }
  })

  test('RFC 9449 §7.1: proof prints a proof the API accepts once; upload sends Authorization: DPoP', async () => {
    const { env } = newTestDevice(root, {
      issuer: idp.issuer,
      scopes: SCOPES,
      extra: { EDGETOKEN_TELEMETRY_ENDPOINT: api.url },
    })
    assert.equal((await login(idp, env)).code, 0)
    const token = (await runCli(['token'], { env, timeoutMs: TIMEOUT_MS })).stdout.trim()
    const proof = await runCli(['proof', '--method', 'POST', '--url', api.url], {
      env,
      timeoutMs: TIMEOUT_MS,
    })
    assert.equal(proof.code, 0, proof.stderr)
    const body = JSON.stringify({ device_id: 'script', batch_id: 'script.1', seq: 0, records: [{ a: 1 }] })
    const send = (dpop: string) =>
      fetch(api.url, {
        method: 'POST',
        headers: {
          authorization: `DPoP ${token}`,
          dpop,
          'content-type': 'application/json',
          'idempotency-key': 'script.1',
        },
        body,
      })
    assert.equal((await send(proof.stdout.trim())).status, 200)
    assert.equal((await send(proof.stdout.trim())).status, 401, 'a proof is good for one request')

    const sent = await runCli(['send'], { env, stdin: '{"t":1}\n{"t":2}\n', timeoutMs: TIMEOUT_MS })
    assert.equal(sent.code, 0, sent.stderr)
    const before = api.receiver.batches.length
    const uploaded = await runCli(['upload'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(uploaded.code, 0, uploaded.stderr)
    assert.equal(api.receiver.batches.length, before + 1)
  })

  test('issue 14: proof --help, and a usage error without --method', async () => {
    const { env } = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
    const help = await runCli(['proof', '--help'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(help.code, 0)
    assert.match(help.stdout, /edgetoken proof --method/)
    const bad = await runCli(['proof', '--url', 'https://api.example/'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(bad.code, 2, bad.stderr)
    assert.match(bad.stderr, /--method/)
  })

  test('issue 14: dpop false: bearer tokens, no key stored, and proof says so (exit 2)', async () => {
    const { env } = newTestDevice(root, {
      issuer: idp.issuer,
      scopes: SCOPES,
      extra: { EDGETOKEN_DPOP: 'false' },
    })
    assert.equal((await login(idp, env)).code, 0)
    const { doc, key } = await storedDocument(idp, env)
    assert.equal(doc.dpopKeys?.[key], undefined)
    const json = await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS })
    const body = JSON.parse(json.stdout) as Record<string, string>
    assert.equal(body.token_type, 'Bearer')
    assert.equal(cnfJkt(body.access_token ?? ''), undefined)
    const proof = await runCli(['proof', '--method', 'GET', '--url', api.url], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(proof.code, 2)
    assert.match(proof.stderr, /bearer token/)
  })
})
