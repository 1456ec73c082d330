/**
 * The decrypted token store document: its shape and a hand-written validator (no ajv: it runs on
 * the cached `token` path), used both after decrypting and before writing.
 */
import { StoreError } from '../errors.js'
import { isFiniteNumber, isNonEmptyString, isObject } from '../lib/validate.js'
import type { DPoPKeyRecord } from '../oauth/dpop.js'
import type { SavedDeviceAuthorization } from '../oauth/grants/device.js'

/** One cached access token. */
export interface AccessTokenEntry {
  /** The requested scope set it answers, normalized (see {@link scopeKey}). */
  key: string
  /** The scopes granted. */
  scopes: string[]
  /** The access token. Secret. */
  token: string
  /** Expiry, epoch ms. */
  expiresAt: number
  /** When the request that obtained it started, epoch ms. */
  obtainedAt: number
  /** Entra ID `refresh_in`: when to refresh proactively, epoch ms. */
  refreshAt?: number
  /** `DPoP` for a token bound to the account's DPoP key (RFC 9449); absent: Bearer. */
  tokenType?: 'DPoP'
}

/** The account as stored. */
export interface StoredAccountInfo {
  id: string
  username?: string
  tenant?: string
  issuer: string
}

/** Everything cached for one (authority, client id). */
export interface AccountEntry {
  authority: string
  clientId: string
  account: StoredAccountInfo
  /** The refresh token. Secret. Absent when the IdP issued none or rejected it. */
  refreshToken?: string
  /** The refresh token was rejected (`invalid_grant`): the user must sign in again. */
  needsSignIn: boolean
  /**
   * Set for a machine with no user: its tokens are re-acquired with its own credential (client
   * credentials) or identity (managed identity), never refreshed. `needsSignIn` then means the
   * credential was rejected.
   */
  grant?: 'client_credentials' | 'managed_identity'
  /** Verified id_token claims from the last response that had one. */
  idTokenClaims?: Record<string, unknown>
  /** Scopes requested at sign-in. */
  scopes: string[]
  /** Access tokens per scope set, newest last. */
  accessTokens: AccessTokenEntry[]
  /** Last change, epoch ms. */
  updatedAt: number
}

/**
 * A device sign-in still waiting for approval (issue 14): resumed by the next `login` or `run`
 * until it expires. Secret: it holds the device code.
 */
export interface PendingSignIn {
  /** The device authorization, with its device code and the interval in force. */
  flow: SavedDeviceAuthorization
  /** When the flow was started, epoch ms. */
  startedAt: number
}

/** The whole decrypted store. */
export interface StoreDocument {
  v: 1
  accounts: Record<string, AccountEntry>
  /**
   * The DPoP key of each account (RFC 9449), by {@link accountKey}: kept apart from the account
   * entry because it exists before the first sign-in (the device code's token request is bound
   * to it) and outlives a sign-in that replaces the entry. Secret.
   */
  dpopKeys?: Record<string, DPoPKeyRecord>
  /** Device sign-ins in progress, by {@link accountKey}. Secret. */
  pendingSignIns?: Record<string, PendingSignIn>
  /**
   * The library's partitioned token cache when it lives in this file (`FileTokenCache`, issue
   * 18), by partition key. Each value is checked in full when read (`isCachePartition`); only
   * the envelope is checked here, so the CLI's cached path loads nothing more. Secret.
   */
  partitions?: Record<string, StoredPartition>
}

/** One partition of the library's token cache as kept in the store file. */
export interface StoredPartition {
  /** Changes with every write (compare-and-set). */
  version: string
  /** When the partition may be dropped, epoch ms. */
  expiresAt?: number
  /** The partition (a `CachePartition`, validated when read). */
  value: Record<string, unknown>
}

/** Scopes that describe the sign-in, not the access token; ignored when matching scope sets. */
const SIGN_IN_SCOPES = new Set(['openid', 'profile', 'email', 'offline_access'])

/**
 * The cache key of a requested scope set: sorted, de-duplicated, without OIDC sign-in scopes.
 *
 * @param scopes - requested scopes.
 * @returns a stable string key.
 */
export function scopeKey(scopes: readonly string[]): string {
  return [...new Set(scopes.filter((s) => !SIGN_IN_SCOPES.has(s)))].sort().join(' ')
}

/**
 * The key of an account entry in {@link StoreDocument.accounts}.
 *
 * @param authority - the authority URL (a trailing slash is ignored).
 * @param clientId - the client id.
 * @returns the key.
 */
export function accountKey(authority: string, clientId: string): string {
  return JSON.stringify([normalizeAuthority(authority), clientId])
}

/**
 * An authority URL without trailing slashes, so `https://idp/` and `https://idp` are one account.
 *
 * @param authority - the authority URL.
 * @returns the normalized URL text.
 */
export function normalizeAuthority(authority: string): string {
  return authority.replace(/\/+$/, '')
}

/** An empty document. */
export function emptyDocument(): StoreDocument {
  return { v: 1, accounts: {} }
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((s) => typeof s === 'string')
}

/**
 * Whether a value has the shape of an {@link AccessTokenEntry} (also used by the partitioned cache).
 *
 * @param value - anything.
 * @returns true when it does.
 */
export function isAccessTokenEntry(value: unknown): value is AccessTokenEntry {
  return (
    isObject(value) &&
    typeof value.key === 'string' &&
    isStringArray(value.scopes) &&
    isNonEmptyString(value.token) &&
    isFiniteNumber(value.expiresAt) &&
    isFiniteNumber(value.obtainedAt) &&
    (value.refreshAt === undefined || isFiniteNumber(value.refreshAt)) &&
    (value.tokenType === undefined || value.tokenType === 'DPoP')
  )
}

function checkDPoPKey(value: unknown): value is DPoPKeyRecord {
  return (
    isObject(value) &&
    isNonEmptyString(value.alg) &&
    isNonEmptyString(value.jkt) &&
    isObject(value.privateJwk) &&
    isNonEmptyString(value.privateJwk.kty) &&
    isNonEmptyString(value.privateJwk.d)
  )
}

function checkPending(value: unknown): value is PendingSignIn {
  if (!isObject(value) || !isFiniteNumber(value.startedAt)) return false
  const flow = value.flow
  return (
    isObject(flow) &&
    isNonEmptyString(flow.deviceCode) &&
    isNonEmptyString(flow.userCode) &&
    isNonEmptyString(flow.verificationUri) &&
    (flow.verificationUriComplete === undefined || isNonEmptyString(flow.verificationUriComplete)) &&
    isFiniteNumber(flow.expiresAt) &&
    isFiniteNumber(flow.intervalSeconds) &&
    (flow.message === undefined || typeof flow.message === 'string') &&
    isStringArray(flow.scopes)
  )
}

function checkMap<T>(value: unknown, check: (entry: unknown) => entry is T): boolean {
  return value === undefined || (isObject(value) && Object.values(value).every(check))
}

function checkPartition(value: unknown): value is StoredPartition {
  return (
    isObject(value) &&
    isNonEmptyString(value.version) &&
    (value.expiresAt === undefined || isFiniteNumber(value.expiresAt)) &&
    isObject(value.value)
  )
}

function checkEntry(value: unknown): value is AccountEntry {
  if (!isObject(value)) return false
  const account = value.account
  return (
    isNonEmptyString(value.authority) &&
    isNonEmptyString(value.clientId) &&
    isObject(account) &&
    isNonEmptyString(account.id) &&
    typeof account.issuer === 'string' &&
    (account.username === undefined || typeof account.username === 'string') &&
    (account.tenant === undefined || typeof account.tenant === 'string') &&
    (value.refreshToken === undefined || isNonEmptyString(value.refreshToken)) &&
    typeof value.needsSignIn === 'boolean' &&
    (value.grant === undefined ||
      value.grant === 'client_credentials' ||
      value.grant === 'managed_identity') &&
    (value.idTokenClaims === undefined || isObject(value.idTokenClaims)) &&
    isStringArray(value.scopes) &&
    Array.isArray(value.accessTokens) &&
    value.accessTokens.every(isAccessTokenEntry) &&
    isFiniteNumber(value.updatedAt)
  )
}

/**
 * Whether a value has the shape of a {@link StoreDocument}.
 *
 * @param value - anything.
 * @returns true when it does.
 */
export function isStoreDocument(value: unknown): value is StoreDocument {
  return (
    isObject(value) &&
    value.v === 1 &&
    isObject(value.accounts) &&
    Object.values(value.accounts).every(checkEntry) &&
    checkMap(value.dpopKeys, checkDPoPKey) &&
    checkMap(value.pendingSignIns, checkPending) &&
    checkMap(value.partitions, checkPartition)
  )
}

/**
 * Checks a decrypted document. An authenticated but malformed document means a bug or a store
 * written by an incompatible version: it fails closed like tampering.
 *
 * @param value - the parsed plaintext.
 * @param path - the store file, for the message.
 * @returns the document.
 * @throws StoreError when it does not have the expected shape.
 */
export function validateDocument(value: unknown, path: string): StoreDocument {
  if (isStoreDocument(value)) return value
  throw new StoreError(`token store ${path} holds a document this version cannot read`)
}
