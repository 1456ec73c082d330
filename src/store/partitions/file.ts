/**
 * The device's encrypted token store as a {@link TokenCache}: partitions live in the same
 * AES-256-GCM file as the CLI's account (its `partitions` field), written durably under the store's
 * cross-process lock, so compare-and-set holds between processes as well as within one.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto'
import { StoreError } from '../../errors.js'
import type { StoreDocument } from '../document.js'
import type { TokenStore } from '../token-store.js'
import {
  type CachePartition,
  isCachePartition,
  type PutOptions,
  type TokenCache,
  type VersionedPartition,
} from './token-cache.js'

/**
 * A token cache in the encrypted store file (one of several: see {@link MemoryTokenCache} and
 * `RedisTokenCache`). Each read decrypts the file (a few hundred microseconds for a small store);
 * each write takes the lock and replaces the file durably (temporary file, fsync, rename,
 * directory fsync). Expired partitions are dropped at the next write.
 *
 * @example
 * ```ts
 * const store = await openTokenStore({ stateDir: '/var/lib/my-app', env: process.env })
 * const client = new PublicClient({ authority, clientId, cache: new FileTokenCache(store) })
 * ```
 */
export class FileTokenCache implements TokenCache {
  readonly #store: TokenStore
  readonly #now: () => number

  /**
   * @param store - the opened store.
   * @param options - the clock (expiry), epoch ms; default `Date.now`.
   */
  constructor(store: TokenStore, options: { now?: (() => number) | undefined } = {}) {
    this.#store = store
    this.#now = options.now ?? Date.now
  }

  /**
   * Reads a partition (no lock: the file is replaced atomically).
   *
   * @param key - the partition key.
   * @returns the partition and its version, or undefined when absent or expired.
   * @throws StoreError `ERR_STORE_UNREADABLE` when the file does not open or the partition is malformed.
   */
  async get(key: string): Promise<VersionedPartition | undefined> {
    return this.#find(await this.#store.read(), key)
  }

  /**
   * Writes a partition under the store lock if its version is still `ifVersion`.
   *
   * @param key - the partition key.
   * @param value - the whole new partition.
   * @param options - the compare-and-set condition and the expiry.
   * @returns the new version, or undefined when the condition failed (nothing written).
   * @throws StoreError when the store cannot be read or written.
   */
  put(key: string, value: CachePartition, options: PutOptions = {}): Promise<string | undefined> {
    return this.#store.withLock(async () => {
      const doc = await this.#store.read()
      const current = this.#find(doc, key)
      const { ifVersion } = options
      if (ifVersion !== undefined && (current?.version ?? null) !== ifVersion) return undefined
      const version = randomUUID()
      const partitions = this.#live(doc)
      // JSON round trip: what is written is what a later read validates (no undefined members).
      partitions[key] = {
        version,
        ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt }),
        value: JSON.parse(JSON.stringify(value)) as Record<string, unknown>,
      }
      doc.partitions = partitions
      await this.#store.write(doc)
      return version
    })
  }

  /**
   * Removes a partition under the store lock.
   *
   * @param key - the partition key.
   * @throws StoreError when the store cannot be read or written.
   */
  delete(key: string): Promise<void> {
    return this.#store.withLock(async () => {
      const doc = await this.#store.read()
      if (doc.partitions?.[key] === undefined) return
      const partitions = this.#live(doc)
      delete partitions[key]
      doc.partitions = partitions
      await this.#store.write(doc)
    })
  }

  /**
   * The unexpired partition keys directly under a prefix.
   *
   * @param prefix - `<app>/<kind>/`.
   * @returns the keys.
   */
  async list(prefix: string): Promise<string[]> {
    const now = this.#now()
    const partitions = (await this.#store.read()).partitions ?? {}
    return Object.entries(partitions)
      .filter(
        ([key, stored]) =>
          key.startsWith(prefix) &&
          !key.includes('/', prefix.length) &&
          (stored.expiresAt === undefined || stored.expiresAt > now),
      )
      .map(([key]) => key)
  }

  #find(doc: StoreDocument, key: string): VersionedPartition | undefined {
    const stored = doc.partitions?.[key]
    if (stored === undefined || (stored.expiresAt !== undefined && stored.expiresAt <= this.#now())) {
      return undefined
    }
    // Authenticated but malformed: a bug or an incompatible writer; fail closed, name no content.
    if (!isCachePartition(stored.value)) {
      throw new StoreError(
        `token store ${this.#store.path} holds a token cache partition this version cannot read`,
      )
    }
    return { value: stored.value, version: stored.version }
  }

  /** The document's partitions without the expired ones (dropped at each write). */
  #live(doc: StoreDocument): NonNullable<StoreDocument['partitions']> {
    const now = this.#now()
    const live: NonNullable<StoreDocument['partitions']> = {}
    for (const [key, stored] of Object.entries(doc.partitions ?? {})) {
      if (stored.expiresAt === undefined || stored.expiresAt > now) live[key] = stored
    }
    return live
  }
}
