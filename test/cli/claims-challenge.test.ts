/**
 * Claims challenges (issue 13): the telemetry API (the Entra ID dialect server's `/api/telemetry`)
 * answers 401 with `WWW-Authenticate: Bearer error="insufficient_claims", claims="<base64>"`; the
 * uploader refreshes with the `claims` parameter (merged with the configured client capabilities)
 * and retries once; a challenge the refresh token cannot meet is "sign in again" with the batch
 * kept. And `token --claims` for scripts. Runs `main()` in this process so the Entra ID hosts reach
 * the loopback dialect server; the `token --claims` cached-path test runs the executable against
 * oidc-provider.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { PublicClient } from '../../src/client/public-client.js'
import { saveSignIn } from '../../src/store/cache.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { openSpool } from '../../src/telemetry/spool/spool.js'
import { newTestDevice, runCli, runMain, seedSignIn, type TestDevice } from '../support/cli.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../support/entra.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-claims-'))
after(() => rmSync(root, { recursive: true, force: true }))

const AUTHORITY = 'https://login.microsoftonline.com/organizations'
const CLIENT_ID = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'
const SCOPES = ['api://telemetry/Telemetry.Write', 'offline_access']
const NBF = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
const MFA = '{"access_token":{"acrs":{"essential":true,"value":"c1"}}}'

/** A device signed in at the Entra dialect server, with one record spooled. */
async function signedInDevice(
  entra: EntraDialectServer,
  extra: Record<string, string> = {},
): Promise<TestDevice> {
  const device = newTestDevice(root, {
    issuer: AUTHORITY,
    clientId: CLIENT_ID,
    scopes: SCOPES,
    extra: { EDGETOKEN_TELEMETRY_ENDPOINT: entra.apiUrl, ...extra },
  })
  const client = new PublicClient({ authority: AUTHORITY, clientId: CLIENT_ID })
  const flow = await client.startDeviceFlow({ scopes: SCOPES })
  const { tokens, account } = await flow.poll({ sleep: async () => {} })
  const store = await openTokenStore({ stateDir: device.stateDir, env: device.env })
  await saveSignIn(store, {
    authority: AUTHORITY,
    clientId: CLIENT_ID,
    account,
    tokenSet: tokens,
    requestedScopes: SCOPES,
  })
  const spool = await openSpool(device.stateDir)
  await spool.append([{ temp: 21.5 }])
  await spool.close()
  return device
}

function refreshesWithClaims(entra: EntraDialectServer): Record<string, unknown>[] {
  return entra.requests
    .filter((r) => r.params.get('grant_type') === 'refresh_token' && r.params.has('claims'))
    .map((r) => JSON.parse(r.params.get('claims') ?? '') as Record<string, unknown>)
}

async function pending(device: TestDevice): Promise<number> {
  const spool = await openSpool(device.stateDir)
  try {
    return (await spool.stats()).pending
  } finally {
    await spool.close()
  }
}

describe('claims challenges (Entra ID dialect)', () => {
  let entra: EntraDialectServer
  let unroute: () => Promise<void>
  before(async () => {
    entra = await startEntraDialect()
    unroute = routeEntraHosts(entra)
  })
  after(async () => {
    await unroute()
    await entra.close()
  })

  test('issue 13 #8: a 401 insufficient_claims challenge -> one refresh with claims (and xms_cc) -> the upload succeeds', async () => {
    entra.setApiClaimsChallenge(undefined)
    const device = await signedInDevice(entra, { EDGETOKEN_CLIENT_CAPABILITIES: 'cp1' })
    entra.setApiClaimsChallenge(NBF)
    entra.setClaimsRefreshOutcome('success')
    const challengesBefore = entra.apiChallenges
    const refreshesBefore = refreshesWithClaims(entra).length
    const r = await runMain(['upload', '--json'], device.env)
    assert.equal(r.code, 0, r.err)
    assert.equal(entra.apiChallenges - challengesBefore, 1, 'challenged once')
    const asked = refreshesWithClaims(entra).slice(refreshesBefore)
    assert.equal(asked.length, 1, 'one refresh with claims')
    // The challenge's claims, merged with the client capabilities (MSAL's format).
    assert.deepEqual(asked[0], {
      access_token: { nbf: { essential: true, value: '1700000000' }, xms_cc: { values: ['cp1'] } },
    })
    assert.deepEqual(entra.apiAccepted.at(-1)?.records, [{ temp: 21.5 }])
    assert.equal(await pending(device), 0)
  })

  test('issue 13 #9: a challenge the refresh cannot meet (interaction_required) is signin_required (exit 3), the batch kept', async () => {
    entra.setApiClaimsChallenge(undefined)
    const device = await signedInDevice(entra)
    entra.setApiClaimsChallenge(MFA)
    entra.setClaimsRefreshOutcome('interaction_required')
    const accepted = entra.apiAccepted.length
    const r = await runMain(['upload', '--json'], device.env)
    assert.equal(r.code, 3, r.err)
    const last = JSON.parse(r.out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>
    assert.equal(last.event, 'error')
    assert.equal(last.code, 'signin_required')
    assert.match(String(last.message), /interaction_required.*the claims challenge needs a new sign-in/)
    assert.equal(entra.apiAccepted.length, accepted, 'nothing delivered')
    assert.equal(await pending(device), 1, 'the batch is kept')
    const status = await runMain(['status', '--json'], device.env)
    assert.equal(JSON.parse(status.out).needs_sign_in, true)
    entra.setClaimsRefreshOutcome('success')
  })

  test('issue 13 #10: token --claims refreshes with the claims (JSON or the challenge base64) and replaces the cached token', async () => {
    entra.setApiClaimsChallenge(undefined)
    entra.setClaimsRefreshOutcome('success')
    const device = await signedInDevice(entra)
    const before = await runMain(['token'], device.env)
    assert.equal(before.code, 0, before.err)
    const b64 = Buffer.from(NBF).toString('base64')
    const refreshesBefore = refreshesWithClaims(entra).length
    const r = await runMain(['token', '--claims', b64], device.env)
    assert.equal(r.code, 0, r.err)
    assert.notEqual(r.out, before.out, 'a new token')
    assert.deepEqual(refreshesWithClaims(entra).slice(refreshesBefore), [JSON.parse(NBF)])
    const after = await runMain(['token'], device.env)
    assert.equal(after.out, r.out, 'the new token replaced the cached one')

    const bad = await runMain(['token', '--claims', '[1]'], device.env)
    assert.equal(bad.code, 2)
    assert.match(bad.err, /^edgetoken: --claims: claims must be a JSON object/)
  })
})

describe('token --claims (the executable)', () => {
  let idp: TestIdp
  before(async () => {
    idp = await startTestIdp()
  })
  after(() => idp.close())

  test('issue 13 #11: token --claims is never answered from the cached token', async () => {
    const device = newTestDevice(root, { issuer: idp.issuer })
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: ['openid', 'offline_access', 'telemetry:write'],
      stateDir: device.stateDir,
      env: device.env,
    })
    const cached = await runCli(['token'], { env: device.env })
    assert.equal(cached.code, 0, cached.stderr)
    const refreshes = idp.refreshes
    const r = await runCli(['token', '--claims', NBF], { env: device.env })
    assert.equal(r.code, 0, r.stderr)
    assert.equal(idp.refreshes, refreshes + 1)
    assert.notEqual(r.stdout, cached.stdout)
  })
})
