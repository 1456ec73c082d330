/**
 * The token cache over the encrypted store: one account per (authority, client id), its refresh
 * token, access tokens per scope set, id-token claims; and silent acquisition — a valid cached
 * token with no network, else one refresh at a time (in this process and across processes), with
 * a rotated refresh token saved durably before the new access token is handed out.
 *
 * Expiry margin: a token counts as valid until `expiresAt - margin`, where the margin is
 * `expiryMarginSeconds` (default 300) but at most half the token's lifetime, so a 60-second token
 * is not "expired" on arrival. Entra ID's `refresh_in` moves the refresh earlier.
 */
import { EdgeTokenError, isEdgeTokenError } from '../errors.js'
import type { DPoPKeyRecord } from '../oauth/dpop.js'
import type { Account, TokenSet } from '../oauth/types.js'
import {
  type AccessTokenEntry,
  type AccountEntry,
  accountKey,
  normalizeAuthority,
  type StoreDocument,
  type StoredAccountInfo,
  scopeKey,
} from './document.js'
import type { StoreWriteReservation, TokenStore } from './token-store.js'

/** Default expiry margin in seconds. */
export const DEFAULT_EXPIRY_MARGIN_SECONDS = 300
/** How many scope sets keep a cached access token per account. */
const MAX_SCOPE_SETS = 16

/** Which account: the pair the cache is keyed by. */
export interface AccountIdentity {
  /** The authority (issuer) URL. */
  authority: string
  /** The client id. */
  clientId: string
}

/** Options of {@link saveSignIn}. */
export interface SaveSignInOptions extends AccountIdentity {
  /** The signed-in account. */
  account: Account
  /** The token response of the sign-in. */
  tokenSet: TokenSet
  /** The scopes that were requested (the cache key of the access token). */
  requestedScopes: readonly string[]
  /** When the token request was sent, epoch ms; default now. */
  requestedAt?: number
  /** Stops waiting for the store lock. */
  signal?: AbortSignal | undefined
  /**
   * The DPoP key the tokens are bound to (RFC 9449), kept for the account's refreshes; without
   * it, a key stored earlier is dropped (the new tokens are bearer tokens). Saved in the same
   * write as the sign-in, which also drops the account's pending device sign-in.
   */
  dpopKey?: DPoPKeyRecord | undefined
}

/** What a refresh is given besides the refresh token (and a machine's acquisition besides the scopes). */
export interface RefreshContext {
  /** The account's DPoP key: the refresh request carries a proof of it (RFC 9449 §5). Secret. */
  readonly dpopKey?: DPoPKeyRecord | undefined
  /**
   * The account's verified id_token claims from sign-in: a refreshed id_token must keep its `iss`,
   * `sub`, `aud` (OpenID Connect Core §12.2), the refresh grant's `originalIdTokenClaims`.
   */
  readonly idTokenClaims?: Readonly<Record<string, unknown>> | undefined
}

/** Refreshes: the protocol layer's refresh grant, bound to an authority and client. */
export type RefreshFunction = (
  refreshToken: string,
  scopes: readonly string[],
  context?: RefreshContext,
) => Promise<TokenSet>

/**
 * Token acquisition for a machine with no user (client credentials, managed identity): there is
 * no refresh token, so a token is acquired again with the machine's own credential whenever one
 * is due, and the first one needs no sign-in.
 */
export interface MachineAcquisition {
  /** The grant, recorded on the account so `status` and the daemon know it renews itself. */
  readonly grant: 'client_credentials' | 'managed_identity'
  /**
   * Acquires a token for these scopes; called with the store lock held.
   *
   * @param scopes - the scopes wanted.
   * @param context - the account's stored DPoP key, to bind the token to (RFC 9449 §5).
   * @returns the tokens, the account, and the DPoP key they are bound to: saved in the same write
   *   (no key: a key stored earlier is dropped, as by a sign-in without DPoP).
   * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when the credential was rejected (the account is
   *   then marked, like a dead refresh token); anything else is passed on.
   */
  acquire(
    scopes: readonly string[],
    context?: RefreshContext,
  ): Promise<{ tokenSet: TokenSet; account: Account; dpopKey?: DPoPKeyRecord | undefined }>
}

/** Options of {@link acquireTokenSilent}. */
export interface AcquireTokenSilentOptions extends AccountIdentity {
  /** The scopes wanted (the configured ones, or `--scope`). */
  scopes: readonly string[]
  /** The token must stay valid this long; else refresh. Default 0 (only the margin applies). */
  minTtlSeconds?: number | undefined
  /**
   * Refresh even when the cached token is valid (a refresh started after this call counts), and
   * return the new token even when the cached one would live longer. A refresh for a claims
   * challenge must set it (its `refresh` sends the claims).
   */
  forceRefresh?: boolean | undefined
  /** The refresh grant; called with the lock held. Required unless `machine` is given. */
  refresh?: RefreshFunction | undefined
  /**
   * A machine's own acquisition instead of a refresh (client credentials, managed identity): with
   * it, no sign-in is needed first, and a rejected credential is retried on the next call.
   */
  machine?: MachineAcquisition | undefined
  /** Expiry margin; default {@link DEFAULT_EXPIRY_MARGIN_SECONDS}. */
  expiryMarginSeconds?: number | undefined
  /** Stops waiting for the lock. */
  signal?: AbortSignal | undefined
  /** The clock, epoch ms (tests). Default `Date.now`. */
  now?: (() => number) | undefined
}

/** What {@link acquireTokenSilent} returns. */
export interface SilentTokenResult {
  /** The access token. Secret. */
  accessToken: string
  /** Expiry, epoch ms. */
  expiresAt: number
  /** The granted scopes. */
  scopes: string[]
  /** True when this call made no token request. */
  fromCache: boolean
  /** `DPoP` when the token is bound to the account's DPoP key (send it with proofs), else `Bearer`. */
  tokenType: 'Bearer' | 'DPoP'
  /** With `DPoP`: the key to sign the proofs with. Secret: never printed. */
  dpopKey?: DPoPKeyRecord | undefined
  /** Set when the token does not meet `minTtlSeconds` (the IdP issues shorter lifetimes). */
  warning?: string
}

/** What {@link readAccountStatus} returns. */
export interface AccountStatus {
  /** The account, or null when none is stored. */
  account: StoredAccountInfo | null
  /** An account is stored and can be refreshed silently. */
  signedIn: boolean
  /** An account is stored but its refresh token was rejected. */
  needsSignIn: boolean
  /** The latest expiry of a cached access token, epoch ms, or null. */
  accessTokenExpiresAt: number | null
}

function notSignedIn(): EdgeTokenError {
  return new EdgeTokenError('ERR_SIGNIN_REQUIRED', "not signed in: run 'edgetoken login'")
}

function signInAgain(): EdgeTokenError {
  return new EdgeTokenError(
    'ERR_SIGNIN_REQUIRED',
    "sign-in required: the refresh token was rejected or none was issued; run 'edgetoken login'",
  )
}

/**
 * The account as stored: id, issuer (the authority when the account names none), username, tenant.
 *
 * @param account - the signed-in account.
 * @param issuerFallback - the issuer to record when the account has none.
 * @returns a new object.
 */
export function accountInfo(account: Account, issuerFallback: string): StoredAccountInfo {
  const info: StoredAccountInfo = { id: account.id, issuer: account.issuer || issuerFallback }
  if (account.username !== undefined) info.username = account.username
  if (account.tenant !== undefined) info.tenant = account.tenant
  return info
}

/**
 * The cache entry of a token response's access token (also used by the partitioned cache).
 *
 * @param tokenSet - the validated token response.
 * @param requested - the scopes requested: the entry's key.
 * @param requestedAt - when the request was sent, epoch ms (the entry's `obtainedAt`).
 * @returns a new entry.
 */
export function tokenEntry(
  tokenSet: TokenSet,
  requested: readonly string[],
  requestedAt: number,
): AccessTokenEntry {
  const entry: AccessTokenEntry = {
    key: scopeKey(requested),
    scopes: [...tokenSet.scopes],
    token: tokenSet.accessToken,
    expiresAt: tokenSet.expiresAt,
    obtainedAt: requestedAt,
  }
  if (tokenSet.tokenType === 'dpop') entry.tokenType = 'DPoP'
  if (tokenSet.refreshInSeconds !== undefined && tokenSet.refreshInSeconds > 0) {
    entry.refreshAt = requestedAt + tokenSet.refreshInSeconds * 1000
  }
  return entry
}

/**
 * Adds an access token to an entry's list, in place: one per scope set (the newest), at most
 * 16 scope sets (the oldest go first).
 *
 * @param entry - an account entry or a partition being built (its `accessTokens` is replaced).
 * @param token - the new token.
 */
export function addToken(entry: { accessTokens: AccessTokenEntry[] }, token: AccessTokenEntry): void {
  // One token per scope set (the newest); the oldest scope sets go first when there are too many.
  entry.accessTokens = entry.accessTokens.filter((t) => t.key !== token.key)
  entry.accessTokens.push(token)
  if (entry.accessTokens.length > MAX_SCOPE_SETS)
    entry.accessTokens.splice(0, entry.accessTokens.length - MAX_SCOPE_SETS)
}

/**
 * The cached token answering a scope request: same key, else one whose granted scopes cover it
 * (the longest-lived of those).
 *
 * @param entry - an account entry or a cache partition.
 * @param scopes - the requested scopes.
 * @returns the token, or undefined.
 */
export function pick(
  entry: { readonly accessTokens: readonly AccessTokenEntry[] },
  scopes: readonly string[],
): AccessTokenEntry | undefined {
  const { key, wanted } = scopeQuery(scopes)
  let best: AccessTokenEntry | undefined
  for (const token of entry.accessTokens) {
    const covers = token.key === key || (wanted.length > 0 && includesAll(token.scopes, wanted))
    if (covers && (best === undefined || token.expiresAt > best.expiresAt)) best = token
  }
  return best
}

/** A requested scope set, normalized once: its cache key and the scopes the key names. */
interface ScopeQuery {
  /** A copy of the scopes it was made from, to notice an array changed in place since. */
  readonly scopes: readonly string[]
  /** {@link scopeKey} of them. */
  readonly key: string
  /** The key's scopes (sign-in scopes left out). */
  readonly wanted: readonly string[]
}

/**
 * Normalized scope sets by the caller's array: a service asks with the same array every time
 * (issue 17: the in-memory hit is ~1 µs, and filtering, sorting and joining it each call was a
 * third of that). Weak, so an array the caller drops is dropped here too.
 */
const scopeQueries = new WeakMap<readonly string[], ScopeQuery>()

function scopeQuery(scopes: readonly string[]): ScopeQuery {
  const known = scopeQueries.get(scopes)
  // The caller's array may have been changed in place since: the copy says whether it still holds.
  if (known !== undefined && sameList(known.scopes, scopes)) return known
  const key = scopeKey(scopes)
  const query: ScopeQuery = Object.freeze({
    scopes: Object.freeze([...scopes]),
    key,
    wanted: Object.freeze(key === '' ? [] : key.split(' ')),
  })
  scopeQueries.set(scopes, query)
  return query
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function includesAll(granted: readonly string[], wanted: readonly string[]): boolean {
  for (const scope of wanted) if (!granted.includes(scope)) return false
  return true
}

/**
 * {@link accountKey} by authority and client id, so a hit does not normalise and JSON-encode the
 * pair each call. Bounded: a process with more pairs than this (a multi-tenant service) starts over.
 */
const accountKeys = new Map<string, Map<string, string>>()
const MAX_ACCOUNT_KEYS = 256
let accountKeyCount = 0

function memoAccountKey(authority: string, clientId: string): string {
  let byClient = accountKeys.get(authority)
  const known = byClient?.get(clientId)
  if (known !== undefined) return known
  if (accountKeyCount >= MAX_ACCOUNT_KEYS) {
    accountKeys.clear()
    accountKeyCount = 0
    byClient = undefined
  }
  if (byClient === undefined) {
    byClient = new Map()
    accountKeys.set(authority, byClient)
  }
  const key = accountKey(authority, clientId)
  byClient.set(clientId, key)
  accountKeyCount += 1
  return key
}

/**
 * The expiry margin of a token: `marginSeconds`, but at most half its lifetime.
 *
 * @param token - the cached token.
 * @param marginSeconds - the configured margin.
 * @returns milliseconds.
 */
export function marginMs(token: AccessTokenEntry, marginSeconds: number): number {
  const lifetime = Math.max(0, token.expiresAt - token.obtainedAt)
  return Math.min(marginSeconds * 1000, lifetime / 2)
}

/**
 * Whether the token is good enough to return without a refresh: more than the margin (capped at
 * half its lifetime) and `minTtlSeconds` left, and (unless told otherwise) not past `refresh_in`.
 *
 * @param token - the cached token.
 * @param now - epoch ms.
 * @param marginSeconds - the expiry margin.
 * @param minTtlSeconds - the caller's minimum remaining lifetime.
 * @param honourRefreshIn - whether Entra ID's `refresh_in` counts. Default true.
 * @returns true when it may be returned as is.
 */
export function usable(
  token: AccessTokenEntry,
  now: number,
  marginSeconds: number,
  minTtlSeconds: number,
  honourRefreshIn = true,
): boolean {
  const needMs = Math.max(marginMs(token, marginSeconds), minTtlSeconds * 1000)
  if (token.expiresAt - now <= needMs) return false
  return !(honourRefreshIn && token.refreshAt !== undefined && now >= token.refreshAt)
}

/**
 * The answer of silent acquisition for a cached or fresh token; the DPoP key is not enumerable.
 *
 * @param token - the token.
 * @param fromCache - whether no token request was made.
 * @param now - epoch ms.
 * @param minTtlSeconds - the caller's wish (a warning when the token cannot meet it).
 * @param dpopKey - the key a DPoP-bound token goes with.
 * @returns a new result.
 */
export function result(
  token: AccessTokenEntry,
  fromCache: boolean,
  now: number,
  minTtlSeconds: number,
  dpopKey?: DPoPKeyRecord,
): SilentTokenResult {
  const out: SilentTokenResult = {
    accessToken: token.token,
    expiresAt: token.expiresAt,
    scopes: [...token.scopes],
    fromCache,
    tokenType: token.tokenType ?? 'Bearer',
  }
  // Not enumerable: a result logged or serialised whole never shows the private key.
  if (token.tokenType === 'DPoP' && dpopKey !== undefined) {
    Object.defineProperty(out, 'dpopKey', { value: dpopKey, enumerable: false })
  }
  const remaining = Math.floor((token.expiresAt - now) / 1000)
  if (minTtlSeconds > 0 && remaining < minTtlSeconds) {
    out.warning = `the authorization server issued a token valid for ${Math.max(0, remaining)} s, less than the ${minTtlSeconds} s asked for`
  }
  return out
}

/** What a token must have left to be handed out when its early refresh failed, at most, ms. */
const STILL_VALID_MS = 30_000

/**
 * Whether a token whose early refresh failed may still be handed out: it has `minTtlSeconds` left
 * and at least 30 s (a quarter of its lifetime for shorter tokens), enough for the request it is for.
 *
 * @param token - the cached token.
 * @param now - epoch ms.
 * @param minTtlSeconds - what the caller asked for.
 * @returns true when it may be handed out.
 */
export function stillValid(token: AccessTokenEntry, now: number, minTtlSeconds: number): boolean {
  const lifetime = Math.max(0, token.expiresAt - token.obtainedAt)
  return token.expiresAt - now > Math.max(minTtlSeconds * 1000, Math.min(STILL_VALID_MS, lifetime / 4))
}

/**
 * Saves a sign-in: the account, its refresh token and the first access token. Replaces whatever was
 * stored for the same (authority, client id) and clears the sign-in-required mark.
 *
 * @param store - the opened store.
 * @param options - identity, account, token response, requested scopes.
 * @returns when the store is durably written.
 */
export async function saveSignIn(store: TokenStore, options: SaveSignInOptions): Promise<void> {
  const requestedAt = options.requestedAt ?? Date.now()
  const authority = normalizeAuthority(options.authority)
  await store.withLock(
    async () => {
      const doc = await store.read()
      const entry: AccountEntry = {
        authority,
        clientId: options.clientId,
        account: accountInfo(options.account, authority),
        needsSignIn: false,
        scopes: [...options.requestedScopes],
        accessTokens: [],
        updatedAt: Date.now(),
      }
      if (options.tokenSet.refreshToken) entry.refreshToken = options.tokenSet.refreshToken
      if (options.tokenSet.idTokenClaims) entry.idTokenClaims = { ...options.tokenSet.idTokenClaims }
      addToken(entry, tokenEntry(options.tokenSet, options.requestedScopes, requestedAt))
      const key = accountKey(authority, options.clientId)
      doc.accounts[key] = entry
      // Tokens of a sign-in without DPoP are bearer tokens: an older key must not sign their refreshes.
      if (options.dpopKey !== undefined) doc.dpopKeys = { ...doc.dpopKeys, [key]: options.dpopKey }
      else if (doc.dpopKeys?.[key] !== undefined) delete doc.dpopKeys[key]
      // The pending device sign-in (if any) is done: dropped in the same write (issue 14).
      if (doc.pendingSignIns?.[key] !== undefined) delete doc.pendingSignIns[key]
      await store.write(doc)
    },
    { signal: options.signal },
  )
}

/** Options of {@link cachedTokenResult}: the freshness part of {@link AcquireTokenSilentOptions}. */
export type CachedTokenOptions = Pick<
  AcquireTokenSilentOptions,
  'authority' | 'clientId' | 'scopes' | 'minTtlSeconds' | 'expiryMarginSeconds' | 'now'
>

/**
 * The answer of silent acquisition that needs no refresh: the cached token for these scopes, when
 * it is good enough (the expiry margin, `minTtlSeconds`, `refresh_in`). No lock, no write, no network.
 *
 * @param doc - the store's document, as read.
 * @param options - identity, scopes and freshness wishes.
 * @returns the token, or undefined when no account is stored or a refresh is needed.
 */
export function cachedTokenResult(
  doc: StoreDocument,
  options: CachedTokenOptions,
): SilentTokenResult | undefined {
  // The hot path of TokenStoreMemo (a hit per API call): no key built twice, no closure, one clock read.
  const key = memoAccountKey(options.authority, options.clientId)
  const entry = doc.accounts[key]
  if (!entry) return undefined
  const cached = pick(entry, options.scopes)
  if (cached === undefined) return undefined
  const at = (options.now ?? Date.now)()
  const minTtl = Math.max(0, options.minTtlSeconds ?? 0)
  if (!usable(cached, at, options.expiryMarginSeconds ?? DEFAULT_EXPIRY_MARGIN_SECONDS, minTtl))
    return undefined
  return result(cached, true, at, minTtl, cached.tokenType === 'DPoP' ? doc.dpopKeys?.[key] : undefined)
}

/**
 * Returns a valid access token: the cached one when it is good enough (no network, no lock), else
 * one refresh under the store lock. Inside the lock the store is read again: another caller (here
 * or in another process) may have refreshed meanwhile, and with `forceRefresh` a refresh that
 * started after this call counts as fresh. A rotated refresh token is written durably before the
 * access token is returned; `invalid_grant` (ERR_SIGNIN_REQUIRED from `refresh`) marks the account
 * as needing sign-in without deleting it. Before the refresh request, room for the save is reserved
 * on disk ({@link TokenStore.reserveWrite}): with a full disk no request is sent.
 *
 * @param store - the opened store.
 * @param options - identity, scopes, freshness wishes and the refresh function.
 * @returns the token, its expiry and scopes, and a warning when `minTtlSeconds` cannot be met or
 *   the refresh response came with one.
 * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when no account or no usable refresh token is stored;
 *   whatever `refresh` throws (ERR_UNAVAILABLE, ERR_OAUTH, ...); StoreError when the store does not open,
 *   and StoreError `ERR_IO` (no request sent, the refresh token kept) when the disk is full.
 */
export async function acquireTokenSilent(
  store: TokenStore,
  options: AcquireTokenSilentOptions,
): Promise<SilentTokenResult> {
  const now = options.now ?? Date.now
  const callStartedAt = now()
  const margin = options.expiryMarginSeconds ?? DEFAULT_EXPIRY_MARGIN_SECONDS
  const minTtl = Math.max(0, options.minTtlSeconds ?? 0)
  const key = accountKey(options.authority, options.clientId)

  const { machine } = options
  const first = await store.read()
  if (!first.accounts[key] && !machine) throw notSignedIn()
  if (!options.forceRefresh) {
    const hit = cachedTokenResult(first, options)
    if (hit) return hit
  }

  return store.withLock(
    async () => {
      const doc = await store.read()
      const stored = doc.accounts[key]
      let dpopKey = doc.dpopKeys?.[key]
      if (!stored && !machine) throw notSignedIn()
      const cached = stored ? pick(stored, options.scopes) : undefined
      if (cached) {
        if (!options.forceRefresh && usable(cached, now(), margin, minTtl))
          return result(cached, true, now(), minTtl, dpopKey)
        // Someone refreshed after this call began: that is as fresh as a refresh of our own.
        if (options.forceRefresh && cached.obtainedAt >= callStartedAt)
          return result(cached, true, now(), minTtl, dpopKey)
      }
      // A machine acquires again even after a rejection: its credential may have been replaced.
      const refreshToken = stored?.refreshToken
      if (!machine && (!stored || stored.needsSignIn || !refreshToken)) throw signInAgain()

      // Room for the answer before the request (issue 11 #4): once the IdP answers, the old refresh
      // token is spent, so a save failing for want of space would cost the device its sign-in. A
      // full disk fails here instead, with the refresh token unsent and kept.
      let room: StoreWriteReservation | undefined
      try {
        room = await store.reserveWrite?.()
      } catch (err) {
        // Only refresh_in asked for this refresh and the token is still good: keep using it.
        if (!options.forceRefresh && cached && usable(cached, now(), margin, minTtl, false))
          return result(cached, true, now(), minTtl, dpopKey)
        throw err
      }
      const save = (d: StoreDocument): Promise<void> => (room ? room.write(d) : store.write(d))
      try {
        const requestedAt = now()
        let tokenSet: TokenSet
        let entry: AccountEntry
        let rebound = false
        try {
          if (machine) {
            const acquired = await machine.acquire(options.scopes, { dpopKey })
            tokenSet = acquired.tokenSet
            entry = machineEntry(stored, machine.grant, acquired.account, options)
            doc.accounts[key] = entry
            if (acquired.dpopKey?.jkt !== dpopKey?.jkt) {
              // Another key (or none): tokens bound to the old one cannot be presented any more.
              entry.accessTokens = []
              rebound = true
              dpopKey = acquired.dpopKey
              if (dpopKey !== undefined) doc.dpopKeys = { ...doc.dpopKeys, [key]: dpopKey }
              else delete doc.dpopKeys?.[key]
            }
          } else {
            if (!options.refresh || !stored || !refreshToken) throw signInAgain()
            entry = stored
            tokenSet = await options.refresh(refreshToken, options.scopes, {
              dpopKey,
              idTokenClaims: stored.idTokenClaims,
            })
          }
        } catch (err) {
          if (isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED') && stored) {
            // The refresh token (or the machine's credential) is dead: keep the account (status
            // shows who must sign in), drop the token.
            stored.needsSignIn = true
            delete stored.refreshToken
            stored.updatedAt = Date.now()
            await save(doc)
            throw err
          }
          // The refresh was early (the margin, refresh_in) and the token still has a while to live:
          // keep using it rather than fail a caller while the IdP or the network is down.
          if (!options.forceRefresh && cached && stillValid(cached, now(), minTtl)) {
            const out = result(cached, true, now(), minTtl, dpopKey)
            out.warning = `the early refresh failed (${err instanceof Error ? err.message : 'unknown error'}); the cached token is still valid`
            return out
          }
          throw err
        }
        if (tokenSet.refreshToken) entry.refreshToken = tokenSet.refreshToken
        if (tokenSet.idTokenClaims) entry.idTokenClaims = { ...tokenSet.idTokenClaims }
        const fresh = tokenEntry(tokenSet, options.scopes, requestedAt)
        addToken(entry, fresh)
        entry.updatedAt = Date.now()
        // Durable before returning: with rotation, the old refresh token is now spent.
        await save(doc)
        // A refresh done because the token was due (the margin, minTtlSeconds, refresh_in) hands
        // out whichever lives longer; a forced one (--force-refresh, a 401, a claims challenge)
        // asked for a new token because the old one is refused or non-compliant: never hand that back.
        const freshest =
          !options.forceRefresh && cached && !rebound && cached.expiresAt > fresh.expiresAt ? cached : fresh
        const out = result(freshest, freshest !== fresh, now(), minTtl, dpopKey)
        // E.g. the id_token of a refresh could not be verified and was dropped (the tokens are kept).
        if (tokenSet.warning)
          out.warning = out.warning ? `${tokenSet.warning}; ${out.warning}` : tokenSet.warning
        return out
      } finally {
        await room?.release()
      }
    },
    { signal: options.signal },
  )
}

/**
 * The account entry after a machine's acquisition: the stored one, cleared of a rejection, or a
 * new one when there was none or it was a user's sign-in under the same client id.
 */
function machineEntry(
  stored: AccountEntry | undefined,
  grant: MachineAcquisition['grant'],
  account: Account,
  options: AcquireTokenSilentOptions,
): AccountEntry {
  const authority = normalizeAuthority(options.authority)
  if (stored && stored.grant === grant) {
    stored.needsSignIn = false
    stored.account = accountInfo(account, authority)
    return stored
  }
  return {
    authority,
    clientId: options.clientId,
    account: accountInfo(account, authority),
    needsSignIn: false,
    grant,
    scopes: [...options.scopes],
    accessTokens: [],
    updatedAt: Date.now(),
  }
}

/**
 * Reads the account's state for `status` (no lock, no network).
 *
 * @param store - the opened store.
 * @param identity - which account; when omitted, the first stored one.
 * @returns the account, whether it is signed in, and the latest access-token expiry.
 */
export async function readAccountStatus(
  store: TokenStore,
  identity?: AccountIdentity,
): Promise<AccountStatus> {
  const doc = await store.read()
  const entry = identity
    ? doc.accounts[accountKey(identity.authority, identity.clientId)]
    : Object.values(doc.accounts)[0]
  if (!entry) return { account: null, signedIn: false, needsSignIn: false, accessTokenExpiresAt: null }
  const latest = entry.accessTokens.reduce<number | null>(
    (max, t) => (max === null || t.expiresAt > max ? t.expiresAt : max),
    null,
  )
  return {
    account: { ...entry.account },
    // A machine's account renews itself with its credential: signed in until that is rejected.
    signedIn: !entry.needsSignIn && (entry.refreshToken !== undefined || entry.grant !== undefined),
    needsSignIn: entry.needsSignIn,
    accessTokenExpiresAt: latest,
  }
}

/**
 * The stored refresh token of an account (for revocation at logout).
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @returns the refresh token, or undefined. Secret.
 */
export async function readRefreshToken(
  store: TokenStore,
  identity: AccountIdentity,
): Promise<string | undefined> {
  return (await store.read()).accounts[accountKey(identity.authority, identity.clientId)]?.refreshToken
}

/**
 * Removes an account and all its tokens.
 *
 * @param store - the opened store.
 * @param identity - which account.
 * @param options - a signal to stop waiting for the lock.
 * @returns whether an account was removed.
 */
export async function removeAccount(
  store: TokenStore,
  identity: AccountIdentity,
  options: { signal?: AbortSignal | undefined } = {},
): Promise<boolean> {
  const key = accountKey(identity.authority, identity.clientId)
  return store.withLock(
    async () => {
      const doc: StoreDocument = await store.read()
      if (!(key in doc.accounts)) return false
      delete doc.accounts[key]
      // The next sign-in starts with a new DPoP key: nothing bound to this one is worth keeping.
      if (doc.dpopKeys) delete doc.dpopKeys[key]
      if (doc.pendingSignIns) delete doc.pendingSignIns[key]
      await store.write(doc)
      return true
    },
    { signal: options.signal },
  )
}
