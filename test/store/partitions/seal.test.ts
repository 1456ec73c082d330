// Issue 18: the encryption of token cache partitions kept outside the process (Redis values).
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, test } from 'node:test'
import { ConfigError, StoreError } from '../../../src/errors.js'
import { createPartitionSealer, readAppKey } from '../../../src/store/partitions/seal.js'
import type { CachePartition } from '../../../src/store/partitions/token-cache.js'

const REFRESH = `rt-${randomBytes(12).toString('hex')}`
const ACCESS = `at-${randomBytes(12).toString('hex')}`
const USER = 'alice@example.test'

const partition: CachePartition = {
  v: 1,
  account: { id: 'uid.utid', issuer: 'https://idp.test', username: USER },
  refreshToken: REFRESH,
  accessTokens: [{ key: 'api.read', scopes: ['api.read'], token: ACCESS, expiresAt: 2e12, obtainedAt: 1e12 }],
  updatedAt: 1e12,
}
const NS = 'edgetoken:'
const KEY = 'appapp/account/alice'

function assertUnreadable(fn: () => unknown): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof StoreError)
    assert.equal(err.code, 'ERR_STORE_UNREADABLE')
    assert.doesNotMatch(err.message, /\n/)
    for (const secret of [REFRESH, ACCESS, USER]) assert.ok(!err.message.includes(secret))
    return true
  })
}

describe('issue 18: partition sealing (AES-256-GCM, HKDF subkey, AAD = version + namespace + key)', () => {
  test('a sealed partition opens to the same value, and holds no plaintext', () => {
    const sealer = createPartitionSealer(randomBytes(32))
    const text = sealer.seal(NS, KEY, partition)
    assert.match(text, /^s1\.[A-Za-z0-9_-]+$/)
    for (const secret of [REFRESH, ACCESS, USER, 'uid.utid']) assert.ok(!text.includes(secret))
    const back = sealer.open(NS, KEY, text)
    assert.deepEqual(back, partition)
    assert.ok(Object.isFrozen(back))
  })

  test('every seal uses a fresh IV (two seals of one value differ)', () => {
    const sealer = createPartitionSealer(randomBytes(32))
    const a = sealer.seal(NS, KEY, partition)
    const b = sealer.seal(NS, KEY, partition)
    assert.notEqual(a.slice(3, 19), b.slice(3, 19))
  })

  test('a tampered value fails closed (any byte flipped, truncated, no prefix)', () => {
    const sealer = createPartitionSealer(randomBytes(32))
    const text = sealer.seal(NS, KEY, partition)
    const blob = Buffer.from(text.slice(3), 'base64url')
    for (const at of [0, 12, blob.length >> 1, blob.length - 1]) {
      const bad = Buffer.from(blob)
      bad[at] = (bad[at] ?? 0) ^ 1
      assertUnreadable(() => sealer.open(NS, KEY, `s1.${bad.toString('base64url')}`))
    }
    assertUnreadable(() => sealer.open(NS, KEY, text.slice(0, 20)))
    assertUnreadable(() => sealer.open(NS, KEY, text.slice(3)))
  })

  test('a value moved to another partition key or namespace does not open (AAD)', () => {
    const sealer = createPartitionSealer(randomBytes(32))
    const text = sealer.seal(NS, KEY, partition)
    assertUnreadable(() => sealer.open(NS, 'appapp/account/mallory', text))
    assertUnreadable(() => sealer.open('other:', KEY, text))
    // The parts are kept apart: moving a character between namespace and key changes the AAD.
    assertUnreadable(() => sealer.open('edgetoken', `:${KEY}`, text))
  })

  test('a value sealed under another app key does not open', () => {
    const text = createPartitionSealer(randomBytes(32)).seal(NS, KEY, partition)
    assertUnreadable(() => createPartitionSealer(randomBytes(32)).open(NS, KEY, text))
  })

  test('a value that decrypts but is not a partition is rejected (isCachePartition)', () => {
    const sealer = createPartitionSealer(randomBytes(32))
    const text = sealer.seal(NS, KEY, { v: 2, accessTokens: [] } as unknown as CachePartition)
    assertUnreadable(() => sealer.open(NS, KEY, text))
  })

  test('the app key is 32 bytes, as bytes or base64url text; anything else is a ConfigError without the key', () => {
    const key = randomBytes(32)
    const text = key.toString('base64url')
    assert.deepEqual(readAppKey(text), key)
    assert.deepEqual(readAppKey(`${text}=`), key)
    assert.deepEqual(readAppKey(new Uint8Array(key)), key)
    // Text and bytes are the same key.
    const sealed = createPartitionSealer(key).seal(NS, KEY, partition)
    assert.deepEqual(createPartitionSealer(text).open(NS, KEY, sealed), partition)
    const short = randomBytes(31)
    for (const bad of [
      short,
      randomBytes(33),
      short.toString('base64url'),
      randomBytes(33).toString('base64url'),
      key.toString('hex'),
      `+${text.slice(1)}`,
    ]) {
      assert.throws(
        () => createPartitionSealer(bad),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError)
          assert.ok(!err.message.includes(typeof bad === 'string' ? bad : bad.toString('base64url')))
          return true
        },
      )
    }
  })
})
