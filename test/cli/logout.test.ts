/**
 * `edgetoken logout` end to end against the real test IdP.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { isEdgeTokenError } from '../../src/errors.js'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { refreshTokenGrant } from '../../src/oauth/grants/refresh.js'
import { storeMetadataCache } from '../../src/store/metadata-cache.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { newTestDevice, runCli, seedSignIn } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-logout-cli-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const KEPT =
  'signed out: the tokens were removed here, but the refresh token was not revoked: it stays valid at the IdP until it expires'

function device(idp: TestIdp) {
  return newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
}

describe('edgetoken logout', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp()
  })
  after(() => idp?.close())

  test('revokes the refresh token at the IdP and removes the tokens locally', async () => {
    const d = device(idp)
    const tokens = await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    const r = await runCli(['logout'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '')
    assert.equal(r.stdout, 'signed out: the tokens were removed\n')
    // Revoked at the IdP: the refresh token no longer works.
    const server = await resolveAuthority(idp.issuer)
    await assert.rejects(
      refreshTokenGrant(server, { clientId: idp.publicClientId }, tokens.refreshToken ?? '', SCOPES),
      (err: unknown) => isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED'),
    )
    // Gone locally.
    const status = JSON.parse((await runCli(['status', '--json'], { env: d.env })).stdout)
    assert.equal(status.signed_in, false)
    assert.equal(status.account, null)
    const token = await runCli(['token'], { env: d.env })
    assert.equal(token.code, 3)
    for (const file of readdirSync(d.stateDir)) {
      const raw = readFileSync(join(d.stateDir, file))
      for (const secret of [...idp.issued.refreshTokens, ...idp.issued.accessTokens])
        assert.ok(!raw.includes(secret))
    }
  })

  test('an unreachable IdP is a warning: the tokens are removed anyway, exit 0', async () => {
    const doomed = await startTestIdp()
    const d = device(doomed)
    await seedSignIn({
      issuer: doomed.issuer,
      clientId: doomed.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    await doomed.close()
    const r = await runCli(['logout', '--json'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.match(
      r.stderr,
      /^edgetoken: warning: could not revoke the refresh token \([^\n]*\); removing it locally anyway\n/,
    )
    // Under --json, the human line goes to stderr too; stdout carries only the event.
    assert.ok(r.stderr.endsWith(`\n${KEPT}\n`), r.stderr)
    assert.deepEqual(JSON.parse(r.stdout), { event: 'signed_out', revoked: false, removed: true })
    const status = JSON.parse((await runCli(['status', '--json'], { env: d.env })).stdout)
    assert.equal(status.account, null)
  })

  /**
   * Puts the IdP's real discovery document, changed, into the device's (authenticated) discovery
   * cache, which `logout` reads before asking the IdP.
   */
  async function cacheDiscovery(
    d: ReturnType<typeof device>,
    change: (doc: Record<string, unknown>) => void,
  ): Promise<void> {
    const url = `${idp.issuer}/.well-known/openid-configuration`
    const doc = (await (await fetch(url)).json()) as Record<string, unknown>
    change(doc)
    const store = await openTokenStore({ stateDir: d.stateDir, env: d.env })
    const cache = storeMetadataCache(store)
    await cache.set(`openid-configuration ${url}`, doc, 3600)
  }

  test('an IdP without a revocation endpoint: a warning, the tokens are removed locally, exit 0', async () => {
    const d = device(idp)
    const tokens = await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    await cacheDiscovery(d, (doc) => {
      delete doc.revocation_endpoint
    })
    const r = await runCli(['logout', '--json'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(
      r.stderr,
      `edgetoken: warning: the authorization server offers no revocation (RFC 7009)\n${KEPT}\n`,
    )
    assert.deepEqual(JSON.parse(r.stdout), { event: 'signed_out', revoked: false, removed: true })
    // Nothing was revoked: the refresh token still works at the IdP.
    const server = await resolveAuthority(idp.issuer)
    await refreshTokenGrant(server, { clientId: idp.publicClientId }, tokens.refreshToken ?? '', SCOPES)
    const status = JSON.parse((await runCli(['status', '--json'], { env: d.env })).stdout)
    assert.equal(status.account, null)
  })

  test('RFC 7009 §2.2.1: an unsupported_token_type answer is a warning, not a failure: removed locally, exit 0', async () => {
    const requests: string[] = []
    const revocation = createServer((req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => {
        body += c.toString()
      })
      req.on('end', () => {
        requests.push(`${req.method} ${body}`)
        res.writeHead(400, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: 'unsupported_token_type' }))
      })
    })
    await new Promise<void>((resolve) => revocation.listen(0, '127.0.0.1', resolve))
    after(() => revocation.close())
    const d = device(idp)
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    const port = (revocation.address() as AddressInfo).port
    await cacheDiscovery(d, (doc) => {
      doc.revocation_endpoint = `http://127.0.0.1:${port}/revoke`
    })
    const r = await runCli(['logout', '--json'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(
      r.stderr,
      `edgetoken: warning: the authorization server cannot revoke refresh tokens (unsupported_token_type)\n${KEPT}\n`,
    )
    assert.deepEqual(JSON.parse(r.stdout), { event: 'signed_out', revoked: false, removed: true })
    assert.equal(requests.length, 1)
    assert.match(requests[0] ?? '', /^POST .*token_type_hint=refresh_token/)
    const status = JSON.parse((await runCli(['status', '--json'], { env: d.env })).stdout)
    assert.equal(status.account, null)
  })

  test('issue 11 security #13: a revocation endpoint answering 401 with an empty body: the warning reports the status first', async () => {
    const revocation = createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        res.writeHead(401)
        res.end()
      })
    })
    await new Promise<void>((resolve) => revocation.listen(0, '127.0.0.1', resolve))
    after(() => revocation.close())
    const d = device(idp)
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    const port = (revocation.address() as AddressInfo).port
    await cacheDiscovery(d, (doc) => {
      doc.revocation_endpoint = `http://127.0.0.1:${port}/revoke`
    })
    const r = await runCli(['logout'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(
      r.stderr,
      `edgetoken: warning: could not revoke the refresh token (revocation request: 127.0.0.1:${port} answered 401 with an empty body); removing it locally anyway\n`,
    )
    assert.doesNotMatch(r.stderr, /content-type/)
    assert.equal(r.stdout, `${KEPT}\n`)
  })

  test('issue 11 security #13, RFC 8414 §2: revocation_endpoint_auth_methods_supported without none: nothing is sent, the refresh token stays valid at the IdP and the output says so', async () => {
    const d = device(idp)
    const tokens = await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    const revocations: string[] = []
    const revocation = createServer((req, res) => {
      revocations.push(req.url ?? '')
      res.writeHead(200)
      res.end()
    })
    await new Promise<void>((resolve) => revocation.listen(0, '127.0.0.1', resolve))
    after(() => revocation.close())
    const port = (revocation.address() as AddressInfo).port
    await cacheDiscovery(d, (doc) => {
      // oidc-provider 9 publishes no list (its revocation endpoint takes the token endpoint's
      // methods, `none` included): the first test covers that. This server names only
      // confidential-client methods, which oidc-provider cannot be configured to publish.
      assert.equal(doc.revocation_endpoint_auth_methods_supported, undefined)
      doc.revocation_endpoint = `http://127.0.0.1:${port}/revoke`
      doc.revocation_endpoint_auth_methods_supported = ['client_secret_basic', 'private_key_jwt']
    })
    const r = await runCli(['logout', '--json'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(
      r.stderr,
      `edgetoken: warning: the authorization server's revocation endpoint does not accept public clients (its revocation_endpoint_auth_methods_supported has no 'none'); not revoking\n${KEPT}\n`,
    )
    assert.deepEqual(JSON.parse(r.stdout), { event: 'signed_out', revoked: false, removed: true })
    assert.deepEqual(revocations, [], 'the refresh token was sent to the revocation endpoint')
    // Still valid at the IdP, as the output says.
    const server = await resolveAuthority(idp.issuer)
    await refreshTokenGrant(server, { clientId: idp.publicClientId }, tokens.refreshToken ?? '', SCOPES)
    // And gone here: status needs a sign-in (exit 3).
    const status = await runCli(['status', '--json'], { env: d.env })
    assert.equal(status.code, 3)
    assert.equal(JSON.parse(status.stdout).account, null)
  })

  test('logging out when not signed in is fine', async () => {
    const d = device(idp)
    const r = await runCli(['logout', '--json'], { env: d.env })
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout), { event: 'signed_out', revoked: false, removed: false })
    assert.match(r.stderr, /not signed in/)
  })
})
