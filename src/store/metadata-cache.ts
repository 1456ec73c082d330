/**
 * A file-backed {@link MetadataCache} in the state directory (`metadata.json`), so a `token` refresh
 * does not repeat OIDC discovery on every run. Its content is public authorization-server metadata,
 * but it decides where refresh tokens are sent (`token_endpoint`), so it is authenticated: an
 * HMAC-SHA256 under a key derived (HKDF, "edgetoken metadata cache v1") from the token store's key
 * material. A damaged, foreign or forged file is a cache miss (discovery again), never an error.
 */
import { createHmac, type KeyObject, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileAtomic } from '../lib/fs/durable-file.js'
import { isFiniteNumber, isObject, parseJson } from '../lib/validate.js'
import type { MetadataCache } from '../oauth/types.js'
import type { TokenStore } from './token-store.js'

/** The cache file's name in the state directory. */
export const METADATA_FILE = 'metadata.json'

/** Options of {@link fileMetadataCache}. */
export interface FileMetadataCacheOptions {
  /** The HMAC key: `TokenStore.metadataKey()`, derived from the store's key material. */
  key: KeyObject
  /** The clock, epoch ms (tests). Default `Date.now`. */
  now?: (() => number) | undefined
}

interface Entry {
  value: unknown
  expiresAt: number
  ttlMs: number
}

function mac(key: KeyObject, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest()
}

async function readAll(path: string, key: KeyObject): Promise<Record<string, Entry>> {
  const out: Record<string, Entry> = {}
  const file = parseJson(await readFile(path, 'utf8').catch(() => ''))
  if (!isObject(file) || typeof file.data !== 'string' || typeof file.mac !== 'string') return out
  const expected = mac(key, file.data)
  const given = Buffer.from(file.mac, 'base64url')
  // Unauthenticated (forged, foreign key, older format): a miss.
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return out
  const parsed = parseJson(file.data)
  if (!isObject(parsed)) return out
  for (const [k, item] of Object.entries(parsed)) {
    if (isObject(item) && isFiniteNumber(item.expiresAt) && isFiniteNumber(item.ttlMs))
      out[k] = { value: item.value, expiresAt: item.expiresAt, ttlMs: item.ttlMs }
  }
  return out
}

/**
 * Creates the metadata cache of a state directory.
 *
 * @param stateDir - the state directory (must exist).
 * @param options - the HMAC key (`store.metadataKey()`) and, for tests, the clock.
 * @returns a cache whose `get` misses on any doubt and whose `set` never throws.
 * @example
 * ```ts
 * const store = await openTokenStore({ stateDir, env: process.env })
 * const cache = fileMetadataCache(stateDir, { key: store.metadataKey() })
 * ```
 */
export function fileMetadataCache(stateDir: string, options: FileMetadataCacheOptions): MetadataCache {
  const now = options.now ?? Date.now
  const path = join(stateDir, METADATA_FILE)
  const k = options.key
  return {
    async get(name) {
      const item = (await readAll(path, k))[name]
      if (!item) return undefined
      const t = now()
      // Capped at now + TTL: an expiry further away was written by a clock that was wrong.
      return item.expiresAt > t && item.expiresAt <= t + item.ttlMs ? item.value : undefined
    },
    async set(name, value, ttlSeconds) {
      try {
        const all = await readAll(path, k)
        const t = now()
        for (const [n, item] of Object.entries(all)) if (item.expiresAt <= t) delete all[n]
        const ttlMs = Math.max(0, ttlSeconds) * 1000
        all[name] = { value, expiresAt: t + ttlMs, ttlMs }
        const data = JSON.stringify(all)
        // Atomic so a reader never sees half a file; durability does not matter for a cache.
        await writeFileAtomic(path, JSON.stringify({ data, mac: mac(k, data).toString('base64url') }), {
          durable: false,
        })
      } catch {
        // A cache that cannot be written only costs a discovery request next time.
      }
    },
  }
}

/**
 * The discovery cache of a token store: in its state directory, authenticated with its key.
 *
 * @param store - the opened token store.
 * @returns the cache, for `resolveAuthority({ cache })`.
 */
export function storeMetadataCache(store: Pick<TokenStore, 'stateDir' | 'metadataKey'>): MetadataCache {
  return fileMetadataCache(store.stateDir, { key: store.metadataKey() })
}
