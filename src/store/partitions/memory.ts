/**
 * The in-memory {@link TokenCache}: bounded, least recently used first out, for tests and for apps
 * that run as one process. A hit hands out the stored (frozen) partition itself: no copy, no
 * serialisation, so silent acquisition from it costs a map lookup and the freshness check.
 *
 * @packageDocumentation
 */
import type { CachePartition, PutOptions, TokenCache, VersionedPartition } from './token-cache.js'

/** Options of {@link MemoryTokenCache}. */
export interface MemoryTokenCacheOptions {
  /**
   * Most partitions kept (accounts, app and on-behalf-of partitions together); the least recently
   * read or written goes first. Default 10 000.
   */
  maxPartitions?: number | undefined
  /** The clock, epoch ms (expiry). Default `Date.now`. */
  now?: (() => number) | undefined
}

interface Slot {
  readonly read: VersionedPartition
  readonly expiresAt: number | undefined
}

/** Default {@link MemoryTokenCacheOptions.maxPartitions}. */
export const DEFAULT_MAX_PARTITIONS = 10_000

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const member of Object.values(value)) deepFreeze(member)
  }
  return value
}

/**
 * A bounded LRU token cache in this process's memory. Partitions past their `expiresAt` read as
 * absent. Values are frozen when put (the partition objects the clients build are never changed
 * afterwards) and handed out as they are.
 *
 * @example
 * ```ts
 * const cache = new MemoryTokenCache({ maxPartitions: 1000 })
 * const app = new ConfidentialClient({ authority, clientId, credential, cache })
 * ```
 */
export class MemoryTokenCache implements TokenCache {
  readonly #slots = new Map<string, Slot>()
  readonly #max: number
  readonly #now: () => number
  #version = 0

  /**
   * @param options - the bound and the clock.
   * @throws TypeError when `maxPartitions` is not a positive integer.
   */
  constructor(options: MemoryTokenCacheOptions = {}) {
    const max = options.maxPartitions ?? DEFAULT_MAX_PARTITIONS
    if (!Number.isSafeInteger(max) || max < 1) {
      throw new TypeError('MemoryTokenCache: maxPartitions must be a positive integer')
    }
    this.#max = max
    this.#now = options.now ?? Date.now
  }

  /** How many partitions are held (expired ones included until touched). */
  get size(): number {
    return this.#slots.size
  }

  /**
   * Reads a partition and marks it recently used.
   *
   * @param key - the partition key.
   * @returns the stored partition and its version (the same object on every hit), or undefined.
   */
  get(key: string): Promise<VersionedPartition | undefined> {
    return Promise.resolve(this.#get(key)?.read)
  }

  /**
   * Writes a partition if its version is still `ifVersion` (see {@link PutOptions}); the value is
   * frozen, not copied. The least recently used partition goes when the bound is passed.
   *
   * @param key - the partition key.
   * @param value - the whole new partition.
   * @param options - the compare-and-set condition and the expiry.
   * @returns the new version, or undefined when the condition failed.
   */
  put(key: string, value: CachePartition, options: PutOptions = {}): Promise<string | undefined> {
    const current = this.#get(key)
    const { ifVersion } = options
    if (ifVersion !== undefined && (current?.read.version ?? null) !== ifVersion) {
      return Promise.resolve(undefined)
    }
    this.#version += 1
    const version = this.#version.toString(36)
    this.#slots.delete(key)
    this.#slots.set(key, {
      read: Object.freeze({ value: deepFreeze(value), version }),
      expiresAt: options.expiresAt,
    })
    if (this.#slots.size > this.#max) {
      // A Map iterates in insertion order and every use re-inserts: the first key is the least recent.
      const oldest = this.#slots.keys().next()
      if (oldest.done !== true) this.#slots.delete(oldest.value)
    }
    return Promise.resolve(version)
  }

  /**
   * Removes a partition.
   *
   * @param key - the partition key.
   */
  delete(key: string): Promise<void> {
    this.#slots.delete(key)
    return Promise.resolve()
  }

  /**
   * The unexpired partition keys directly under a prefix.
   *
   * @param prefix - `<app>/<kind>/`.
   * @returns the keys.
   */
  list(prefix: string): Promise<string[]> {
    const now = this.#now()
    const keys: string[] = []
    for (const [key, slot] of this.#slots) {
      if (key.startsWith(prefix) && !key.includes('/', prefix.length) && !expired(slot, now)) keys.push(key)
    }
    return Promise.resolve(keys)
  }

  #get(key: string): Slot | undefined {
    const slot = this.#slots.get(key)
    if (slot === undefined) return undefined
    this.#slots.delete(key)
    if (expired(slot, this.#now())) return undefined
    this.#slots.set(key, slot)
    return slot
  }
}

function expired(slot: Slot, now: number): boolean {
  return slot.expiresAt !== undefined && slot.expiresAt <= now
}
