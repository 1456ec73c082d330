/**
 * A file-backed {@link MetadataCache} in the state directory (`metadata.json`), so a `token` refresh
 * does not repeat OIDC discovery on every run. Holds only public authorization-server metadata, so
 * it is plain JSON; a damaged file is a cache miss, never an error.
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileAtomic } from '../lib/durable-file.js'
import { isFiniteNumber, isObject, parseJson } from '../lib/validate.js'
import type { MetadataCache } from '../oauth/types.js'

/** The cache file's name in the state directory. */
export const METADATA_FILE = 'metadata.json'

async function readAll(path: string): Promise<Record<string, { value: unknown; expiresAt: number }>> {
  const parsed = parseJson(await readFile(path, 'utf8').catch(() => ''))
  const out: Record<string, { value: unknown; expiresAt: number }> = {}
  if (!isObject(parsed)) return out
  for (const [key, item] of Object.entries(parsed)) {
    if (isObject(item) && isFiniteNumber(item.expiresAt))
      out[key] = { value: item.value, expiresAt: item.expiresAt }
  }
  return out
}

/**
 * Creates the metadata cache of a state directory.
 *
 * @param stateDir - the state directory (must exist).
 * @param now - the clock, epoch ms (tests).
 * @returns a cache whose `set` never throws.
 */
export function fileMetadataCache(stateDir: string, now: () => number = Date.now): MetadataCache {
  const path = join(stateDir, METADATA_FILE)
  return {
    async get(key) {
      const item = (await readAll(path))[key]
      return item && item.expiresAt > now() ? item.value : undefined
    },
    async set(key, value, ttlSeconds) {
      try {
        const all = await readAll(path)
        const t = now()
        for (const [k, item] of Object.entries(all)) if (item.expiresAt <= t) delete all[k]
        all[key] = { value, expiresAt: t + Math.max(0, ttlSeconds) * 1000 }
        // Atomic so a reader never sees half a file; durability does not matter for a cache.
        await writeFileAtomic(path, JSON.stringify(all), { durable: false })
      } catch {
        // A cache that cannot be written only costs a discovery request next time.
      }
    },
  }
}
