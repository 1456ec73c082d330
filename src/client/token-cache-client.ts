/**
 * What both library clients do with their token cache's accounts (issue 18), in one place: the
 * accounts a cache holds, one of them by id, and forgetting one. Silent acquisition stays in each
 * client, which binds the refresh to its own credential.
 *
 * @packageDocumentation
 */
import type { Account } from '../oauth/types.js'
import type { TokenCacheEngine } from '../store/partitions/silent.js'

/**
 * The account methods of {@link PublicClient} and {@link ConfidentialClient} (MSAL's
 * `get_accounts`, `remove_account`).
 */
export abstract class TokenCacheClient {
  /**
   * The client's partitioned cache engine.
   *
   * @internal
   */
  protected readonly tokens: TokenCacheEngine

  /**
   * @param tokens - the engine over the client's `cache`.
   */
  protected constructor(tokens: TokenCacheEngine) {
    this.tokens = tokens
  }

  /**
   * The accounts signed in through this client (a device flow, an authorization code) that the
   * token cache still holds (with a shared cache: signed in on any instance), including those
   * whose refresh token was rejected.
   *
   * @returns the accounts, in no particular order.
   * @example
   * ```ts
   * const accounts = await app.getAccounts()
   * ```
   */
  getAccounts(): Promise<Account[]> {
    return this.tokens.getAccounts()
  }

  /**
   * One cached account by its id (what a web app keeps in its session).
   *
   * @param id - `Account.id` (Entra ID `uid.utid`, else the id_token `sub`).
   * @returns the account, or undefined when the cache holds none (never signed in, removed, expired).
   * @example
   * ```ts
   * const account = await app.getAccount(session.accountId)
   * ```
   */
  getAccount(id: string): Promise<Account | undefined> {
    return this.tokens.getAccount(id)
  }

  /**
   * Forgets an account and its tokens in the token cache (sign-out; nothing is revoked).
   *
   * @param account - the account or its id.
   * @example
   * ```ts
   * await app.removeAccount(session.accountId)
   * ```
   */
  removeAccount(account: Account | string): Promise<void> {
    return this.tokens.removeAccount(account)
  }
}
