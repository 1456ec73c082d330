import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fileMetadataCache, METADATA_FILE } from '../../src/store/metadata-cache.js'

const dir = mkdtempSync(join(tmpdir(), 'edgetoken-meta-'))
after(() => rmSync(dir, { recursive: true, force: true }))

test('metadata cache keeps values for their TTL, across instances, and survives a damaged file', async () => {
  let now = 1000
  const cache = fileMetadataCache(dir, () => now)
  assert.equal(await cache.get('k'), undefined)
  await cache.set('k', { issuer: 'https://idp.test' }, 10)
  assert.deepEqual(await fileMetadataCache(dir, () => now).get('k'), { issuer: 'https://idp.test' })
  now += 10_001
  assert.equal(await cache.get('k'), undefined)
  await cache.set('other', 1, 5)
  assert.deepEqual(Object.keys(JSON.parse(readFileSync(join(dir, METADATA_FILE), 'utf8'))), ['other'])
  writeFileSync(join(dir, METADATA_FILE), '{not json')
  assert.equal(await cache.get('other'), undefined)
  await cache.set('k', 2, 5)
  assert.equal(await cache.get('k'), 2)
})
