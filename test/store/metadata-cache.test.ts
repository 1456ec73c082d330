import assert from 'node:assert/strict'
import { createSecretKey, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { deriveMetadataKey } from '../../src/store/envelope.js'
import { fileMetadataCache, METADATA_FILE, storeMetadataCache } from '../../src/store/metadata-cache.js'
import { openTokenStore } from '../../src/store/token-store.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-meta-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0
function freshDir(): string {
  const dir = join(root, `d${n++}`)
  mkdirSync(dir, { mode: 0o700 })
  return dir
}
const key = deriveMetadataKey(randomBytes(32))

test('metadata cache keeps values for their TTL, across instances, and survives a damaged file', async () => {
  const dir = freshDir()
  let now = 1000
  const cache = fileMetadataCache(dir, { key, now: () => now })
  assert.equal(await cache.get('k'), undefined)
  await cache.set('k', { issuer: 'https://idp.test' }, 10)
  assert.deepEqual(await fileMetadataCache(dir, { key, now: () => now }).get('k'), {
    issuer: 'https://idp.test',
  })
  now += 10_001
  assert.equal(await cache.get('k'), undefined)
  await cache.set('other', 1, 5)
  const file = JSON.parse(readFileSync(join(dir, METADATA_FILE), 'utf8'))
  assert.deepEqual(Object.keys(JSON.parse(file.data)), ['other'])
  writeFileSync(join(dir, METADATA_FILE), '{not json')
  assert.equal(await cache.get('other'), undefined)
  await cache.set('k', 2, 5)
  assert.equal(await cache.get('k'), 2)
})

test('a metadata cache rewritten by someone without the key is a miss, never trusted nor an error', async () => {
  const dir = freshDir()
  const cache = fileMetadataCache(dir, { key })
  await cache.set('disc', { token_endpoint: 'https://idp.test/token' }, 3600)
  const path = join(dir, METADATA_FILE)
  const file = JSON.parse(readFileSync(path, 'utf8'))
  const forged = file.data.replace('https://idp.test/token', 'https://attacker.test/token')
  writeFileSync(path, JSON.stringify({ data: forged, mac: file.mac }))
  assert.equal(await cache.get('disc'), undefined)
  // An older, unauthenticated format is a miss too.
  writeFileSync(
    path,
    JSON.stringify({ disc: { value: { token_endpoint: 'x' }, expiresAt: Date.now() + 1e6 } }),
  )
  assert.equal(await cache.get('disc'), undefined)
  // Another key (another store) does not accept it either.
  await cache.set('disc', { token_endpoint: 'https://idp.test/token' }, 3600)
  const other = fileMetadataCache(dir, { key: createSecretKey(randomBytes(32)) })
  assert.equal(await other.get('disc'), undefined)
  assert.deepEqual(await cache.get('disc'), { token_endpoint: 'https://idp.test/token' })
})

test('an expiry beyond now + TTL (written while the clock was ahead) is a miss', async () => {
  const dir = freshDir()
  let now = Date.parse('2030-01-01T00:00:00Z')
  const cache = fileMetadataCache(dir, { key, now: () => now })
  await cache.set('disc', { issuer: 'x' }, 3600)
  now = Date.parse('2026-11-25T00:00:00Z')
  assert.equal(await cache.get('disc'), undefined)
})

test('storeMetadataCache uses the store directory and key; another key material is a miss', async () => {
  const dir = freshDir()
  const store = await openTokenStore({ stateDir: dir, env: {} })
  await storeMetadataCache(store).set('k', 1, 60)
  assert.equal(await storeMetadataCache(store).get('k'), 1)
  assert.equal(await fileMetadataCache(dir, { key: store.metadataKey() }).get('k'), 1)
  const keyFile = join(root, `k${n++}`)
  writeFileSync(keyFile, randomBytes(32), { mode: 0o600 })
  const other = await openTokenStore({ stateDir: freshDir(), env: { EDGETOKEN_KEY_FILE: keyFile } })
  assert.equal(await fileMetadataCache(dir, { key: other.metadataKey() }).get('k'), undefined)
})
