/**
 * An in-memory front of silent acquisition for long-running library users (a gateway service that
 * asks for a token before every request): a hit is answered from the last document read, with no
 * file read, decryption, lock or network — about a microsecond instead of the ~20 µs of
 * {@link acquireTokenSilent} over the file store. A miss (no usable token for these scopes, or
 * `forceRefresh`) goes through {@link acquireTokenSilent} unchanged: the lock, the re-read, one
 * refresh across processes, the durable save; then the document is read again into memory.
 *
 * The freshness rule is {@link cachedTokenResult}'s (expiry margin, `minTtlSeconds`, `refresh_in`),
 * so a hit here is exactly what the file store would have answered from the same document.
 */

import {
  type AccountIdentity,
  type AcquireTokenSilentOptions,
  acquireTokenSilent,
  cachedTokenResult,
  type SilentTokenResult,
} from './cache.js'
import type { StoreDocument } from './document.js'
import type { TokenStore } from './token-store.js'

/** Options of {@link TokenStoreMemo}: what stays the same for every call. */
export interface TokenStoreMemoOptions
  extends AccountIdentity,
    Pick<AcquireTokenSilentOptions, 'refresh' | 'machine' | 'expiryMarginSeconds' | 'now'> {}

/** Options of {@link TokenStoreMemo.acquireTokenSilent}: what may change per call. */
export type TokenStoreMemoAcquireOptions = Pick<
  AcquireTokenSilentOptions,
  'scopes' | 'minTtlSeconds' | 'forceRefresh' | 'signal'
>

/**
 * Silent acquisition with the last-read token document kept in memory.
 *
 * Limits: a sign-out or a forced refresh in another process is seen at this process's next miss
 * (an access token stays valid until it expires, so a hit is still a good token); call
 * {@link TokenStoreMemo.clear} to drop the memory at once. The document in memory holds the
 * refresh token, as the process did during any refresh.
 *
 * @example
 * ```ts
 * const tokens = new TokenStoreMemo(store, { authority, clientId, refresh })
 * const { accessToken } = await tokens.acquireTokenSilent({ scopes: ['api://telemetry/.default'] })
 * ```
 */
export class TokenStoreMemo {
  readonly #store: TokenStore
  readonly #options: Readonly<TokenStoreMemoOptions>
  #doc: StoreDocument | undefined

  /**
   * @param store - the opened token store (e.g. {@link openTokenStore}).
   * @param options - the account (authority, client id), the refresh function or machine
   *   acquisition, the expiry margin and the clock, as for {@link acquireTokenSilent}.
   */
  constructor(store: TokenStore, options: TokenStoreMemoOptions) {
    this.#store = store
    this.#options = Object.freeze({ ...options })
  }

  /**
   * The token in memory for these scopes, when it is good enough; never reads, locks or refreshes.
   *
   * @param options - scopes and `minTtlSeconds`.
   * @returns the token (`fromCache: true`), or undefined when the next
   *   {@link TokenStoreMemo.acquireTokenSilent} must go to the store.
   */
  peek(
    options: Pick<TokenStoreMemoAcquireOptions, 'scopes' | 'minTtlSeconds'>,
  ): SilentTokenResult | undefined {
    const doc = this.#doc
    if (doc === undefined) return undefined
    const o = this.#options
    return cachedTokenResult(doc, {
      authority: o.authority,
      clientId: o.clientId,
      scopes: options.scopes,
      minTtlSeconds: options.minTtlSeconds,
      expiryMarginSeconds: o.expiryMarginSeconds,
      now: o.now,
    })
  }

  /**
   * Returns a valid access token: from memory when good enough, else as {@link acquireTokenSilent}
   * (which may refresh, once across processes), keeping the document it leaves in memory.
   *
   * @param options - scopes, `minTtlSeconds`, `forceRefresh`, `signal`.
   * @returns the token, its expiry and scopes, and any warning.
   * @throws whatever {@link acquireTokenSilent} throws (`ERR_SIGNIN_REQUIRED`, `ERR_UNAVAILABLE`,
   *   StoreError...); the memory is then left as it was.
   */
  async acquireTokenSilent(options: TokenStoreMemoAcquireOptions): Promise<SilentTokenResult> {
    if (options.forceRefresh !== true) {
      this.#doc ??= await this.#store.read()
      const hit = this.peek(options)
      if (hit !== undefined) return hit
    }
    const result = await acquireTokenSilent(this.#store, { ...this.#options, ...options })
    // What the store holds now: our refresh, or a newer one another process saved meanwhile.
    this.#doc = await this.#store.read()
    return result
  }

  /** Forgets the document in memory: the next call reads the store again. */
  clear(): void {
    this.#doc = undefined
  }
}
