/**
 * MemoryTokenCache (issue 18): a bounded LRU, partitions past `expiresAt` read as absent,
 * compare-and-set, and a hit that hands out the stored object (no copy).
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { MemoryTokenCache } from '../../../src/store/partitions/memory.js'
import type { CachePartition } from '../../../src/store/partitions/token-cache.js'

const partition = (updatedAt: number): CachePartition => ({ v: 1, accessTokens: [], updatedAt })

describe('MemoryTokenCache', () => {
  test('issue 18: bounded LRU: past maxPartitions the least recently used partition goes (a read counts as use)', async () => {
    const cache = new MemoryTokenCache({ maxPartitions: 2 })
    await cache.put('app/account/a', partition(1))
    await cache.put('app/account/b', partition(2))
    assert.ok(await cache.get('app/account/a'), 'a read: a is now the most recent')
    await cache.put('app/account/c', partition(3))
    assert.equal(cache.size, 2)
    assert.equal(await cache.get('app/account/b'), undefined, 'b was the least recently used')
    assert.equal((await cache.get('app/account/a'))?.value.updatedAt, 1)
    assert.equal((await cache.get('app/account/c'))?.value.updatedAt, 3)
  })

  test('issue 18: expiresAt is honoured: an expired partition reads as absent and is not listed', async () => {
    let now = 1_000
    const cache = new MemoryTokenCache({ now: () => now })
    await cache.put('app/account/a', partition(1), { expiresAt: 2_000 })
    await cache.put('app/account/b', partition(2))
    now = 1_999
    assert.ok(await cache.get('app/account/a'))
    now = 2_000
    assert.equal(await cache.get('app/account/a'), undefined)
    assert.deepEqual(await cache.list('app/account/'), ['app/account/b'])
    // Compare-and-set treats it as absent too.
    assert.ok(await cache.put('app/account/a', partition(3), { ifVersion: null }))
  })

  test('issue 18: a hit hands out the stored partition itself, frozen (no copy on the hit path)', async () => {
    const cache = new MemoryTokenCache()
    const value = partition(1)
    await cache.put('app/app/x', value)
    const first = await cache.get('app/app/x')
    const second = await cache.get('app/app/x')
    assert.equal(first, second)
    assert.equal(first?.value, value)
    assert.ok(Object.isFrozen(value) && Object.isFrozen(value.accessTokens))
  })

  test('issue 18: compare-and-set: a stale version or ifVersion null on an existing partition writes nothing; versions never repeat', async () => {
    const cache = new MemoryTokenCache()
    const v1 = await cache.put('app/account/a', partition(1), { ifVersion: null })
    assert.ok(v1)
    assert.equal(await cache.put('app/account/a', partition(2), { ifVersion: null }), undefined)
    const v2 = await cache.put('app/account/a', partition(3), { ifVersion: v1 })
    assert.ok(v2 && v2 !== v1)
    assert.equal(await cache.put('app/account/a', partition(4), { ifVersion: v1 }), undefined, 'v1 is stale')
    assert.equal((await cache.get('app/account/a'))?.value.updatedAt, 3)
    // Removed and signed in again: the old version must not match the new partition (no ABA).
    await cache.delete('app/account/a')
    const v3 = await cache.put('app/account/a', partition(5))
    assert.ok(v3 !== v1 && v3 !== v2)
    assert.equal(await cache.put('app/account/a', partition(6), { ifVersion: v2 }), undefined)
  })

  test('issue 18: list returns the keys directly under a prefix', async () => {
    const cache = new MemoryTokenCache()
    await cache.put('app/account/a', partition(1))
    await cache.put('app/obo/b', partition(1))
    await cache.put('other/account/c', partition(1))
    assert.deepEqual(await cache.list('app/account/'), ['app/account/a'])
    assert.throws(() => new MemoryTokenCache({ maxPartitions: 0 }), TypeError)
  })
})
