/**
 * Opening the configured token store from a command: only when the state directory already holds
 * one, since opening generates a key file and `status`, `logout` or a `token` on a signed-out
 * machine must not leave one behind.
 */
import type { EdgeTokenConfig } from '../config/types.js'
import { EdgeTokenError } from '../errors.js'
import { openTokenStore, type TokenStore, tokenStoreExists } from '../store/token-store.js'

/**
 * Opens the configured store if it exists.
 *
 * @param config - the configuration's state directory and key file.
 * @param env - the environment (key file, credentials directory, machine-id file).
 * @param onWarning - receives the store's one-line warnings (a key file readable by others).
 * @returns the store, or undefined when there is none (never signed in, or logged out).
 * @throws as `openTokenStore` (ConfigError for a bad key file or state directory, StoreError).
 */
export async function openExistingStore(
  config: Pick<EdgeTokenConfig, 'stateDir' | 'keyFile'>,
  env: NodeJS.ProcessEnv,
  onWarning: ((line: string) => void) | undefined,
): Promise<TokenStore | undefined> {
  if (!tokenStoreExists(config.stateDir)) return undefined
  return openTokenStore({ stateDir: config.stateDir, env, keyFile: config.keyFile, onWarning })
}

/**
 * Opens the configured store, which must exist: the caller needs a signed-in account.
 *
 * @param config - the configuration's state directory and key file.
 * @param env - the environment.
 * @param onWarning - receives the store's one-line warnings.
 * @returns the store.
 * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` (exit 3) when there is no store; as
 *   {@link openExistingStore} otherwise.
 */
export async function openSignedInStore(
  config: Pick<EdgeTokenConfig, 'stateDir' | 'keyFile'>,
  env: NodeJS.ProcessEnv,
  onWarning: ((line: string) => void) | undefined,
): Promise<TokenStore> {
  const store = await openExistingStore(config, env, onWarning)
  if (!store) throw new EdgeTokenError('ERR_SIGNIN_REQUIRED', "not signed in: run 'edgetoken login'")
  return store
}
