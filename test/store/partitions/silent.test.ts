/**
 * The silent-acquisition engine over a TokenCache (issue 18), with an injected refresh, clock and
 * sleep: store/cache.ts's freshness rules, one refresh per partition in this process, the
 * cross-instance lease (waits 25 ms doubling to 500 ms, then the lapse), invalid_grant, stale
 * reads, and no partition brought back after removeAccount.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { EdgeTokenError, OAuthServerError } from '../../../src/errors.js'
import type { TokenSet } from '../../../src/oauth/types.js'
import { MemoryTokenCache } from '../../../src/store/partitions/memory.js'
import { DEFAULT_REFRESH_TOKEN_LIFETIME_SECONDS } from '../../../src/store/partitions/partition.js'
import {
  type AccountRefresh,
  TokenCacheEngine,
  type TokenCacheEngineOptions,
} from '../../../src/store/partitions/silent.js'
import {
  type CachePartition,
  type PutOptions,
  partitionKey,
  type TokenCache,
  type VersionedPartition,
} from '../../../src/store/partitions/token-cache.js'

const T0 = 1_900_000_000_000
const ALICE = { id: 'alice', issuer: 'https://idp.test', username: 'alice@example.com' }
const BOB = { id: 'bob', issuer: 'https://idp.test' }

class Clock {
  now = T0
  readonly read = () => this.now
}

function tokens(n: number, now: number, extra: Partial<TokenSet> = {}): TokenSet {
  return {
    accessToken: `at-${n}`,
    tokenType: 'bearer',
    expiresAt: now + 3600_000,
    scopes: ['api'],
    refreshToken: `rt-${n}`,
    ...extra,
  }
}

/** A refresh that counts calls and answers rotated tokens, optionally held until released. */
function refresher(clock: Clock) {
  const calls: string[] = []
  let n = 100
  let hold: Promise<void> | undefined
  let release = () => {}
  let failWith: unknown
  const refresh: AccountRefresh = async (refreshToken) => {
    calls.push(refreshToken)
    if (hold) await hold
    if (failWith) throw failWith
    n += 1
    return tokens(n, clock.now)
  }
  return {
    refresh,
    calls,
    hold() {
      hold = new Promise((resolve) => {
        release = () => {
          hold = undefined
          resolve()
        }
      })
    },
    release: () => release(),
    fail(err: unknown) {
      failWith = err
    },
  }
}

function engine(cache: TokenCache, clock: Clock, extra: Partial<TokenCacheEngineOptions> = {}) {
  return new TokenCacheEngine({
    cache,
    authority: 'https://idp.test',
    clientId: 'web',
    now: clock.read,
    sleep: async () => {},
    ...extra,
  })
}

const invalidGrant = () => new OAuthServerError('ERR_SIGNIN_REQUIRED', 'invalid_grant', { status: 400 })

describe('TokenCacheEngine: freshness (the rules of store/cache.ts)', () => {
  test('issue 18: a hit needs more than the margin (capped at half the lifetime) and minTtlSeconds left; refresh_in moves the refresh earlier', async () => {
    const clock = new Clock()
    const r = refresher(clock)
    const e = engine(new MemoryTokenCache({ now: clock.read }), clock)
    // A 60-second token: the 300 s margin is capped at 30 s.
    await e.saveSignIn(ALICE, tokens(1, T0, { expiresAt: T0 + 60_000 }), ['api'], T0)
    await e.saveSignIn(BOB, tokens(2, T0, { expiresAt: T0 + 60_000 }), ['api'], T0)
    clock.now = T0 + 29_000
    const hit = await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    assert.equal(hit.accessToken, 'at-1')
    assert.equal(hit.fromCache, true)
    assert.equal(hit.account.username, 'alice@example.com')
    assert.equal(r.calls.length, 0)
    const longer = await e.acquireTokenSilent(
      { account: 'alice', scopes: ['api'], minTtlSeconds: 40 },
      r.refresh,
    )
    assert.equal(longer.fromCache, false, '31 s left is less than minTtlSeconds 40')
    assert.equal(r.calls.length, 1)
    clock.now = T0 + 31_000
    const due = await e.acquireTokenSilent({ account: 'bob', scopes: ['api'] }, r.refresh)
    assert.equal(due.fromCache, false, '29 s left is within the capped margin')
    assert.equal(r.calls.length, 2)
    // refresh_in: due after 1800 s although the token lives an hour.
    await e.saveSignIn(BOB, tokens(2, T0, { refreshInSeconds: 1800 }), ['api'], clock.now)
    clock.now += 1_799_000
    assert.equal((await e.acquireTokenSilent({ account: 'bob', scopes: ['api'] }, r.refresh)).fromCache, true)
    clock.now += 2_000
    assert.equal(
      (await e.acquireTokenSilent({ account: 'bob', scopes: ['api'] }, r.refresh)).fromCache,
      false,
    )
    assert.equal(r.calls.length, 3)
  })

  test('issue 18: a refresh that only refresh_in asked for and that fails keeps serving the still-good token', async () => {
    const clock = new Clock()
    const r = refresher(clock)
    const e = engine(new MemoryTokenCache({ now: clock.read }), clock)
    await e.saveSignIn(ALICE, tokens(1, T0, { refreshInSeconds: 60 }), ['api'], T0)
    clock.now += 61_000
    r.fail(new EdgeTokenError('ERR_UNAVAILABLE', 'idp down'))
    const out = await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    assert.equal(out.accessToken, 'at-1')
    assert.equal(r.calls.length, 1)
  })
})

describe('TokenCacheEngine: a failed early refresh', () => {
  test('issue 17: a refresh inside the margin that fails serves the token while it has 30 s left; a forced one or one with less left fails', async () => {
    const clock = new Clock()
    const r = refresher(clock)
    const e = engine(new MemoryTokenCache({ now: clock.read }), clock)
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    r.fail(new EdgeTokenError('ERR_UNAVAILABLE', 'idp down'))
    // Four minutes left of an hour: inside the 5-minute margin.
    clock.now = T0 + 3_360_000
    const kept = await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    assert.equal(kept.accessToken, 'at-1')
    await assert.rejects(
      e.acquireTokenSilent({ account: ALICE, scopes: ['api'], forceRefresh: true }, r.refresh),
      /idp down/,
    )
    clock.now = T0 + 3_580_000
    await assert.rejects(e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh), /idp down/)
    assert.equal(r.calls.length, 3)
  })
})

describe('TokenCacheEngine: one refresh at a time', () => {
  test('issue 18: 50 concurrent calls for an expired token make one refresh; 50 forced ones too', async () => {
    const clock = new Clock()
    const r = refresher(clock)
    const e = engine(new MemoryTokenCache({ now: clock.read }), clock)
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 3600_000
    const results = await Promise.all(
      Array.from({ length: 50 }, () => e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)),
    )
    assert.equal(r.calls.length, 1)
    assert.deepEqual(new Set(results.map((x) => x.accessToken)), new Set(['at-101']))
    clock.now += 1
    const forced = await Promise.all(
      Array.from({ length: 50 }, () =>
        e.acquireTokenSilent({ account: ALICE, scopes: ['api'], forceRefresh: true }, r.refresh),
      ),
    )
    assert.equal(r.calls.length, 2, 'a refresh started after these calls counts for all of them')
    assert.deepEqual(r.calls, ['rt-1', 'rt-101'], 'the rotated refresh token was used')
    assert.deepEqual(new Set(forced.map((x) => x.accessToken)), new Set(['at-102']))
  })

  test('issue 18: callers waiting on a refresh that fails share its error (no second request)', async () => {
    const clock = new Clock()
    const r = refresher(clock)
    const e = engine(new MemoryTokenCache({ now: clock.read }), clock)
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 3600_000
    r.fail(new EdgeTokenError('ERR_UNAVAILABLE', 'idp down'))
    const outcomes = await Promise.allSettled(
      Array.from({ length: 10 }, () => e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)),
    )
    assert.ok(
      outcomes.every(
        (o) => o.status === 'rejected' && (o.reason as EdgeTokenError).code === 'ERR_UNAVAILABLE',
      ),
    )
    assert.equal(r.calls.length, 1)
    // The lease was given back: the next call refreshes at once.
    r.fail(undefined)
    assert.equal(
      (await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)).accessToken,
      'at-101',
    )
  })
})

describe('TokenCacheEngine: the lease between instances sharing a cache (RFC 9700 §4.14.2)', () => {
  test('issue 18: while another instance refreshes, this one polls (25 ms doubling) and takes its token: one refresh in all', async () => {
    const clock = new Clock()
    const cache = new MemoryTokenCache({ now: clock.read })
    const r = refresher(clock)
    const waits: number[] = []
    const a = engine(cache, clock)
    const b = engine(cache, clock, {
      sleep: async (ms) => {
        waits.push(ms)
        clock.now += ms
        if (waits.length === 3) r.release()
        await new Promise((resolve) => setImmediate(resolve))
      },
    })
    await a.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 3600_000
    r.hold()
    const first = a.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    // Let a take the lease and send its refresh.
    while (r.calls.length === 0) await new Promise((resolve) => setImmediate(resolve))
    const second = await b.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    assert.equal((await first).accessToken, 'at-101')
    assert.equal(second.accessToken, 'at-101')
    assert.equal(second.fromCache, true)
    assert.equal(r.calls.length, 1, 'the rotated refresh token was sent once')
    assert.deepEqual(waits.slice(0, 3), [25, 50, 100])
  })

  test('issue 18: a lease that lapses (its holder died) is taken over after 2 x timeoutMs; waits never exceed 500 ms', async () => {
    const clock = new Clock()
    const cache = new MemoryTokenCache({ now: clock.read })
    const r = refresher(clock)
    const waits: number[] = []
    const e = engine(cache, clock, {
      timeoutMs: 1000,
      sleep: async (ms) => {
        waits.push(ms)
        clock.now += ms
      },
    })
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 3600_000
    const key = partitionKey(e.app, 'account', 'alice')
    const read = await cache.get(key)
    assert.ok(read)
    await cache.put(key, { ...read.value, lease: { owner: 'dead-instance', until: clock.now + 2000 } })
    const out = await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    assert.equal(out.accessToken, 'at-101')
    assert.equal(r.calls.length, 1)
    assert.deepEqual(waits, [25, 50, 100, 200, 400, 500, 500, 500])
    assert.equal((await cache.get(key))?.value.lease, undefined, 'the lease is gone with the new tokens')
  })

  test('issue 18: a lease claim that loses the compare-and-set looks again instead of refreshing', async () => {
    const clock = new Clock()
    const inner = new MemoryTokenCache({ now: clock.read })
    const r = refresher(clock)
    let sneak = true
    // Another instance writes between this one's read and its lease put.
    const cache: TokenCache = {
      get: (key) => inner.get(key),
      list: (prefix) => inner.list(prefix),
      delete: (key) => inner.delete(key),
      async put(key, value, options) {
        if (sneak && value.lease !== undefined) {
          sneak = false
          const current = await inner.get(key)
          assert.ok(current)
          await inner.put(key, { ...current.value, lease: { owner: 'other', until: clock.now + 20_000 } })
        }
        return inner.put(key, value, options)
      },
    }
    const e = engine(cache, clock, {
      sleep: async (ms) => {
        clock.now += 20_000 + ms
      },
    })
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 3600_000
    await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    assert.equal(r.calls.length, 1)
  })
})

describe('TokenCacheEngine: sign-in required, stale reads, removal', () => {
  test('issue 18: invalid_grant marks the partition needsSignIn, drops the refresh token and keeps the account; no partition: ERR_SIGNIN_REQUIRED', async () => {
    const clock = new Clock()
    const cache = new MemoryTokenCache({ now: clock.read })
    const r = refresher(clock)
    const e = engine(cache, clock)
    await assert.rejects(e.acquireTokenSilent({ account: 'nobody', scopes: ['api'] }, r.refresh), {
      code: 'ERR_SIGNIN_REQUIRED',
      message: /no cached sign-in for this account/,
    })
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 1
    r.fail(invalidGrant())
    await assert.rejects(
      e.acquireTokenSilent({ account: ALICE, scopes: ['api'], forceRefresh: true }, r.refresh),
      {
        code: 'ERR_SIGNIN_REQUIRED',
      },
    )
    const stored = await cache.get(partitionKey(e.app, 'account', 'alice'))
    assert.equal(stored?.value.needsSignIn, true)
    assert.equal(stored?.value.refreshToken, undefined)
    assert.equal(stored?.value.lease, undefined)
    assert.deepEqual(await e.getAccounts(), [
      { id: 'alice', issuer: 'https://idp.test', username: 'alice@example.com' },
    ])
    await assert.rejects(
      e.acquireTokenSilent({ account: ALICE, scopes: ['api'], forceRefresh: true }, r.refresh),
      {
        code: 'ERR_SIGNIN_REQUIRED',
        message: /sign-in required/,
      },
    )
    assert.equal(r.calls.length, 1, 'a dead refresh token is not sent again')
  })

  test('issue 18: a stale read (backend down) serves a still-good token and otherwise throws its error, never refreshing', async () => {
    const clock = new Clock()
    const inner = new MemoryTokenCache({ now: clock.read })
    const down = new EdgeTokenError(
      'ERR_CACHE_UNAVAILABLE',
      'token cache redis://127.0.0.1:1 cannot be reached',
    )
    let stale = false
    const cache: TokenCache = {
      async get(key) {
        const read = await inner.get(key)
        return read && stale ? ({ ...read, stale: down } satisfies VersionedPartition) : read
      },
      put: (key: string, value: CachePartition, options?: PutOptions) => inner.put(key, value, options),
      delete: (key) => inner.delete(key),
      list: (prefix) => inner.list(prefix),
    }
    const r = refresher(clock)
    const e = engine(cache, clock)
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 1
    stale = true
    assert.equal(
      (await e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)).accessToken,
      'at-1',
    )
    await assert.rejects(
      e.acquireTokenSilent({ account: ALICE, scopes: ['api'], forceRefresh: true }, r.refresh),
      down,
    )
    clock.now += 3600_000
    await assert.rejects(e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh), down)
    assert.equal(r.calls.length, 0)
  })

  test('issue 18: an account removed during its refresh gets the token but is not brought back', async () => {
    const clock = new Clock()
    const cache = new MemoryTokenCache({ now: clock.read })
    const r = refresher(clock)
    const e = engine(cache, clock)
    await e.saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    clock.now += 3600_000
    r.hold()
    const pending = e.acquireTokenSilent({ account: ALICE, scopes: ['api'] }, r.refresh)
    while (r.calls.length === 0) await new Promise((resolve) => setImmediate(resolve))
    await e.removeAccount(ALICE)
    r.release()
    assert.equal((await pending).accessToken, 'at-101')
    assert.equal(await e.getAccount('alice'), undefined)
    assert.deepEqual(await cache.list(`${e.app}/account/`), [])
  })

  test('issue 18: the partition lives as long as the refresh token: refresh_token_expires_in, else refreshTokenLifetimeSeconds (default 90 days)', async () => {
    const clock = new Clock()
    const inner = new MemoryTokenCache({ now: clock.read })
    const expiries: Array<number | undefined> = []
    const cache: TokenCache = {
      get: (key) => inner.get(key),
      list: (prefix) => inner.list(prefix),
      delete: (key) => inner.delete(key),
      put(key, value, options) {
        expiries.push(options?.expiresAt)
        return inner.put(key, value, options)
      },
    }
    await engine(cache, clock).saveSignIn(ALICE, tokens(1, T0), ['api'], T0)
    await engine(cache, clock, { refreshTokenLifetimeSeconds: 600 }).saveSignIn(
      ALICE,
      tokens(1, T0),
      ['api'],
      T0,
    )
    await engine(cache, clock).saveSignIn(
      ALICE,
      tokens(1, T0, { refreshTokenExpiresInSeconds: 86_400 }),
      ['api'],
      T0,
    )
    assert.deepEqual(expiries, [
      T0 + DEFAULT_REFRESH_TOKEN_LIFETIME_SECONDS * 1000,
      T0 + 3600_000, // the access token outlives a 600 s refresh token
      T0 + 86_400_000,
    ])
    assert.equal(DEFAULT_REFRESH_TOKEN_LIFETIME_SECONDS, 90 * 86_400)
  })

  test('issue 18: app and on-behalf-of tokens: one request for concurrent callers, cached per partition, failures not cached', async () => {
    const clock = new Clock()
    const cache = new MemoryTokenCache({ now: clock.read })
    const e = engine(cache, clock)
    let n = 0
    const fetch = async () => {
      n += 1
      if (n === 2) throw new EdgeTokenError('ERR_UNAVAILABLE', 'down')
      return tokens(n, clock.now)
    }
    const first = await Promise.all(
      Array.from({ length: 20 }, () => e.acquireOwnToken('obo', 'user-a-token', ['api'], false, fetch)),
    )
    assert.equal(n, 1)
    assert.ok(first.every((x) => x === first[0]))
    await assert.rejects(e.acquireOwnToken('obo', 'user-b-token', ['api'], false, fetch), {
      code: 'ERR_UNAVAILABLE',
    })
    assert.equal((await e.acquireOwnToken('obo', 'user-b-token', ['api'], false, fetch)).accessToken, 'at-3')
    assert.equal((await e.acquireOwnToken('obo', 'user-a-token', ['api'], false, fetch)).accessToken, 'at-1')
    const keys = await cache.list(`${e.app}/obo/`)
    assert.equal(keys.length, 2)
    assert.ok(
      keys.every((k) => !k.includes('user-')),
      'the incoming token is hashed, never in a key',
    )
    await e.clearAppTokens()
    assert.deepEqual(await cache.list(`${e.app}/obo/`), [])
  })

  test('issue 18: app tokens do not depend on the cache: with the backend down, the token is fetched and returned', async () => {
    const clock = new Clock()
    const down = () =>
      Promise.reject(new EdgeTokenError('ERR_CACHE_UNAVAILABLE', 'token cache cannot be reached'))
    const cache: TokenCache = { get: down, put: down, delete: down, list: down }
    const e = engine(cache, clock)
    const out = await e.acquireOwnToken('app', '', ['api'], false, async () => tokens(7, clock.now))
    assert.equal(out.accessToken, 'at-7')
  })
})
