/**
 * The `managed_identity` way in for the CLI and the daemon: the library's
 * {@link ManagedIdentityClient} (Azure Arc, else the instance metadata service), one token per
 * acquisition, with the account named after the identity.
 *
 * @packageDocumentation
 */
import { ManagedIdentityClient } from '../client/managed-identity-client.js'
import { MANAGED_IDENTITY_AUTHORITY } from '../config/load.js'
import type { ManagedIdentityConfig } from '../config/types.js'
import { ConfigError } from '../errors.js'
import { isNonEmptyString, isObject, parseJson } from '../lib/validate.js'
import type { MachineAcquisition } from '../store/cache.js'

/**
 * The `oid` of a managed identity's access token, for the account's name only: it is never
 * trusted for anything else (the token is for the resource to verify, not for us), so reading
 * the payload without verifying its signature is harmless here.
 */
function objectIdOf(accessToken: string): string | undefined {
  const payload = accessToken.split('.')[1]
  if (payload === undefined) return undefined
  const claims = parseJson(Buffer.from(payload, 'base64url').toString('utf8'))
  const oid = isObject(claims) ? claims.oid : undefined
  return isNonEmptyString(oid) && /^[A-Za-z0-9-]{1,64}$/.test(oid) ? oid : undefined
}

/** Options of {@link managedIdentityAcquisition}. */
export interface ManagedIdentityAcquisitionOptions {
  /** The `managedIdentity` configuration. */
  identity: ManagedIdentityConfig
  /** The environment (`IDENTITY_ENDPOINT`, `IMDS_ENDPOINT`, `AZURE_POD_IDENTITY_AUTHORITY_HOST`). */
  env: NodeJS.ProcessEnv
  /** Cancels the requests. */
  signal?: AbortSignal | undefined
  /** The trusted Arc challenge directory: tests only (see {@link ManagedIdentityClient}). */
  arcTokenDirectory?: string | undefined
}

/**
 * The token cache's acquisition for `managed_identity`: one resource (the configured one, or a
 * `--scope`), the account id the token's `oid` when it has one, else the client id or
 * `system-assigned`.
 *
 * @param options - identity, environment, signal.
 * @returns the acquisition.
 */
export function managedIdentityAcquisition(options: ManagedIdentityAcquisitionOptions): MachineAcquisition {
  return {
    grant: 'managed_identity',
    acquire: async (scopes) => {
      const [resource, ...rest] = scopes
      if (resource === undefined || rest.length > 0) {
        throw new ConfigError('a managed identity token is for exactly one resource: give one --scope', {
          key: 'scope',
          code: 'ERR_USAGE',
        })
      }
      const client = new ManagedIdentityClient({
        clientId: options.identity.clientId,
        env: options.env,
        arcTokenDirectory: options.arcTokenDirectory,
      })
      const tokenSet = await client.acquireTokenForClient({
        resource,
        forceRefresh: true,
        signal: options.signal,
      })
      const id = objectIdOf(tokenSet.accessToken) ?? options.identity.clientId ?? 'system-assigned'
      return { tokenSet, account: { id, issuer: MANAGED_IDENTITY_AUTHORITY } }
    },
  }
}
