/**
 * The partitioned token cache of the library faces (issue 18): what {@link PublicClient} and
 * {@link ConfidentialClient} keep per signed-in account, per app and per on-behalf-of assertion,
 * behind one small storage interface with compare-and-set, so that a web app's instances can share
 * one cache (Redis) without two of them spending the same rotated refresh token.
 *
 * The storage knows partitions only as opaque keys and JSON-able values; what a partition means
 * (accounts, tokens, the refresh lease) lives in `partition.ts` and `silent.ts`. The device's
 * single-account store (`store/cache.ts`, the CLI's) is unchanged; {@link FileTokenCache} puts
 * partitions in the same encrypted file for library users on a device.
 *
 * @packageDocumentation
 */
import { createHash } from 'node:crypto'
import { isFiniteNumber, isNonEmptyString, isObject } from '../../lib/validate.js'
import { type AccessTokenEntry, isAccessTokenEntry, type StoredAccountInfo } from '../document.js'

/**
 * What the cache holds under one key: one signed-in account of one app (its refresh token and
 * access tokens), the app's own tokens (client credentials), or the tokens obtained on behalf of
 * one incoming assertion. Values are replaced whole, never edited in place: a reader may hold the
 * object it was given (the in-memory cache hands out the stored object itself).
 */
export interface CachePartition {
  /** Format version. */
  readonly v: 1
  /** The signed-in account (account partitions only). */
  readonly account?: Readonly<StoredAccountInfo> | undefined
  /** The refresh token. Secret. */
  readonly refreshToken?: string | undefined
  /** When the refresh token stops being usable, epoch ms, when known (the partition's lifetime). */
  readonly refreshTokenExpiresAt?: number | undefined
  /** The refresh token was rejected (`invalid_grant`): the user must sign in again. */
  readonly needsSignIn?: boolean | undefined
  /** Verified id_token claims of the last response that had one. */
  readonly idTokenClaims?: Readonly<Record<string, unknown>> | undefined
  /** Scopes requested at sign-in (refreshes ask for these when no others are given). */
  readonly scopes?: readonly string[] | undefined
  /** Access tokens per scope set, newest last (at most 16). */
  readonly accessTokens: readonly Readonly<AccessTokenEntry>[]
  /**
   * A refresh in progress (by any instance sharing the cache): others wait for its result rather
   * than send the same refresh token, which a server with refresh token rotation and reuse
   * detection would answer by revoking the whole grant (RFC 9700 §4.14.2).
   */
  readonly lease?: { readonly owner: string; readonly until: number } | undefined
  /** Last change, epoch ms. */
  readonly updatedAt: number
}

/** A partition as read, with the version a later {@link TokenCache.put} compares against. */
export interface VersionedPartition {
  /** The partition. Do not modify it. */
  readonly value: CachePartition
  /** Opaque; changes with every successful put. */
  readonly version: string
  /**
   * Set when the backend could not be reached and this is the last copy this process saw: serve
   * an access token that is still good, but write nothing and do not refresh (the refresh token
   * in the copy may have been spent by another instance since). The error says why.
   */
  readonly stale?: Error | undefined
}

/** Options of {@link TokenCache.put}. */
export interface PutOptions {
  /**
   * Compare-and-set: the version read (the put fails when the partition changed since), `null`
   * (the partition must not exist), or `undefined` (unconditional: a new sign-in replaces
   * whatever was there).
   */
  readonly ifVersion?: string | null | undefined
  /** When the backend may forget the partition, epoch ms (Redis: the key's TTL). */
  readonly expiresAt?: number | undefined
}

/**
 * Storage of cache partitions. Implementations: {@link MemoryTokenCache} (bounded, LRU),
 * {@link FileTokenCache} (the device's encrypted file), {@link RedisTokenCache} (several
 * instances; values AES-256-GCM encrypted). Keys are `<app>/<kind>/<id>` (see {@link partitionKey});
 * values from outside the process are untrusted and validated ({@link isCachePartition}).
 */
export interface TokenCache {
  /**
   * Reads a partition.
   *
   * @param key - the partition key.
   * @returns the partition and its version, or undefined when there is none.
   * @throws StoreError `ERR_STORE_UNREADABLE` when the stored value does not decrypt or validate;
   *   `ERR_CACHE_UNAVAILABLE` when the backend cannot be reached and no local copy exists.
   */
  get(key: string): Promise<VersionedPartition | undefined>
  /**
   * Writes a partition, atomically, if its version is still `ifVersion`.
   *
   * @param key - the partition key.
   * @param value - the whole new partition.
   * @param options - the compare-and-set condition and the expiry.
   * @returns the new version, or undefined when the condition failed (nothing was written).
   * @throws `ERR_CACHE_UNAVAILABLE` when the backend cannot be reached.
   */
  put(key: string, value: CachePartition, options?: PutOptions): Promise<string | undefined>
  /**
   * Removes a partition (nothing when absent).
   *
   * @param key - the partition key.
   * @throws `ERR_CACHE_UNAVAILABLE` when the backend cannot be reached.
   */
  delete(key: string): Promise<void>
  /**
   * The keys of the partitions directly under a prefix (`<app>/<kind>/`), in no particular order.
   *
   * @param prefix - the prefix, ending with `/`.
   * @returns the keys.
   */
  list(prefix: string): Promise<string[]>
}

/** The kinds of partition. */
export type PartitionKind = 'account' | 'app' | 'obo'

/**
 * The app part of every key: an unkeyed SHA-256 of the authority (trailing slashes ignored) and the
 * client id, so one cache (one Redis) serves several apps and authorities without collisions.
 *
 * @param authority - the authority URL.
 * @param clientId - the client id.
 * @returns 22 base64url characters.
 */
export function appKey(authority: string, clientId: string): string {
  return digest(JSON.stringify([authority.replace(/\/+$/, ''), clientId]))
}

/**
 * The key of a partition: `<app>/<kind>/<id>`. The id is hashed so that keys are bounded and
 * show no account name, scope or token (a Redis `KEYS` listing leaks nothing).
 *
 * @param app - from {@link appKey}.
 * @param kind - `account` (id: the home account id: Entra ID `uid.utid`, else the id_token
 *   `sub`), `app` (id: the DPoP key thumbprint or empty), `obo` (id: the incoming token itself,
 *   never stored).
 * @param id - the id, hashed here.
 * @returns the key.
 */
export function partitionKey(app: string, kind: PartitionKind, id: string): string {
  return `${app}/${kind}/${digest(id)}`
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url').slice(0, 22)
}

function isAccountInfo(value: unknown): boolean {
  return (
    isObject(value) &&
    isNonEmptyString(value.id) &&
    typeof value.issuer === 'string' &&
    (value.username === undefined || typeof value.username === 'string') &&
    (value.tenant === undefined || typeof value.tenant === 'string')
  )
}

/**
 * Whether a value (decrypted from outside the process) has the shape of a {@link CachePartition}.
 *
 * @param value - anything.
 * @returns true when it does.
 */
export function isCachePartition(value: unknown): value is CachePartition {
  if (!isObject(value) || value.v !== 1) return false
  const lease = value.lease
  return (
    (value.account === undefined || isAccountInfo(value.account)) &&
    (value.refreshToken === undefined || isNonEmptyString(value.refreshToken)) &&
    (value.refreshTokenExpiresAt === undefined || isFiniteNumber(value.refreshTokenExpiresAt)) &&
    (value.needsSignIn === undefined || typeof value.needsSignIn === 'boolean') &&
    (value.idTokenClaims === undefined || isObject(value.idTokenClaims)) &&
    (value.scopes === undefined ||
      (Array.isArray(value.scopes) && value.scopes.every((s) => typeof s === 'string'))) &&
    Array.isArray(value.accessTokens) &&
    value.accessTokens.every(isAccessTokenEntry) &&
    (lease === undefined ||
      (isObject(lease) && isNonEmptyString(lease.owner) && isFiniteNumber(lease.until))) &&
    isFiniteNumber(value.updatedAt)
  )
}
