/**
 * Issue 14: DPoP on the client_credentials grant from the command line, against the real test IdP
 * (oidc-provider 9): with `dpop` `auto` the app's tokens are bound to a key kept in the encrypted
 * store when the IdP advertises `dpop_signing_alg_values_supported`, the next acquisition proves
 * the same key, and `dpop: false` (or an IdP without DPoP) keeps bearer tokens.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type CliResult, newTestDevice, runCli } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { cnfJkt, type Env, storedAccount } from './sign-in-fixture.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-dpop-machine-'))
after(() => rmSync(root, { recursive: true, force: true }))
const TIMEOUT_MS = 60_000
const CLIENT = 'edgetoken-dpop-service'
const SECRET = `s3cr3t-${Math.random().toString(36).slice(2)}`
const secretFile = join(root, 'secret')
writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 })

function secretClient() {
  return {
    client_id: CLIENT,
    client_secret: SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }
}

function machine(idp: TestIdp, extra: Record<string, string> = {}): Env {
  return newTestDevice(root, {
    issuer: idp.issuer,
    clientId: CLIENT,
    scopes: [idp.apiScope],
    extra: { EDGETOKEN_GRANT: 'client_credentials', EDGETOKEN_CLIENT_SECRET_FILE: secretFile, ...extra },
  }).env
}

function tokenJson(result: CliResult): Record<string, string> {
  assert.equal(result.code, 0, result.stderr)
  return JSON.parse(result.stdout) as Record<string, string>
}

describe('issue 14: DPoP on client_credentials', () => {
  let idp: TestIdp
  let bearerIdp: TestIdp
  before(async () => {
    ;[idp, bearerIdp] = await Promise.all([
      startTestIdp({ clients: [secretClient()] }),
      startTestIdp({ clients: [secretClient()], dpop: false }),
    ])
  })
  after(async () => {
    await Promise.all([idp.close(), bearerIdp.close()])
  })

  test('RFC 9449 §5: client_credentials (secret) binds the token to the app key in the store (cnf.jkt), token --json says DPoP, the next acquisition proves the same key', async () => {
    const env = machine(idp)
    const proofs = idp.dpop.proofs
    const login = await runCli(['login', '--json'], { env, timeoutMs: TIMEOUT_MS })
    assert.equal(login.code, 0, login.stderr)
    assert.ok(idp.dpop.proofs > proofs, 'the token request carried a proof')
    const first = await storedAccount(idp, env, CLIENT)
    assert.ok(first.dpopKey, 'the DPoP key is in the encrypted store, under the app account')
    assert.equal(first.dpopKey.alg, 'ES256')
    assert.equal(first.entry?.grant, 'client_credentials')

    const cached = tokenJson(await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS }))
    assert.equal(cached.token_type, 'DPoP')
    assert.equal(cnfJkt(cached.access_token ?? ''), first.dpopKey.jkt)

    const renewed = tokenJson(
      await runCli(['token', '--force-refresh', '--json'], { env, timeoutMs: TIMEOUT_MS }),
    )
    assert.notEqual(renewed.access_token, cached.access_token, 'a new token was acquired')
    assert.equal(renewed.token_type, 'DPoP')
    assert.equal(cnfJkt(renewed.access_token ?? ''), first.dpopKey.jkt, 'bound to the same stored key')
    assert.equal((await storedAccount(idp, env, CLIENT)).dpopKey?.jkt, first.dpopKey.jkt)
    for (const text of [login.stdout, login.stderr]) {
      assert.ok(!text.includes(String(first.dpopKey.privateJwk.d)), 'the private key never appears')
      assert.ok(!text.includes(SECRET), 'the secret never appears')
    }
  })

  test('issue 14: client_credentials with dpop false: Bearer, no key stored; turned on later, the next acquisition is DPoP', async () => {
    const env = machine(idp, { EDGETOKEN_DPOP: 'false' })
    const bearer = tokenJson(await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS }))
    assert.equal(bearer.token_type, 'Bearer')
    assert.equal(cnfJkt(bearer.access_token ?? ''), undefined)
    assert.equal((await storedAccount(idp, env, CLIENT)).dpopKey, undefined)

    const on = { ...env, EDGETOKEN_DPOP: 'auto' }
    const bound = tokenJson(
      await runCli(['token', '--force-refresh', '--json'], { env: on, timeoutMs: TIMEOUT_MS }),
    )
    assert.equal(bound.token_type, 'DPoP')
    const { dpopKey, entry } = await storedAccount(idp, on, CLIENT)
    assert.equal(cnfJkt(bound.access_token ?? ''), dpopKey?.jkt)
    assert.deepEqual(
      entry?.accessTokens.map((t) => t.tokenType),
      ['DPoP'],
      'the bearer token was dropped with the key change',
    )
  })

  test('issue 14: dpop auto against an IdP that advertises no DPoP: Bearer, no key stored', async () => {
    const env = machine(bearerIdp)
    const bearer = tokenJson(await runCli(['token', '--json'], { env, timeoutMs: TIMEOUT_MS }))
    assert.equal(bearer.token_type, 'Bearer')
    assert.equal(cnfJkt(bearer.access_token ?? ''), undefined)
    assert.equal((await storedAccount(bearerIdp, env, CLIENT)).dpopKey, undefined)
  })
})
