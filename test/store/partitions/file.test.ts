/**
 * FileTokenCache (issue 18): partitions in the encrypted store file, written under its lock with
 * compare-and-set (between two opened stores of one directory, as between two processes), next
 * to the CLI's account, which they leave alone.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { StoreError } from '../../../src/errors.js'
import { readAccountStatus, saveSignIn } from '../../../src/store/cache.js'
import { FileTokenCache } from '../../../src/store/partitions/file.js'
import type { CachePartition } from '../../../src/store/partitions/token-cache.js'
import { openTokenStore } from '../../../src/store/token-store.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-file-cache-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0

async function twoStores() {
  const stateDir = join(root, `s${n++}`)
  const a = await openTokenStore({ stateDir, env: {} })
  const b = await openTokenStore({ stateDir, env: {} })
  return { a, b }
}

const partition = (updatedAt: number, refreshToken = 'rt'): CachePartition => ({
  v: 1,
  account: { id: 'alice', issuer: 'https://idp.test' },
  refreshToken,
  accessTokens: [{ key: 'x', scopes: ['x'], token: 'at', expiresAt: 9e12, obtainedAt: 1 }],
  updatedAt,
})

describe('FileTokenCache', () => {
  test('issue 18: compare-and-set across two opened stores of one file: of two puts with the same version, exactly one wins', async () => {
    const { a, b } = await twoStores()
    const one = new FileTokenCache(a)
    const two = new FileTokenCache(b)
    const v1 = await one.put('app/account/k', partition(1))
    assert.ok(v1)
    const read = await two.get('app/account/k')
    assert.equal(read?.version, v1)
    assert.deepEqual(read?.value, partition(1))
    const outcomes = await Promise.all([
      one.put('app/account/k', partition(2, 'rt-one'), { ifVersion: v1 }),
      two.put('app/account/k', partition(3, 'rt-two'), { ifVersion: v1 }),
    ])
    assert.equal(outcomes.filter((v) => v !== undefined).length, 1, 'one write, one conflict')
    const winner = outcomes[0] === undefined ? 'rt-two' : 'rt-one'
    assert.equal((await one.get('app/account/k'))?.value.refreshToken, winner)
    assert.equal(await two.put('app/account/k', partition(4), { ifVersion: null }), undefined)
  })

  test('issue 18: partitions live beside the CLI account and survive its writes; expired ones read as absent', async () => {
    let now = 1_000_000
    const { a } = await twoStores()
    const cache = new FileTokenCache(a, { now: () => now })
    await cache.put('app/account/k', partition(1), { expiresAt: 2_000_000 })
    await cache.put('app/obo/o', partition(1))
    await saveSignIn(a, {
      authority: 'https://idp.test',
      clientId: 'device',
      account: { id: 'device-user', issuer: 'https://idp.test' },
      tokenSet: { accessToken: 'cli-at', tokenType: 'bearer', expiresAt: 9e12, scopes: ['x'] },
      requestedScopes: ['x'],
    })
    assert.ok(await cache.get('app/account/k'), 'kept through the CLI sign-in')
    assert.equal((await readAccountStatus(a)).account?.id, 'device-user', 'the CLI account untouched')
    assert.deepEqual(await cache.list('app/account/'), ['app/account/k'])
    now = 2_000_000
    assert.equal(await cache.get('app/account/k'), undefined)
    assert.deepEqual(await cache.list('app/account/'), [])
    await cache.delete('app/obo/o')
    assert.equal(await cache.get('app/obo/o'), undefined)
    assert.equal((await a.read()).partitions?.['app/account/k'], undefined, 'dropped at the last write')
  })

  test('issue 18: a malformed partition in an authentic file fails closed (ERR_STORE_UNREADABLE), naming no content', async () => {
    const { a } = await twoStores()
    await a.withLock(async () => {
      const doc = await a.read()
      doc.partitions = { 'app/account/k': { version: 'v', value: { v: 1, refreshToken: 'secret-rt' } } }
      await a.write(doc)
    })
    await assert.rejects(
      new FileTokenCache(a).get('app/account/k'),
      (err: unknown) =>
        err instanceof StoreError &&
        err.code === 'ERR_STORE_UNREADABLE' &&
        !err.message.includes('secret-rt'),
    )
  })
})
