import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { createDaemonTokens } from '../../../src/agent/daemon/daemon-tokens.js'
import { isEdgeTokenError, UnavailableError } from '../../../src/errors.js'
import type { TokenSet } from '../../../src/oauth/types.js'
import { acquireTokenSilent, saveSignIn } from '../../../src/store/cache.js'
import { openTokenStore } from '../../../src/store/token-store.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-daemon-tokens-'))
after(() => rmSync(root, { recursive: true, force: true }))

const identity = { authority: 'https://idp.test', clientId: 'device-client', scopes: ['api:read'] }

/** A device signed in with a token that has `secondsLeft` to live, and an IdP that is down. */
async function deviceWithIdpDown(name: string, secondsLeft: number) {
  const store = await openTokenStore({ stateDir: join(root, name), env: {} })
  const now = Date.now()
  await saveSignIn(store, {
    authority: identity.authority,
    clientId: identity.clientId,
    account: { id: 'user-1', issuer: identity.authority },
    tokenSet: {
      accessToken: 'at-0',
      tokenType: 'bearer',
      expiresAt: now + secondsLeft * 1000,
      scopes: identity.scopes,
      refreshToken: 'rt-0',
    },
    requestedScopes: identity.scopes,
    requestedAt: now - 3_600_000 + secondsLeft * 1000,
  })
  const refreshes: { forced: boolean }[] = []
  const stop = new AbortController()
  const tokens = createDaemonTokens({
    store,
    identity,
    acquireTokenSilent,
    refreshFor: () => async (): Promise<TokenSet> => {
      refreshes.push({ forced: false })
      throw new UnavailableError('idp.test answered 503', { status: 503 })
    },
    signal: stop.signal,
    output: { log() {}, warn() {}, debug() {}, emit() {} },
    onSigninRequired() {},
  })
  after(() => {
    tokens.renewer.stop()
    stop.abort()
  })
  // A renewal (forced, as the renewer's scheduled ones are) fails: the renewer is now retrying.
  tokens.renewer.renewNow()
  for (let i = 0; i < 200 && tokens.renewer.retryAt === undefined; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  assert.ok(tokens.renewer.retryAt !== undefined, 'the renewer is retrying after the failed renewal')
  assert.equal(refreshes.length, 1, "the renewer's one refresh")
  return { tokens, refreshes }
}

test('issue 17: while the renewer retries a failed renewal, the uploader sends no refresh of its own and waits for the next attempt', async () => {
  const { tokens, refreshes } = await deviceWithIdpDown('expired', -10)
  const retryAt = tokens.renewer.retryAt ?? 0
  await assert.rejects(tokens.getToken(false), (err) => {
    assert.ok(err instanceof UnavailableError, String(err))
    assert.match(err.message, /waiting for the next renewal attempt/)
    // Retry-After for the batch: the renewer's next attempt, not sooner.
    assert.ok(
      (err.retryAfterSeconds ?? 0) * 1000 >= retryAt - Date.now(),
      `retry after ${err.retryAfterSeconds} s`,
    )
    return true
  })
  assert.equal(refreshes.length, 1, 'no second refresh from the uploader')
  // A 401 (forced) still refreshes at once: the API refused the token, waiting would not help.
  await assert.rejects(tokens.getToken(true), (err) => isEdgeTokenError(err, 'ERR_UNAVAILABLE'))
  assert.equal(refreshes.length, 2, 'the forced refresh was sent')
})

test('issue 17: a token inside the renewal margin but still valid is used for uploads while the IdP is down', async () => {
  // Four minutes left of a one-hour token: inside the 5-minute margin.
  const { tokens, refreshes } = await deviceWithIdpDown('in-margin', 240)
  const got = await tokens.getToken(false)
  assert.equal(got.accessToken, 'at-0')
  assert.equal(refreshes.length, 1, 'no refresh from the uploader')
})
