// Issue 17 #2: cachedTokenResult, the hot path of TokenStoreMemo, remembers the normalized scope
// set per caller's array and the account key per (authority, client id). What it returns must stay
// exactly what the rule says, whatever the caller does with its array between calls.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { cachedTokenResult } from '../../src/store/cache.js'
import { type AccessTokenEntry, accountKey, type StoreDocument } from '../../src/store/document.js'

const NOW = 1_800_000_000_000

function token(key: string, value: string): AccessTokenEntry {
  return { key, scopes: key.split(' '), token: value, expiresAt: NOW + 3_600_000, obtainedAt: NOW }
}

function doc(authority: string, clientId: string, tokens: AccessTokenEntry[]): StoreDocument {
  return {
    v: 1,
    accounts: {
      [accountKey(authority, clientId)]: {
        authority,
        clientId,
        account: { id: 'user-1', issuer: authority },
        needsSignIn: false,
        refreshToken: 'rt',
        scopes: [],
        accessTokens: tokens,
        updatedAt: NOW,
      },
    },
  }
}

test('issue 17 #2: a scopes array changed in place between two calls is answered by its new content', () => {
  const store = doc('https://idp.test', 'client-1', [
    token('api:read', 'at-read'),
    token('api:write', 'at-write'),
  ])
  const scopes = ['openid', 'api:read']
  const ask = () =>
    cachedTokenResult(store, { authority: 'https://idp.test', clientId: 'client-1', scopes, now: () => NOW })
  assert.equal(ask()?.accessToken, 'at-read')
  assert.equal(ask()?.accessToken, 'at-read')
  scopes[1] = 'api:write'
  assert.equal(ask()?.accessToken, 'at-write')
  scopes.push('api:admin')
  assert.equal(ask(), undefined, 'no cached token covers api:admin')
  scopes.length = 1
  // Only sign-in scopes: the empty key, answered by no token's granted scopes but its own key.
  assert.equal(ask(), undefined)
})

test('issue 17 #2: the result is a fresh object each call: a caller changing its scopes does not change the cache', () => {
  const store = doc('https://idp.test', 'client-1', [token('api:read', 'at-read')])
  const options = {
    authority: 'https://idp.test',
    clientId: 'client-1',
    scopes: ['api:read'],
    now: () => NOW,
  }
  const first = cachedTokenResult(store, options)
  assert.ok(first)
  first.scopes.push('api:admin')
  assert.deepEqual(cachedTokenResult(store, options)?.scopes, ['api:read'])
})

test('issue 17 #2: the remembered account keys tell apart authorities and clients, past the bound on how many are kept', () => {
  for (let i = 0; i < 300; i++) {
    const authority = `https://idp-${i % 150}.test/`
    const clientId = `client-${i % 2}`
    const store = doc(authority, clientId, [token('api:read', `at-${i % 150}-${i % 2}`)])
    const options = { authority, clientId, scopes: ['api:read'], now: () => NOW }
    assert.equal(cachedTokenResult(store, options)?.accessToken, `at-${i % 150}-${i % 2}`)
    // The same authority with a trailing slash more or less is the same account.
    assert.equal(
      cachedTokenResult(store, { ...options, authority: authority.slice(0, -1) })?.accessToken,
      `at-${i % 150}-${i % 2}`,
    )
    assert.equal(cachedTokenResult(store, { ...options, clientId: 'other' }), undefined)
  }
})
