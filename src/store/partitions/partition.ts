/**
 * What a cache partition holds and how it changes (issue 18): a sign-in, a refresh, an access token
 * added, the refresh lease taken and given back, a dead refresh token. Partitions are immutable: each
 * change builds a new one, so a reader may keep the object it was handed (the in-memory cache hands
 * out the stored object itself). The freshness rules and the access-token list are `store/cache.ts`'s
 * own (one token per scope set, at most 16, the newest last).
 *
 * @packageDocumentation
 */
import type { Account, TokenSet } from '../../oauth/types.js'
import { accountInfo, addToken, tokenEntry } from '../cache.js'
import type { AccessTokenEntry, StoredAccountInfo } from '../document.js'
import type { CachePartition } from './token-cache.js'

/**
 * A refresh token's lifetime when the token response does not say (`refresh_token_expires_in`):
 * 90 days, Entra ID's default for refresh tokens of confidential and public clients.
 */
export const DEFAULT_REFRESH_TOKEN_LIFETIME_SECONDS = 90 * 86_400

/** What every partition change needs to know besides the tokens. */
export interface PartitionContext {
  /** The refresh token's lifetime when the response does not say, seconds. */
  readonly refreshTokenLifetimeSeconds: number
  /** The clock, epoch ms. */
  readonly now: number
}

function tokens(
  base: readonly Readonly<AccessTokenEntry>[],
  entry: AccessTokenEntry,
): readonly Readonly<AccessTokenEntry>[] {
  const holder = { accessTokens: [...base] as AccessTokenEntry[] }
  addToken(holder, entry)
  return holder.accessTokens
}

function refreshTokenExpiresAt(tokenSet: TokenSet, requestedAt: number, context: PartitionContext): number {
  const seconds = tokenSet.refreshTokenExpiresInSeconds ?? context.refreshTokenLifetimeSeconds
  return requestedAt + seconds * 1000
}

/**
 * The partition of a new sign-in: the account, its refresh token (lifetime from
 * `refresh_token_expires_in`, else the configured one) and the first access token.
 *
 * @param account - the signed-in account.
 * @param tokenSet - the sign-in's token response.
 * @param requestedScopes - the scopes asked for (the access token's key; refreshes ask for them).
 * @param requestedAt - when the token request was sent, epoch ms.
 * @param context - refresh-token lifetime and clock.
 * @returns the partition.
 */
export function signInPartition(
  account: Account,
  tokenSet: TokenSet,
  requestedScopes: readonly string[],
  requestedAt: number,
  context: PartitionContext,
): CachePartition {
  const refreshToken = tokenSet.refreshToken
  return {
    v: 1,
    account: accountInfo(account, account.issuer),
    ...(refreshToken === undefined
      ? {}
      : { refreshToken, refreshTokenExpiresAt: refreshTokenExpiresAt(tokenSet, requestedAt, context) }),
    ...(tokenSet.idTokenClaims === undefined ? {} : { idTokenClaims: tokenSet.idTokenClaims }),
    scopes: [...requestedScopes],
    accessTokens: [tokenEntry(tokenSet, requestedScopes, requestedAt)],
    updatedAt: context.now,
  }
}

/**
 * The partition after a successful refresh: the new access token added, a rotated refresh token
 * (and its lifetime) kept, the lease given back.
 *
 * @param partition - the partition the refresh started from.
 * @param tokenSet - the refresh response (its refresh token is the old one when not rotated).
 * @param requestedScopes - the scopes asked for.
 * @param requestedAt - when the refresh request was sent, epoch ms.
 * @param context - refresh-token lifetime and clock.
 * @returns the new partition and the new access token's entry.
 */
export function refreshedPartition(
  partition: CachePartition,
  tokenSet: TokenSet,
  requestedScopes: readonly string[],
  requestedAt: number,
  context: PartitionContext,
): { partition: CachePartition; entry: AccessTokenEntry } {
  const entry = tokenEntry(tokenSet, requestedScopes, requestedAt)
  const rotated = tokenSet.refreshToken !== undefined && tokenSet.refreshToken !== partition.refreshToken
  const { lease: _lease, ...rest } = partition
  return {
    entry,
    partition: {
      ...rest,
      refreshToken: tokenSet.refreshToken ?? partition.refreshToken,
      refreshTokenExpiresAt:
        rotated || tokenSet.refreshTokenExpiresInSeconds !== undefined
          ? refreshTokenExpiresAt(tokenSet, requestedAt, context)
          : partition.refreshTokenExpiresAt,
      idTokenClaims: tokenSet.idTokenClaims ?? partition.idTokenClaims,
      accessTokens: tokens(partition.accessTokens, entry),
      updatedAt: context.now,
    },
  }
}

/**
 * An app or on-behalf-of partition with one more access token (these have no refresh token).
 *
 * @param partition - the current partition, or undefined for a new one.
 * @param entry - the new access token.
 * @param now - epoch ms.
 * @returns the new partition.
 */
export function withAccessToken(
  partition: CachePartition | undefined,
  entry: AccessTokenEntry,
  now: number,
): CachePartition {
  return { v: 1, accessTokens: tokens(partition?.accessTokens ?? [], entry), updatedAt: now }
}

/**
 * The partition with a refresh lease: the holder alone sends the refresh token until `until`.
 *
 * @param partition - the partition read.
 * @param owner - the holder (one random id per client instance).
 * @param until - when the lease lapses, epoch ms.
 * @param now - epoch ms.
 * @returns the new partition.
 * @see https://www.rfc-editor.org/rfc/rfc9700#section-4.14.2
 */
export function leasedPartition(
  partition: CachePartition,
  owner: string,
  until: number,
  now: number,
): CachePartition {
  return { ...partition, lease: { owner, until }, updatedAt: now }
}

/**
 * The partition with its lease given back (a refresh that failed for a passing reason).
 *
 * @param partition - the partition the refresh started from.
 * @param now - epoch ms.
 * @returns the new partition.
 */
export function releasedPartition(partition: CachePartition, now: number): CachePartition {
  const { lease: _lease, ...rest } = partition
  return { ...rest, updatedAt: now }
}

/**
 * The partition after `invalid_grant`: the refresh token dropped, the account kept and marked, so
 * `getAccounts` still shows who must sign in again.
 *
 * @param partition - the partition the refresh started from.
 * @param now - epoch ms.
 * @returns the new partition.
 */
export function signInRequiredPartition(partition: CachePartition, now: number): CachePartition {
  const { lease: _lease, refreshToken: _refreshToken, ...rest } = partition
  return { ...rest, needsSignIn: true, updatedAt: now }
}

/**
 * Whether another client instance holds a live refresh lease on the partition.
 *
 * @param partition - the partition read.
 * @param owner - this instance's id.
 * @param now - epoch ms.
 * @returns true when a refresh must wait for the holder.
 */
export function leasedElsewhere(partition: CachePartition, owner: string, now: number): boolean {
  const lease = partition.lease
  return lease !== undefined && lease.owner !== owner && lease.until > now
}

/**
 * When the backend may forget a partition: when its refresh token stops working, else when its
 * last access token expires.
 *
 * @param partition - the partition.
 * @returns epoch ms, or undefined when there is nothing to go by.
 */
export function partitionExpiresAt(partition: CachePartition): number | undefined {
  let latest = partition.refreshTokenExpiresAt
  for (const token of partition.accessTokens) {
    if (latest === undefined || token.expiresAt > latest) latest = token.expiresAt
  }
  return latest
}

const accounts = new WeakMap<Readonly<StoredAccountInfo>, Account>()

/**
 * The account of a stored partition, as the clients hand it out (one frozen object per stored one).
 *
 * @param info - the stored account.
 * @returns the account.
 */
export function accountOf(info: Readonly<StoredAccountInfo>): Account {
  let account = accounts.get(info)
  if (account === undefined) {
    account = Object.freeze({
      id: info.id,
      issuer: info.issuer,
      ...(info.username === undefined ? {} : { username: info.username }),
      ...(info.tenant === undefined ? {} : { tenant: info.tenant }),
    })
    accounts.set(info, account)
  }
  return account
}
