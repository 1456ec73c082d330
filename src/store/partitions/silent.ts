/**
 * Silent acquisition over any {@link TokenCache} (issue 18): what both library clients do with
 * their `cache` option. The freshness rules are `store/cache.ts`'s (expiry margin capped at half
 * the token's lifetime, `minTtlSeconds`, Entra ID's `refresh_in`); what is new is that the cache
 * may be shared by several processes that cannot take one lock:
 *
 * - in this process, one refresh per partition at a time; callers arriving meanwhile wait for it
 *   and then read the partition again (a failure of the same request is shared);
 * - across instances, a lease written into the partition by compare-and-set: a holder of a live
 *   lease elsewhere means poll the partition (25 ms doubling to 500 ms) until it changes or the
 *   lease lapses, so two instances never send the same rotated refresh token (RFC 9700 §4.14.2);
 * - the refreshed partition is put with the lease's version: when that fails (the account was
 *   removed or signed in again meanwhile) the token is returned but nothing is resurrected.
 *
 * The refresh itself is injected (the clients bind it to their server and credential): this module
 * knows no HTTP.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
 * @see https://www.rfc-editor.org/rfc/rfc9700#section-4.14.2
 * @packageDocumentation
 */
import { randomBytes } from 'node:crypto'
import { EdgeTokenError, isEdgeTokenError } from '../../errors.js'
import { type SleepFunction, sleepOrCancel } from '../../oauth/retry.js'
import type { Account, TokenSet } from '../../oauth/types.js'
import {
  DEFAULT_EXPIRY_MARGIN_SECONDS,
  pick,
  result,
  type SilentTokenResult,
  stillValid,
  tokenEntry,
  usable,
} from '../cache.js'
import { type AccessTokenEntry, scopeKey } from '../document.js'
import {
  accountOf,
  DEFAULT_REFRESH_TOKEN_LIFETIME_SECONDS,
  leasedElsewhere,
  leasedPartition,
  type PartitionContext,
  partitionExpiresAt,
  refreshedPartition,
  releasedPartition,
  signInPartition,
  signInRequiredPartition,
  withAccessToken,
} from './partition.js'
import {
  appKey,
  type CachePartition,
  type PartitionKind,
  partitionKey,
  type TokenCache,
  type VersionedPartition,
} from './token-cache.js'

/** First wait while another instance holds the refresh lease, ms (doubling). */
export const LEASE_POLL_FIRST_MS = 25
/** Longest wait between two looks at a leased partition, ms. */
export const LEASE_POLL_MAX_MS = 500
/** Most account ids whose partition key is remembered (past it, the memory starts over). */
const MAX_REMEMBERED_KEYS = 10_000
/** How many times an app or on-behalf-of token is put again after a concurrent change. */
const PUT_ATTEMPTS = 3

/** Options of {@link TokenCacheEngine}. */
export interface TokenCacheEngineOptions {
  /** The storage. */
  readonly cache: TokenCache
  /** The authority (with the client id: the app part of every key). */
  readonly authority: string
  /** The client id. */
  readonly clientId: string
  /** The per-request timeout, ms; a refresh lease lasts twice that. Default 10 000. */
  readonly timeoutMs?: number | undefined
  /**
   * A partition's refresh-token lifetime when the token response does not say
   * (`refresh_token_expires_in`), seconds. Default 90 days.
   */
  readonly refreshTokenLifetimeSeconds?: number | undefined
  /** The expiry margin, seconds (capped at half a token's lifetime). Default 300. */
  readonly expiryMarginSeconds?: number | undefined
  /** The clock, epoch ms. Default `Date.now`. */
  readonly now?: (() => number) | undefined
  /** Waits between looks at a leased partition (tests). Default a timer. */
  readonly sleep?: SleepFunction | undefined
}

/** What {@link TokenCacheEngine.acquireTokenSilent} is asked. */
export interface AcquireAccountTokenOptions {
  /** The account (or its id) from a sign-in, `getAccounts` or `getAccount`. */
  readonly account: Account | string
  /** The scopes wanted. */
  readonly scopes: readonly string[]
  /**
   * Refresh even when the cached token is good (a refresh started after this call counts), and
   * hand out the new token: after a 401 from the API, for instance.
   */
  readonly forceRefresh?: boolean | undefined
  /** A claims request (JSON, e.g. from an API's claims challenge): the cache is skipped. */
  readonly claims?: string | undefined
  /** The token must stay valid this long, seconds; else refresh. Default 0. */
  readonly minTtlSeconds?: number | undefined
  /** Cancels waiting for a lease and the refresh. */
  readonly signal?: AbortSignal | undefined
}

/** The refresh grant as the engine calls it; bound by the client to its server and credential. */
export type AccountRefresh = (
  refreshToken: string,
  scopes: readonly string[],
  options: {
    readonly claims?: string | undefined
    readonly signal?: AbortSignal | undefined
    /** The account's id_token claims: a refreshed id_token must match them (OIDC Core §12.2). */
    readonly idTokenClaims?: Readonly<Record<string, unknown>> | undefined
  },
) => Promise<TokenSet>

/** What silent acquisition for an account returns: the token and the account it is for. */
export type AccountTokenResult = SilentTokenResult & { account: Account }

interface Flight {
  readonly scopeKey: string
  readonly claims: string | undefined
  readonly promise: Promise<unknown>
}

function noCachedSignIn(): EdgeTokenError {
  return new EdgeTokenError(
    'ERR_SIGNIN_REQUIRED',
    'no cached sign-in for this account: sign the user in again (acquireTokenByCode or a device flow)',
  )
}

function signInAgain(): EdgeTokenError {
  return new EdgeTokenError(
    'ERR_SIGNIN_REQUIRED',
    "sign-in required: this account's refresh token was rejected or none was issued; sign the user in again",
  )
}

const tokenSets = new WeakMap<Readonly<AccessTokenEntry>, TokenSet>()

/** The token set of a cached app or on-behalf-of entry: the one obtained, while in this process. */
function tokenSetOf(entry: Readonly<AccessTokenEntry>): TokenSet {
  let tokens = tokenSets.get(entry)
  if (tokens === undefined) {
    tokens = Object.freeze({
      accessToken: entry.token,
      tokenType: entry.tokenType === 'DPoP' ? 'dpop' : 'bearer',
      expiresAt: entry.expiresAt,
      scopes: Object.freeze([...entry.scopes]),
      ...(entry.refreshAt === undefined
        ? {}
        : { refreshInSeconds: Math.round((entry.refreshAt - entry.obtainedAt) / 1000) }),
    })
    tokenSets.set(entry, tokens)
  }
  return tokens
}

/**
 * The partitioned token cache of one client (authority + client id): sign-ins saved, accounts
 * listed and removed, silent acquisition with single-flight and the cross-instance refresh lease,
 * and the app's own tokens (client credentials, on-behalf-of). Internal to the clients.
 *
 * @internal
 */
export class TokenCacheEngine {
  /** The app part of this client's keys ({@link appKey}). */
  readonly app: string
  readonly #cache: TokenCache
  readonly #owner = randomBytes(12).toString('base64url')
  readonly #flights = new Map<string, Flight>()
  readonly #keys = new Map<string, string>()
  readonly #leaseMs: number
  readonly #lifetimeSeconds: number
  readonly #margin: number
  readonly #now: () => number
  readonly #sleep: SleepFunction | undefined

  /**
   * @param options - the storage, the client's identity, timeouts and clock.
   */
  constructor(options: TokenCacheEngineOptions) {
    this.#cache = options.cache
    this.app = appKey(options.authority, options.clientId)
    this.#leaseMs = 2 * (options.timeoutMs ?? 10_000)
    this.#lifetimeSeconds = options.refreshTokenLifetimeSeconds ?? DEFAULT_REFRESH_TOKEN_LIFETIME_SECONDS
    this.#margin = options.expiryMarginSeconds ?? DEFAULT_EXPIRY_MARGIN_SECONDS
    this.#now = options.now ?? Date.now
    this.#sleep = options.sleep
  }

  #context(): PartitionContext {
    return { refreshTokenLifetimeSeconds: this.#lifetimeSeconds, now: this.#now() }
  }

  #accountKey(account: Account | string): string {
    const id = typeof account === 'string' ? account : account.id
    // A hit must not pay a SHA-256 per call: the keys of recent accounts are kept (bounded).
    let key = this.#keys.get(id)
    if (key === undefined) {
      key = partitionKey(this.app, 'account', id)
      if (this.#keys.size >= MAX_REMEMBERED_KEYS) this.#keys.clear()
      this.#keys.set(id, key)
    }
    return key
  }

  /**
   * Saves a sign-in: replaces the account's partition whatever it held (a new sign-in wins over a
   * lease or a `needsSignIn` mark).
   *
   * @param account - the signed-in account.
   * @param tokenSet - the sign-in's token response.
   * @param scopes - the scopes requested.
   * @param requestedAt - when the token request was sent, epoch ms.
   * @throws `ERR_CACHE_UNAVAILABLE` or StoreError from the storage.
   */
  async saveSignIn(
    account: Account,
    tokenSet: TokenSet,
    scopes: readonly string[],
    requestedAt: number,
  ): Promise<void> {
    const partition = signInPartition(account, tokenSet, scopes, requestedAt, this.#context())
    await this.#cache.put(this.#accountKey(account), partition, { expiresAt: partitionExpiresAt(partition) })
  }

  /**
   * The accounts with a partition (including those that must sign in again).
   *
   * @returns the accounts, in no particular order.
   */
  async getAccounts(): Promise<Account[]> {
    const keys = await this.#cache.list(`${this.app}/account/`)
    const reads = await Promise.all(keys.map((key) => this.#cache.get(key)))
    const out: Account[] = []
    for (const read of reads) if (read?.value.account) out.push(accountOf(read.value.account))
    return out
  }

  /**
   * One account by its id.
   *
   * @param id - the account id (`Account.id`).
   * @returns the account, or undefined when it has no partition.
   */
  async getAccount(id: string): Promise<Account | undefined> {
    const info = (await this.#cache.get(this.#accountKey(id)))?.value.account
    return info === undefined ? undefined : accountOf(info)
  }

  /**
   * Removes an account's partition (its tokens, from this cache only: nothing is revoked).
   *
   * @param account - the account or its id.
   */
  async removeAccount(account: Account | string): Promise<void> {
    await this.#cache.delete(this.#accountKey(account))
  }

  /**
   * Removes the app's own partitions (client credentials and on-behalf-of tokens).
   */
  async clearAppTokens(): Promise<void> {
    const keys = (
      await Promise.all([this.#cache.list(`${this.app}/app/`), this.#cache.list(`${this.app}/obo/`)])
    ).flat()
    await Promise.all(keys.map((key) => this.#cache.delete(key)))
  }

  /**
   * An access token for a signed-in account: the cached one when good enough, else one refresh
   * (single-flight here, leased across instances).
   *
   * @param options - account, scopes, forceRefresh, claims, minTtlSeconds, signal.
   * @param refresh - the refresh grant.
   * @returns the token and the account.
   * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when the account has no partition, no usable
   *   refresh token, or the refresh token is rejected (the partition is then marked); the stale
   *   read's `ERR_CACHE_UNAVAILABLE` when the backend is down and the copy has no good token;
   *   whatever `refresh` throws.
   */
  async acquireTokenSilent(
    options: AcquireAccountTokenOptions,
    refresh: AccountRefresh,
  ): Promise<AccountTokenResult> {
    const calledAt = this.#now()
    const key = this.#accountKey(options.account)
    const read = await this.#cache.get(key)
    if (read === undefined) throw noCachedSignIn()
    const hit = this.#evaluate(read, options, calledAt)
    if (hit !== undefined) return hit
    if (read.stale !== undefined) throw read.stale
    const wanted = scopeKey(options.scopes)
    for (;;) {
      const running = this.#flights.get(key)
      if (running === undefined) break
      let failure: unknown
      await running.promise.then(
        () => undefined,
        (err: unknown) => {
          failure = err ?? new Error('refresh failed')
        },
      )
      // The same request failed just now: its answer is ours too (no second request).
      if (failure !== undefined && running.scopeKey === wanted && running.claims === options.claims) {
        throw failure
      }
      const again = await this.#cache.get(key)
      if (again === undefined) throw noCachedSignIn()
      const served = this.#evaluate(again, options, calledAt)
      if (served !== undefined) return served
    }
    const promise = this.#refresh(key, options, refresh, calledAt)
    const flight: Flight = { scopeKey: wanted, claims: options.claims, promise }
    this.#flights.set(key, flight)
    const forget = () => {
      if (this.#flights.get(key) === flight) this.#flights.delete(key)
    }
    promise.then(forget, forget)
    return promise
  }

  /** The cached answer, when this request may have it without a refresh. */
  #evaluate(
    read: VersionedPartition,
    options: AcquireAccountTokenOptions,
    calledAt: number,
  ): AccountTokenResult | undefined {
    const partition = read.value
    if (options.claims !== undefined || partition.account === undefined) return undefined
    const cached = pick(partition, options.scopes)
    if (cached === undefined) return undefined
    const now = this.#now()
    const minTtl = Math.max(0, options.minTtlSeconds ?? 0)
    const good = options.forceRefresh
      ? // Someone refreshed after this call began: as fresh as a refresh of our own.
        cached.obtainedAt >= calledAt
      : usable(cached, now, this.#margin, minTtl)
    return good ? this.#answer(result(cached, true, now, minTtl), partition) : undefined
  }

  #answer(out: SilentTokenResult, partition: CachePartition): AccountTokenResult {
    const account = partition.account
    if (account === undefined) throw noCachedSignIn()
    return Object.assign(out, { account: accountOf(account) })
  }

  async #refresh(
    key: string,
    options: AcquireAccountTokenOptions,
    refresh: AccountRefresh,
    calledAt: number,
  ): Promise<AccountTokenResult> {
    let wait = LEASE_POLL_FIRST_MS
    for (;;) {
      const read = await this.#cache.get(key)
      if (read === undefined) throw noCachedSignIn()
      const served = this.#evaluate(read, options, calledAt)
      if (served !== undefined) return served
      if (read.stale !== undefined) throw read.stale
      const partition = read.value
      if (partition.account === undefined || partition.needsSignIn || !partition.refreshToken) {
        throw signInAgain()
      }
      const now = this.#now()
      if (leasedElsewhere(partition, this.#owner, now)) {
        // Another instance is spending this refresh token: wait for its result or the lapse.
        await sleepOrCancel(this.#sleep, wait, options.signal)
        wait = Math.min(wait * 2, LEASE_POLL_MAX_MS)
        continue
      }
      const leased = leasedPartition(partition, this.#owner, now + this.#leaseMs, now)
      const version = await this.#cache.put(key, leased, {
        ifVersion: read.version,
        expiresAt: partitionExpiresAt(partition),
      })
      // Changed since the read (another lease, a refresh, a removal): look again.
      if (version === undefined) continue
      return this.#refreshLeased(key, partition, partition.refreshToken, version, options, refresh)
    }
  }

  async #refreshLeased(
    key: string,
    partition: CachePartition,
    refreshToken: string,
    leaseVersion: string,
    options: AcquireAccountTokenOptions,
    refresh: AccountRefresh,
  ): Promise<AccountTokenResult> {
    const minTtl = Math.max(0, options.minTtlSeconds ?? 0)
    const cached = pick(partition, options.scopes)
    const requestedAt = this.#now()
    let tokenSet: TokenSet
    try {
      tokenSet = await refresh(refreshToken, options.scopes, {
        claims: options.claims,
        signal: options.signal,
        idTokenClaims: partition.idTokenClaims,
      })
    } catch (err) {
      if (isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED')) {
        // The refresh token is dead: keep the account (the app can show who must sign in).
        await this.#putQuietly(key, signInRequiredPartition(partition, this.#now()), leaseVersion)
        throw err
      }
      await this.#putQuietly(key, releasedPartition(partition, this.#now()), leaseVersion)
      // An early refresh (the margin, refresh_in) failed and the token still has a while to live:
      // keep using it, as the device store does.
      const now = this.#now()
      if (
        !options.forceRefresh &&
        options.claims === undefined &&
        cached !== undefined &&
        stillValid(cached, now, minTtl)
      ) {
        return this.#answer(result(cached, true, now, minTtl), partition)
      }
      throw err
    }
    const next = refreshedPartition(partition, tokenSet, options.scopes, requestedAt, this.#context())
    let warning = tokenSet.warning
    try {
      // With the lease's version: an account removed (or signed in again) meanwhile is not brought back.
      await this.#cache.put(key, next.partition, {
        ifVersion: leaseVersion,
        expiresAt: partitionExpiresAt(next.partition),
      })
    } catch (err) {
      const why = err instanceof Error ? err.message : 'unknown error'
      const note = `the refreshed tokens could not be saved in the token cache (${why})`
      warning = warning === undefined ? note : `${warning}; ${note}`
    }
    const now = this.#now()
    // As in store/cache.ts: a refresh because the token was due hands out whichever lives longer;
    // a forced one (a 401, a claims challenge) must not hand the old token back.
    const freshest =
      !options.forceRefresh &&
      options.claims === undefined &&
      cached &&
      cached.expiresAt > next.entry.expiresAt
        ? cached
        : next.entry
    const out = this.#answer(result(freshest, freshest !== next.entry, now, minTtl), next.partition)
    if (warning !== undefined) out.warning = out.warning ? `${warning}; ${out.warning}` : warning
    return out
  }

  async #putQuietly(key: string, partition: CachePartition, ifVersion: string): Promise<void> {
    try {
      await this.#cache.put(key, partition, { ifVersion, expiresAt: partitionExpiresAt(partition) })
    } catch {
      // The backend is down: the lease lapses by itself, and the refresh error says what matters.
    }
  }

  /**
   * An app-only or on-behalf-of token: the cached one while good enough, else `fetch` (one at a
   * time per partition and scope set in this process), added to the partition by compare-and-set.
   * Failures are never cached.
   *
   * @param kind - `app` or `obo`.
   * @param id - the partition id: the DPoP key thumbprint (app), the incoming token (obo); hashed.
   * @param scopes - the scopes wanted.
   * @param force - skip the cached token.
   * @param fetch - the token request.
   * @returns the token set (the very object obtained, while it is cached in this process).
   */
  async acquireOwnToken(
    kind: Exclude<PartitionKind, 'account'>,
    id: string,
    scopes: readonly string[],
    force: boolean,
    fetch: () => Promise<TokenSet>,
  ): Promise<TokenSet> {
    const key = partitionKey(this.app, kind, id)
    if (!force) {
      // The app's own credential needs no cache: with the backend down, ask the server.
      const read = await this.#cache.get(key).catch(() => undefined)
      const cached = read === undefined ? undefined : pick(read.value, scopes)
      if (cached !== undefined && usable(cached, this.#now(), this.#margin, 0)) return tokenSetOf(cached)
    }
    const flightKey = `${key}\n${scopeKey(scopes)}`
    const running = force ? undefined : this.#flights.get(flightKey)
    if (running !== undefined) return running.promise as Promise<TokenSet>
    const promise = this.#fetchOwn(key, scopes, fetch)
    if (!force) {
      const flight: Flight = { scopeKey: flightKey, claims: undefined, promise }
      this.#flights.set(flightKey, flight)
      const forget = () => {
        if (this.#flights.get(flightKey) === flight) this.#flights.delete(flightKey)
      }
      promise.then(forget, forget)
    }
    return promise
  }

  async #fetchOwn(key: string, scopes: readonly string[], fetch: () => Promise<TokenSet>): Promise<TokenSet> {
    const requestedAt = this.#now()
    const tokens = await fetch()
    const entry = tokenEntry(tokens, scopes, requestedAt)
    tokenSets.set(entry, tokens)
    try {
      // Compare-and-set, so a token another instance added to the partition meanwhile is kept.
      for (let attempt = 0; attempt < PUT_ATTEMPTS; attempt++) {
        const read = await this.#cache.get(key)
        if (read?.stale !== undefined) break
        const partition = withAccessToken(read?.value, entry, this.#now())
        const version = await this.#cache.put(key, partition, {
          ifVersion: read?.version ?? null,
          expiresAt: partitionExpiresAt(partition),
        })
        if (version !== undefined) break
      }
    } catch {
      // Not cached (the backend is down): the token is good all the same.
    }
    return tokens
  }
}
