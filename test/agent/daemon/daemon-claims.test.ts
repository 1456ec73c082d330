/**
 * Claims challenges in the daemon (issue 13, follow-up): `edgetoken run` uploads to the Entra ID
 * dialect server's `/api/telemetry`, which answers a 401 `insufficient_claims` challenge to every
 * token not issued for its claims. The daemon's uploader must refresh once asking for them (merged
 * with the configured client capabilities, `xms_cc`) and deliver the batch, as `upload` does; and
 * the client capabilities reach every refresh the daemon makes, the renewer's included.
 *
 * Runs `main(['run'])` in this process (the Entra ID hosts are routed to the loopback dialect
 * server only here), stopped by its signal as SIGTERM would.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { createDaemonTokens, type DaemonRefreshClaims } from '../../../src/agent/daemon/daemon-tokens.js'
import { main } from '../../../src/cli/main.js'
import { PublicClient } from '../../../src/client/public-client.js'
import { saveSignIn } from '../../../src/store/cache.js'
import { openTokenStore, type TokenStore } from '../../../src/store/token-store.js'
import { openSpool } from '../../../src/telemetry/spool/spool.js'
import { newTestDevice, type TestDevice } from '../../support/cli.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../../support/entra.js'
import { waitUntil } from './daemon-harness.js'

const AUTHORITY = 'https://login.microsoftonline.com/organizations'
const CLIENT_ID = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'
const SCOPES = ['api://telemetry/Telemetry.Write', 'offline_access']
const NBF = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-daemon-claims-'))
after(() => rmSync(root, { recursive: true, force: true }))

/** A device signed in at the Entra dialect server, with one record spooled. */
async function signedInDevice(entra: EntraDialectServer, extra: Record<string, string>): Promise<TestDevice> {
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

/** `edgetoken run --json` in this process; `stop()` aborts it as SIGTERM does and returns its exit. */
function startRun(env: NodeJS.ProcessEnv) {
  const stop = new AbortController()
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (d) => {
    out += d
  })
  stderr.on('data', (d) => {
    err += d
  })
  const exit = main({
    argv: ['run', '--json'],
    env,
    stdin: new PassThrough(),
    stdout,
    stderr,
    signal: stop.signal,
  })
  return {
    out: () => out,
    err: () => err,
    async stop(): Promise<number> {
      stop.abort()
      return exit
    },
  }
}

function refreshesWithClaims(entra: EntraDialectServer): Record<string, unknown>[] {
  return entra.requests
    .filter((r) => r.params.get('grant_type') === 'refresh_token' && r.params.has('claims'))
    .map((r) => JSON.parse(r.params.get('claims') ?? '') as Record<string, unknown>)
}

describe('issue 13 follow-up: claims challenges in the daemon (Entra ID dialect)', () => {
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

  test('issue 13 follow-up #3: run answers a 401 insufficient_claims with one refresh carrying the claims and xms_cc, and delivers the batch', async () => {
    entra.setApiClaimsChallenge(undefined)
    const device = await signedInDevice(entra, { EDGETOKEN_CLIENT_CAPABILITIES: 'cp1' })
    entra.setApiClaimsChallenge(NBF)
    entra.setClaimsRefreshOutcome('success')
    const challengesBefore = entra.apiChallenges
    const refreshesBefore = refreshesWithClaims(entra).length
    const accepted = entra.apiAccepted.length
    const run = startRun(device.env)
    let code: number | undefined
    try {
      await waitUntil(
        () => entra.apiAccepted.length > accepted || /signin_required/.test(run.out()),
        'the batch at the API',
        20_000,
        () => `stdout:\n${run.out()}\nstderr:\n${run.err()}`,
      )
    } finally {
      code = await run.stop()
    }
    assert.equal(code, 0, run.err())
    assert.doesNotMatch(run.out(), /signin_required/, 'the challenge was met without a new sign-in')
    assert.deepEqual(entra.apiAccepted.at(-1)?.records, [{ temp: 21.5 }])
    assert.equal(entra.apiChallenges - challengesBefore, 1, 'challenged once')
    // The challenge's claims, merged with the client capabilities (MSAL's format).
    assert.deepEqual(refreshesWithClaims(entra).slice(refreshesBefore), [
      { access_token: { nbf: { essential: true, value: '1700000000' }, xms_cc: { values: ['cp1'] } } },
    ])
    const spool = await openSpool(device.stateDir)
    try {
      assert.equal((await spool.stats()).pending, 0)
    } finally {
      await spool.close()
    }
  })
})

describe('issue 13 follow-up: the daemon refreshes with the client capabilities', () => {
  test("issue 13 follow-up #3: the renewer and the uploader hand clientCapabilities (and a challenge's claims) to every refresh", async () => {
    const asked: (DaemonRefreshClaims | undefined)[] = []
    const forced: boolean[] = []
    const stop = new AbortController()
    const tokens = createDaemonTokens({
      store: {} as TokenStore,
      identity: { authority: AUTHORITY, clientId: CLIENT_ID, scopes: SCOPES },
      acquireTokenSilent: async (_store, options) => {
        forced.push(options.forceRefresh === true)
        await options.refresh?.('rt', options.scopes)
        return {
          accessToken: 'at',
          expiresAt: Date.now() + 3_600_000,
          scopes: [],
          fromCache: false,
          tokenType: 'Bearer',
        }
      },
      refreshFor: (_authority, _clientId, _store, _signal, claims) => async () => {
        asked.push(claims)
        return { accessToken: 'at', tokenType: 'bearer', expiresAt: Date.now() + 3_600_000, scopes: [] }
      },
      clientCapabilities: ['cp1'],
      signal: stop.signal,
      output: { log() {}, warn() {}, debug() {}, emit() {} },
      onSigninRequired() {},
    })
    tokens.renewer.start()
    await waitUntil(() => asked.length >= 1, "the renewer's first acquisition", 5000)
    tokens.renewer.stop()
    await tokens.getToken(false, undefined, NBF)
    stop.abort()
    assert.deepEqual(asked, [
      { claims: undefined, clientCapabilities: ['cp1'] },
      { claims: NBF, clientCapabilities: ['cp1'] },
    ])
    assert.deepEqual(forced, [false, true], 'a claims challenge always refreshes')
  })
})
