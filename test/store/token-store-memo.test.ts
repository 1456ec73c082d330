// Issue 17 #2: the exported in-memory fast path of silent acquisition. Its speed is a benchmark
// figure (`npm run bench -- compare`, goal <= 5 µs a hit); here, that a hit touches nothing
// (no store read, no lock, no refresh) and a miss is exactly acquireTokenSilent.
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { TokenStoreMemo } from '../../src/index.js'
import type { TokenSet } from '../../src/oauth/types.js'
import { saveSignIn } from '../../src/store/cache.js'
import { openTokenStore, type TokenStore } from '../../src/store/token-store.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-store-memo-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0

const ids = { authority: 'https://idp.test/', clientId: 'client-1' }
const SCOPES = ['openid', 'offline_access', 'api:read']
const T0 = 1_800_000_000_000

function tokenSet(i: number, now: number, ttlSeconds: number): TokenSet {
  return {
    accessToken: `at-${i}`,
    tokenType: 'bearer',
    expiresAt: now + ttlSeconds * 1000,
    scopes: ['api:read'],
    refreshToken: `rt-${i}`,
  }
}

/** A signed-in file store whose reads, locks and writes are counted. */
async function countedStore(ttlSeconds: number) {
  const store = await openTokenStore({ stateDir: join(root, `s${n++}`), env: {} })
  await saveSignIn(store, {
    ...ids,
    account: { id: 'user-1', issuer: 'https://idp.test' },
    tokenSet: tokenSet(0, T0, ttlSeconds),
    requestedScopes: SCOPES,
    requestedAt: T0,
  })
  const counts = { read: 0, lock: 0 }
  const counted: TokenStore = {
    stateDir: store.stateDir,
    path: store.path,
    keySource: store.keySource,
    read: () => {
      counts.read += 1
      return store.read()
    },
    write: (doc) => store.write(doc),
    reserveWrite: () => store.reserveWrite?.() as ReturnType<NonNullable<TokenStore['reserveWrite']>>,
    withLock: (fn, o) => {
      counts.lock += 1
      return store.withLock(fn, o)
    },
    metadataKey: () => store.metadataKey(),
  }
  return { store: counted, counts }
}

function rotating(clock: () => number, ttlSeconds: number) {
  const calls: string[] = []
  const refresh = async (refreshToken: string) => {
    calls.push(refreshToken)
    return tokenSet(calls.length, clock(), ttlSeconds)
  }
  return { calls, refresh }
}

test('issue 17 #2: a hit is answered from memory: one store read for a thousand calls, no lock, no refresh', async () => {
  const { store, counts } = await countedStore(3600)
  let clock = T0 + 60_000
  const now = () => clock
  const { calls, refresh } = rotating(now, 3600)
  const tokens = new TokenStoreMemo(store, { ...ids, refresh, now })
  for (let i = 0; i < 1000; i++) {
    clock += 1000
    const got = await tokens.acquireTokenSilent({ scopes: SCOPES })
    assert.equal(got.accessToken, 'at-0')
    assert.equal(got.fromCache, true)
  }
  assert.deepEqual({ ...counts, refreshes: calls.length }, { read: 1, lock: 0, refreshes: 0 })
  assert.equal(tokens.peek({ scopes: SCOPES })?.accessToken, 'at-0')
})

test('issue 17 #2: a token inside the expiry margin is refreshed once through the store, then served from memory', async () => {
  const { store, counts } = await countedStore(3600)
  let clock = T0 + 60_000
  const now = () => clock
  const { calls, refresh } = rotating(now, 3600)
  const tokens = new TokenStoreMemo(store, { ...ids, refresh, now })
  assert.equal((await tokens.acquireTokenSilent({ scopes: SCOPES })).accessToken, 'at-0')
  // 300 s default margin: at T0 + 3400 s the 3600 s token is due.
  clock = T0 + 3_400_000
  assert.equal(tokens.peek({ scopes: SCOPES }), undefined)
  const renewed = await tokens.acquireTokenSilent({ scopes: SCOPES })
  assert.deepEqual(
    { token: renewed.accessToken, fromCache: renewed.fromCache },
    { token: 'at-1', fromCache: false },
  )
  const before = { ...counts }
  for (let i = 0; i < 100; i++)
    assert.equal((await tokens.acquireTokenSilent({ scopes: SCOPES })).accessToken, 'at-1')
  assert.deepEqual(counts, before, 'hits after the refresh read nothing')
  assert.deepEqual(calls, ['rt-0'])
  // The rotated refresh token is on disk, as after acquireTokenSilent.
  const disk = await store.read()
  assert.equal(Object.values(disk.accounts)[0]?.refreshToken, 'rt-1')
})

test('issue 17 #2: minTtlSeconds and forceRefresh bypass memory; clear() forgets it', async () => {
  const { store, counts } = await countedStore(3600)
  let clock = T0 + 60_000
  const now = () => clock++
  const { calls, refresh } = rotating(now, 3600)
  const tokens = new TokenStoreMemo(store, { ...ids, refresh, now })
  await tokens.acquireTokenSilent({ scopes: SCOPES })
  // 3540 s left: not enough for 3590.
  assert.equal((await tokens.acquireTokenSilent({ scopes: SCOPES, minTtlSeconds: 3590 })).fromCache, false)
  assert.equal((await tokens.acquireTokenSilent({ scopes: SCOPES, forceRefresh: true })).accessToken, 'at-2')
  assert.equal(calls.length, 2)
  const reads = counts.read
  tokens.clear()
  assert.equal(tokens.peek({ scopes: SCOPES }), undefined)
  assert.equal((await tokens.acquireTokenSilent({ scopes: SCOPES })).accessToken, 'at-2')
  assert.equal(counts.read, reads + 1)
})

test('issue 17 #2: not signed in is ERR_SIGNIN_REQUIRED, as from acquireTokenSilent', async () => {
  const store = await openTokenStore({ stateDir: join(root, `s${n++}`), env: {} })
  const tokens = new TokenStoreMemo(store, { ...ids, refresh: async () => tokenSet(9, T0, 60) })
  await assert.rejects(tokens.acquireTokenSilent({ scopes: SCOPES }), { code: 'ERR_SIGNIN_REQUIRED' })
})
