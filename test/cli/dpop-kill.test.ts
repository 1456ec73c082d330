/**
 * Issue 14 (1): a device killed between the IdP's answer to a refresh and its durable save. With
 * rotation the IdP has spent the old refresh token and the device never stored the new one: the
 * sign-in is lost (reusing the old one revokes the grant). With DPoP the refresh token is bound to
 * the device's key and oidc-provider's default policy stops rotating it (RFC 9700 §4.14.2): nothing
 * can be lost.
 *
 * The loop: `token --force-refresh` as a child process against the real test IdP, killed with
 * SIGKILL at a random instant 0-300 ms after the IdP answered its refresh request (the window in
 * which the save happens), 30 times; after each kill, one refresh in this process shows whether
 * the sign-in survived. Run once with DPoP on and once with it off, with the IdP's default
 * rotation policy both times; the figures are printed as test diagnostics.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { refreshFor } from '../../src/cli/token-source.js'
import { isEdgeTokenError } from '../../src/errors.js'
import { prepareDeviceSignIn } from '../../src/identity/device-signin.js'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { signInScopes } from '../../src/oauth/scopes.js'
import { accountFromTokenSet } from '../../src/oauth/tokens.js'
import { acquireTokenSilent, saveSignIn } from '../../src/store/cache.js'
import { openTokenStore, type TokenStore } from '../../src/store/token-store.js'
import { cliEnv, newTestDevice, spawnCli, type TestDevice } from '../support/cli.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-dpop-kill-'))
after(() => rmSync(root, { recursive: true, force: true }))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const KILLS = 30
const WINDOW_MS = 300

/** Signs the device in the way `login` does (the same function), with or without DPoP. */
async function signIn(idp: TestIdp, device: TestDevice, store: TokenStore, dpop: boolean): Promise<void> {
  const server = await resolveAuthority(idp.issuer)
  const identity = { authority: idp.issuer, clientId: idp.publicClientId }
  const prepared = await prepareDeviceSignIn({
    store,
    identity,
    scopes: signInScopes(SCOPES),
    server,
    client: { clientId: idp.publicClientId },
    dpop,
  })
  await approveDevice(idp.issuer, prepared.flow.userCode)
  const tokenSet = await prepared.poll({ sleep: async () => {} })
  await saveSignIn(store, {
    ...identity,
    account: accountFromTokenSet(server, idp.publicClientId, tokenSet),
    tokenSet,
    requestedScopes: SCOPES,
    dpopKey: prepared.dpopKey,
  })
  assert.equal(tokenSet.tokenType, dpop ? 'dpop' : 'bearer', device.stateDir)
}

/** Whether the stored sign-in still refreshes (false: sign-in required, i.e. lost). */
async function survives(idp: TestIdp, store: TokenStore): Promise<boolean> {
  try {
    await acquireTokenSilent(store, {
      authority: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      forceRefresh: true,
      refresh: refreshFor(idp.issuer, idp.publicClientId, store, undefined),
    })
    return true
  } catch (err) {
    if (isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED')) return false
    throw err
  }
}

/** Runs `token --force-refresh`, SIGKILLs it 0-300 ms after the IdP answered its refresh. */
async function killDuringRefresh(idp: TestIdp, device: TestDevice): Promise<void> {
  const before = idp.refreshes
  // The built executable: 60 cold starts through tsx would take minutes (npm test builds dist first).
  const child = spawnCli(['token', '--force-refresh'], { env: device.env, entry: 'dist' })
  let exited = false
  const closed = new Promise<void>((resolve) => {
    child.once('close', () => {
      exited = true
      resolve()
    })
  })
  const deadline = Date.now() + 30_000
  while (!exited && idp.refreshes === before && Date.now() < deadline) await sleep(1)
  await sleep(Math.floor(Math.random() * WINDOW_MS))
  child.kill('SIGKILL')
  await closed
}

async function lossesOver(idp: TestIdp, dpop: boolean): Promise<number> {
  const device = newTestDevice(root, { issuer: idp.issuer, scopes: SCOPES })
  const store = await openTokenStore({ stateDir: device.stateDir, env: cliEnv({ env: device.env }) })
  await signIn(idp, device, store, dpop)
  let lost = 0
  for (let i = 0; i < KILLS; i++) {
    await killDuringRefresh(idp, device)
    if (await survives(idp, store)) continue
    lost += 1
    await signIn(idp, device, store, dpop)
  }
  return lost
}

describe('issue 14: kill -9 during token --force-refresh, 30 times', () => {
  test('issue 14 (1): with DPoP and the IdP default rotation policy, 0 sign-ins are lost (DPoP off for comparison)', async (t) => {
    const idp = await startTestIdp({ interval: 1, rotateRefreshToken: 'default', accessTokenTtlSeconds: 300 })
    t.after(() => idp.close())
    const withDPoP = await lossesOver(idp, true)
    const withoutDPoP = await lossesOver(idp, false)
    t.diagnostic(`sign-ins lost in ${KILLS} kills: DPoP on ${withDPoP}, DPoP off ${withoutDPoP}`)
    assert.equal(withDPoP, 0, 'no sign-in is lost with DPoP-bound, unrotated refresh tokens')
  })
})
