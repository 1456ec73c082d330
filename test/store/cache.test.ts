import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { EdgeTokenError, OAuthServerError, UnavailableError } from '../../src/errors.js'
import type { TokenSet } from '../../src/oauth/types.js'
import {
  acquireTokenSilent,
  readAccountStatus,
  readRefreshToken,
  removeAccount,
  saveSignIn,
} from '../../src/store/cache.js'
import { openTokenStore, type TokenStore } from '../../src/store/token-store.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-cache-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0

const AUTHORITY = 'https://idp.test/'
const CLIENT = 'client-1'
const SCOPES = ['openid', 'offline_access', 'api:read']
const ids = { authority: AUTHORITY, clientId: CLIENT }
const T0 = 1_800_000_000_000

function tokenSet(i: number, now: number, ttlSeconds: number, extra: Partial<TokenSet> = {}): TokenSet {
  return {
    accessToken: `at-${i}`,
    tokenType: 'bearer',
    expiresAt: now + ttlSeconds * 1000,
    scopes: ['api:read'],
    refreshToken: `rt-${i}`,
    ...extra,
  }
}

async function signedIn(ttlSeconds = 3600, extra: Partial<TokenSet> = {}): Promise<TokenStore> {
  const store = await openTokenStore({ stateDir: join(root, `s${n++}`), env: {} })
  await saveSignIn(store, {
    ...ids,
    account: { id: 'user-1', username: 'alice', issuer: 'https://idp.test' },
    tokenSet: tokenSet(0, T0, ttlSeconds, extra),
    requestedScopes: SCOPES,
    requestedAt: T0,
  })
  return store
}

/** A refresh function that rotates: each call returns at-N / rt-N, N counting up. */
function rotating(clock: () => number, ttlSeconds = 3600, extra: Partial<TokenSet> = {}) {
  const calls: { refreshToken: string; scopes: readonly string[] }[] = []
  const refresh = async (refreshToken: string, scopes: readonly string[]) => {
    calls.push({ refreshToken, scopes })
    await new Promise((r) => setTimeout(r, 5))
    return tokenSet(calls.length, clock(), ttlSeconds, extra)
  }
  return { calls, refresh }
}

describe('silent acquisition', () => {
  test('returns a valid cached token without refreshing', async () => {
    const store = await signedIn()
    const now = () => T0 + 60_000
    const { calls, refresh } = rotating(now)
    const got = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })
    assert.deepEqual(
      { token: got.accessToken, fromCache: got.fromCache, scopes: got.scopes },
      { token: 'at-0', fromCache: true, scopes: ['api:read'] },
    )
    assert.equal(calls.length, 0)
  })

  test('refreshes within the 5-minute margin, and rotates the refresh token durably first', async () => {
    const store = await signedIn()
    const now = () => T0 + 3600_000 - 299_000
    const { calls, refresh } = rotating(now)
    const events: string[] = []
    const watched: TokenStore = {
      ...store,
      read: () => store.read(),
      withLock: (fn, o) => store.withLock(fn, o),
      write: async (doc) => {
        await store.write(doc)
        events.push(`write ${Object.values(doc.accounts)[0]?.refreshToken}`)
      },
    }
    const got = await acquireTokenSilent(watched, { ...ids, scopes: SCOPES, refresh, now })
    events.push('returned')
    assert.equal(got.accessToken, 'at-1')
    assert.equal(got.fromCache, false)
    assert.deepEqual(calls, [{ refreshToken: 'rt-0', scopes: SCOPES }])
    assert.deepEqual(events, ['write rt-1', 'returned'])
    assert.equal(await readRefreshToken(store, ids), 'rt-1')
  })

  test('the margin is at most half of a short lifetime', async () => {
    const store = await signedIn(60)
    const { calls, refresh } = rotating(() => T0)
    // 25 s left of 60: more than half of the lifetime is gone? No: 25 < 30 -> refresh.
    await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now: () => T0 + 35_000 })
    assert.equal(calls.length, 1)
    const store2 = await signedIn(60)
    const second = rotating(() => T0)
    // 40 s left of 60: still valid, although far inside 5 minutes.
    const got = await acquireTokenSilent(store2, {
      ...ids,
      scopes: SCOPES,
      refresh: second.refresh,
      now: () => T0 + 20_000,
    })
    assert.equal(second.calls.length, 0)
    assert.equal(got.accessToken, 'at-0')
  })

  test('--min-ttl-seconds forces a refresh, and warns when the IdP cannot meet it', async () => {
    const store = await signedIn(3600)
    const now = () => T0 + 1000_000
    const { calls, refresh } = rotating(now, 3600)
    const got = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now, minTtlSeconds: 3000 })
    assert.equal(calls.length, 1)
    assert.equal(got.accessToken, 'at-1')
    assert.equal(got.warning, undefined)

    const short = rotating(now, 600)
    const got2 = await acquireTokenSilent(store, {
      ...ids,
      scopes: SCOPES,
      refresh: short.refresh,
      now,
      minTtlSeconds: 7200,
    })
    assert.equal(short.calls.length, 1)
    // The freshest token is returned, with a warning naming the lifetime.
    assert.equal(got2.accessToken, 'at-1')
    assert.match(got2.warning ?? '', /valid for \d+ s, less than the 7200 s asked for/)
  })

  test('issue 13 follow-up #4: a forced refresh (--force-refresh, a claims challenge) returns the new token even when the old one lives longer', async () => {
    const store = await signedIn(3600)
    const now = () => T0 + 60_000
    // The new token is shorter-lived (an IdP that caps the lifetime of a claims-challenged token).
    const { calls, refresh } = rotating(now, 600)
    const got = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now, forceRefresh: true })
    assert.equal(calls.length, 1)
    assert.deepEqual(
      { token: got.accessToken, fromCache: got.fromCache, expiresAt: got.expiresAt },
      { token: 'at-1', fromCache: false, expiresAt: now() + 600_000 },
      'the token the refresh was forced for, not the old one the API refused',
    )
    const cached = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })
    assert.equal(cached.accessToken, 'at-1', 'and it replaced the cached one')
    assert.equal(calls.length, 1)
  })

  test('concurrent callers in one process share one refresh', async () => {
    const store = await signedIn()
    const now = () => T0 + 3600_000
    const { calls, refresh } = rotating(now)
    const results = await Promise.all(
      Array.from({ length: 10 }, () => acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })),
    )
    assert.equal(calls.length, 1)
    assert.deepEqual(new Set(results.map((r) => r.accessToken)), new Set(['at-1']))
  })

  test('concurrent forced refreshes share one that started after they were called', async () => {
    const store = await signedIn()
    let t = T0 + 1000
    const now = () => t++
    const { calls, refresh } = rotating(now)
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now, forceRefresh: true }),
      ),
    )
    assert.equal(calls.length, 1)
    assert.deepEqual(new Set(results.map((r) => r.accessToken)), new Set(['at-1']))
    // A forced refresh called after that one completed refreshes again, with the rotated token.
    await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now, forceRefresh: true })
    assert.deepEqual(
      calls.map((c) => c.refreshToken),
      ['rt-0', 'rt-1'],
    )
  })

  test('invalid_grant marks the account as needing sign-in, without deleting it', async () => {
    const store = await signedIn()
    const now = () => T0 + 3600_000
    let called = 0
    const refresh = async () => {
      called += 1
      throw new OAuthServerError('ERR_SIGNIN_REQUIRED', 'invalid_grant', { status: 400 })
    }
    await assert.rejects(
      acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now }),
      (err: unknown) => err instanceof EdgeTokenError && err.code === 'ERR_SIGNIN_REQUIRED',
    )
    const status = await readAccountStatus(store, ids)
    assert.equal(status.needsSignIn, true)
    assert.equal(status.signedIn, false)
    assert.equal(status.account?.id, 'user-1')
    assert.equal(await readRefreshToken(store, ids), undefined)
    // No second attempt with a token known to be dead.
    await assert.rejects(
      acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now }),
      (err: unknown) => err instanceof EdgeTokenError && err.code === 'ERR_SIGNIN_REQUIRED',
    )
    assert.equal(called, 1)
    // Signing in again clears the mark.
    await saveSignIn(store, {
      ...ids,
      account: { id: 'user-1', issuer: 'https://idp.test' },
      tokenSet: tokenSet(9, T0, 3600),
      requestedScopes: SCOPES,
    })
    assert.equal((await readAccountStatus(store, ids)).signedIn, true)
  })

  test('an unavailable IdP leaves the store as it was', async () => {
    const store = await signedIn()
    const now = () => T0 + 3600_000
    const refresh = async (): Promise<TokenSet> => {
      throw new UnavailableError('idp.test did not answer')
    }
    await assert.rejects(
      acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now }),
      /did not answer/,
    )
    assert.equal(await readRefreshToken(store, ids), 'rt-0')
    assert.equal((await readAccountStatus(store, ids)).signedIn, true)
  })

  test('refresh_in triggers an early refresh; if that fails the still-valid token is used', async () => {
    const store = await signedIn(3600, { refreshInSeconds: 1800 })
    const now = () => T0 + 1900_000
    const { calls, refresh } = rotating(now)
    const got = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })
    assert.equal(calls.length, 1)
    assert.equal(got.accessToken, 'at-1')

    const store2 = await signedIn(3600, { refreshInSeconds: 1800 })
    const failing = async (): Promise<TokenSet> => {
      throw new UnavailableError('down')
    }
    const kept = await acquireTokenSilent(store2, { ...ids, scopes: SCOPES, refresh: failing, now })
    assert.equal(kept.accessToken, 'at-0')
    assert.equal(kept.fromCache, true)
  })

  test('issue 17: an early refresh (inside the margin) that fails hands out the still-valid token with a warning; a forced one or a token about to expire does not', async () => {
    const failing = async (): Promise<TokenSet> => {
      throw new UnavailableError('idp.test answered 503')
    }
    // One-hour token, 4 minutes left: inside the 5-minute margin, still valid.
    const inMargin = () => T0 + 3360_000
    const kept = await acquireTokenSilent(await signedIn(), {
      ...ids,
      scopes: SCOPES,
      refresh: failing,
      now: inMargin,
    })
    assert.equal(kept.accessToken, 'at-0')
    assert.equal(kept.fromCache, true)
    assert.match(
      kept.warning ?? '',
      /early refresh failed \(idp\.test answered 503\); the cached token is still valid/,
    )
    await assert.rejects(
      acquireTokenSilent(await signedIn(), {
        ...ids,
        scopes: SCOPES,
        refresh: failing,
        now: inMargin,
        forceRefresh: true,
      }),
      /answered 503/,
    )
    // 20 s left: too little for the request it is wanted for.
    await assert.rejects(
      acquireTokenSilent(await signedIn(), {
        ...ids,
        scopes: SCOPES,
        refresh: failing,
        now: () => T0 + 3580_000,
      }),
      /answered 503/,
    )
    // Asked to last longer than it will: refused too.
    await assert.rejects(
      acquireTokenSilent(await signedIn(), {
        ...ids,
        scopes: SCOPES,
        refresh: failing,
        now: inMargin,
        minTtlSeconds: 600,
      }),
      /answered 503/,
    )
  })

  test('RFC 6749 §6: a refresh response without a new refresh token keeps the old one in use', async () => {
    const store = await signedIn()
    const now = () => T0 + 3600_000
    const refresh = async () => tokenSet(5, now(), 3600, { refreshToken: undefined })
    await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })
    assert.equal(await readRefreshToken(store, ids), 'rt-0')
  })

  test('a warning that came with the refresh response (an id_token dropped) reaches the caller', async () => {
    const store = await signedIn()
    const now = () => T0 + 3600_000
    const warning = 'the id_token of the refresh response could not be verified; it was not kept'
    const refresh = async () => tokenSet(6, now(), 3600, { warning })
    const got = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })
    assert.equal(got.accessToken, 'at-6')
    assert.equal(got.warning, warning)
    assert.equal(await readRefreshToken(store, ids), 'rt-6', 'the rotated refresh token is kept')
  })

  test('other scopes are requested and cached separately, from the same refresh token', async () => {
    const store = await signedIn()
    const now = () => T0 + 60_000
    const { calls, refresh } = rotating(now, 3600, { scopes: ['api:write'] })
    const other = await acquireTokenSilent(store, { ...ids, scopes: ['api:write'], refresh, now })
    assert.deepEqual(calls, [{ refreshToken: 'rt-0', scopes: ['api:write'] }])
    assert.equal(other.accessToken, 'at-1')
    const again = await acquireTokenSilent(store, { ...ids, scopes: ['api:write'], refresh, now })
    assert.equal(again.accessToken, 'at-1')
    const original = await acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh, now })
    assert.equal(original.accessToken, 'at-0')
    assert.equal(calls.length, 1)
  })

  test('no account means sign-in required; logout removes everything', async () => {
    const store = await openTokenStore({ stateDir: join(root, `s${n++}`), env: {} })
    const { calls, refresh } = rotating(() => T0)
    await assert.rejects(
      acquireTokenSilent(store, { ...ids, scopes: SCOPES, refresh }),
      (err: unknown) =>
        err instanceof EdgeTokenError &&
        err.code === 'ERR_SIGNIN_REQUIRED' &&
        /not signed in/.test(err.message),
    )
    assert.equal(calls.length, 0)
    const signed = await signedIn()
    assert.equal(await removeAccount(signed, ids), true)
    assert.equal(await removeAccount(signed, ids), false)
    assert.deepEqual(await readAccountStatus(signed, ids), {
      account: null,
      signedIn: false,
      needsSignIn: false,
      accessTokenExpiresAt: null,
    })
  })

  test('the authority is matched with or without a trailing slash', async () => {
    const store = await signedIn()
    const got = await readAccountStatus(store, { authority: 'https://idp.test', clientId: CLIENT })
    assert.equal(got.account?.username, 'alice')
    assert.equal(got.accessTokenExpiresAt, T0 + 3600_000)
  })
})
