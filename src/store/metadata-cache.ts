/**
 * A file-backed {@link MetadataCache} in the state directory (`metadata.json`), so a `token` refresh
 * does not repeat OIDC discovery on every run. Its content is public authorization-server metadata,
 * but it decides where refresh tokens are sent (`token_endpoint`), so it is authenticated: an
 * HMAC-SHA256 under a key derived (HKDF, "edgetoken metadata cache v1") from the token store's key
 * material. A damaged, foreign or forged file is a cache miss (discovery again), never an error.
 */
import { createHmac, type KeyObject, timingSafeEqual } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileAtomic } from '../lib/durable-file.js'
import { isFiniteNumber, isObject, parseJson } from '../lib/validate.js'
import type { MetadataCache } from '../oauth/types.js'
import { deriveMetadataKey } from './envelope.js'
import { GENERATED_KEY_NAME, loadKeyMaterial } from './keys.js'

/** The cache file's name in the state directory. */
export const METADATA_FILE = 'metadata.json'

/** Options of {@link fileMetadataCache}. */
export interface FileMetadataCacheOptions {
  /**
   * The HMAC key: `TokenStore.metadataKey()`. When absent, it is derived from the key material
   * found as the token store finds it (`keyFile`, `EDGETOKEN_KEY_FILE`, the systemd credential,
   * an existing generated `store.key`), never generating one; without key material the cache is
   * off (every `get` misses, `set` stores nothing).
   */
  key?: KeyObject | undefined
  /** The environment, when `key` is absent. Default `process.env`. */
  env?: NodeJS.ProcessEnv | undefined
  /** A key file from the configuration, when `key` is absent. */
  keyFile?: string | undefined
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

function findKey(stateDir: string, options: FileMetadataCacheOptions): KeyObject | undefined {
  const env = options.env ?? process.env
  const configured = options.keyFile ?? env.EDGETOKEN_KEY_FILE
  const credential = env.CREDENTIALS_DIRECTORY
  if (
    !configured &&
    !(credential && existsSync(join(credential, 'edgetoken.key'))) &&
    !existsSync(join(stateDir, GENERATED_KEY_NAME))
  ) {
    return undefined
  }
  try {
    const found = loadKeyMaterial({ stateDir, env, keyFile: options.keyFile, storeExists: true })
    const key = deriveMetadataKey(found.material)
    found.material.fill(0)
    return key
  } catch {
    return undefined
  }
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
 * @param options - the HMAC key (`store.metadataKey()`), or where to find the key material; a bare
 *   function is the clock (the former signature).
 * @returns a cache whose `get` misses on any doubt and whose `set` never throws.
 * @example
 * ```ts
 * const store = await openTokenStore({ stateDir, env: process.env })
 * const cache = fileMetadataCache(stateDir, { key: store.metadataKey() })
 * ```
 */
export function fileMetadataCache(
  stateDir: string,
  options: FileMetadataCacheOptions | (() => number) = {},
): MetadataCache {
  const opts: FileMetadataCacheOptions = typeof options === 'function' ? { now: options } : options
  const now = opts.now ?? Date.now
  const path = join(stateDir, METADATA_FILE)
  let key: KeyObject | undefined | null = opts.key ?? null
  // Derived on first use: the cache is used on refresh and login only.
  const getKey = (): KeyObject | undefined => {
    if (key === null) key = findKey(stateDir, opts)
    return key
  }
  return {
    async get(name) {
      const k = getKey()
      if (!k) return undefined
      const item = (await readAll(path, k))[name]
      if (!item) return undefined
      const t = now()
      // Capped at now + TTL: an expiry further away was written by a clock that was wrong.
      return item.expiresAt > t && item.expiresAt <= t + item.ttlMs ? item.value : undefined
    },
    async set(name, value, ttlSeconds) {
      try {
        const k = getKey()
        if (!k) return
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
