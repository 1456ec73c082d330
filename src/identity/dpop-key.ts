/**
 * The account's DPoP key (RFC 9449) for every way in that talks to the token endpoint itself:
 * device code, authorization code (`login --browser`) and client credentials. One rule for all:
 * the `dpop` setting and the server's `dpop_signing_alg_values_supported` decide whether and with
 * which algorithm; a stored key of that algorithm is kept (one key per account, across
 * sign-ins), otherwise a new one is made. jose is loaded only when DPoP is used.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-5.1
 * @packageDocumentation
 */
import type { DPoPSetting } from '../config/types.js'
import { ConfigError } from '../errors.js'
import type { AuthorizationServer } from '../oauth/authority.js'
import type { DPoPHandle, DPoPKeyRecord } from '../oauth/dpop.js'

/**
 * Whether token requests to this server use DPoP, and with which algorithm.
 *
 * @param setting - the `dpop` setting: `auto` only when the server advertises
 *   `dpop_signing_alg_values_supported`, `true` always (ES256 when it advertises nothing), `false` never.
 * @param server - the authorization server (its advertised algorithms).
 * @param choose - the algorithm chooser (`chooseDPoPAlgorithm` of `oauth/dpop.js`).
 * @returns the algorithm, or undefined for no DPoP.
 * @throws ConfigError when `dpop` is true and the server lists only algorithms we cannot use.
 * @example
 * ```ts
 * const alg = dpopAlgorithm('auto', server, chooseDPoPAlgorithm)
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-5.1
 */
export function dpopAlgorithm(
  setting: DPoPSetting,
  server: AuthorizationServer,
  choose: (supported: readonly string[] | undefined) => string | undefined,
): string | undefined {
  if (setting === false) return undefined
  const advertised = server.dpopSigningAlgValues
  if (setting === 'auto' && advertised === undefined) return undefined
  const alg = choose(advertised)
  if (alg === undefined && setting === true) {
    throw new ConfigError(
      `dpop is true, but ${server.issuer} offers only DPoP algorithms edgetoken cannot use (${advertised?.join(', ')})`,
      { key: 'dpop' },
    )
  }
  return alg
}

/** An account's DPoP key with its signing handle, from {@link accountDPoPKey}. */
export interface AccountDPoPKey {
  /** The key record to save with the tokens it binds. Secret. */
  readonly key: DPoPKeyRecord
  /** Signs the proofs of the token requests. */
  readonly handle: DPoPHandle
}

/**
 * The DPoP key of an account's next token request: the stored one while the server still takes
 * its algorithm, else a new one (not saved here: the caller saves it with the tokens it binds,
 * in the same write).
 *
 * @param setting - the `dpop` setting (default `auto`).
 * @param server - the authorization server.
 * @param stored - the account's stored key, if any.
 * @returns the key and its handle, or undefined when DPoP is not used.
 * @throws ConfigError (`dpop` true with no usable algorithm); EdgeTokenError
 *   `ERR_STORE_UNREADABLE` when the stored key cannot be imported.
 * @example
 * ```ts
 * const dpop = await accountDPoPKey(config.dpop, server, await readDPoPKey(store, identity))
 * const tokens = await authorizationCodeGrant(server, client, { ...redemption, dpop: dpop?.handle })
 * await saveSignIn(store, { ...identity, account, tokenSet: tokens, requestedScopes, dpopKey: dpop?.key })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-4
 */
export async function accountDPoPKey(
  setting: DPoPSetting | undefined,
  server: AuthorizationServer,
  stored: DPoPKeyRecord | undefined,
): Promise<AccountDPoPKey | undefined> {
  if (setting === false) return undefined
  const dpop = await import('../oauth/dpop.js')
  const alg = dpopAlgorithm(setting ?? 'auto', server, dpop.chooseDPoPAlgorithm)
  if (alg === undefined) return undefined
  const key = stored !== undefined && stored.alg === alg ? stored : await dpop.generateDPoPKey(alg)
  return Object.freeze({ key, handle: await dpop.dpopHandle(key) })
}
