/**
 * The `client_credentials` way in for the CLI and the daemon: the configured credential files are
 * read for every acquisition (so a rotated secret, certificate or federated token is picked up
 * without a restart, and nothing of them stays in memory between renewals), handed to the
 * library's {@link ConfidentialClient}, and a token is acquired (RFC 6749 §4.4).
 *
 * The secret, the private key, its passphrase and the assertion are never written anywhere and
 * never appear in a message: errors name the file and the problem only.
 *
 * DPoP (RFC 9449) by the same `dpop` rule as a person's sign-in: the app's key is kept in the
 * encrypted store with its tokens (one per authority and client id) and proves every request, so
 * a copied access token is useless without it.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.4
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-5
 * @packageDocumentation
 */
import { open } from 'node:fs/promises'
import { ConfidentialClient, type ConfidentialClientOptions } from '../client/confidential-client.js'
import type { ClientCredentialConfig, DPoPSetting } from '../config/types.js'
import { ConfigError, OAuthServerError } from '../errors.js'
import type { MetadataCache } from '../oauth/types.js'
import type { MachineAcquisition } from '../store/cache.js'
import { accountDPoPKey } from './dpop-key.js'

/** Most bytes read from a credential file (a PEM chain of a few certificates fits easily). */
const MAX_CREDENTIAL_FILE_BYTES = 256 * 1024

/**
 * Reads one credential file, bounded; the message on failure names the key and the file.
 *
 * @param key - the config key (`clientCredential.secretFile`), for messages.
 * @param file - the absolute path.
 * @returns the content. Secret.
 */
async function readCredentialFile(key: string, file: string): Promise<string> {
  try {
    const handle = await open(file, 'r')
    try {
      const buffer = Buffer.alloc(MAX_CREDENTIAL_FILE_BYTES + 1)
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
      if (bytesRead > MAX_CREDENTIAL_FILE_BYTES) {
        throw new ConfigError(`config: ${key} ${file} is larger than 256 KiB`, { key })
      }
      return buffer.subarray(0, bytesRead).toString('utf8')
    } finally {
      await handle.close()
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    const why = code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied' : code
    throw new ConfigError(`config: cannot read ${key} ${file} (${why})`, { key, cause: err })
  }
}

/** One trailing newline stripped, as `echo secret > file` leaves one. */
function stripNewline(text: string): string {
  return text.replace(/\r?\n$/, '')
}

/**
 * Reads the configured credential files into a {@link ConfidentialClient} credential.
 *
 * @param config - the `clientCredential` configuration (paths only).
 * @returns the credential (secret material: keep it only as long as the request).
 * @throws ConfigError naming the key and file that cannot be read or is empty.
 */
export async function readClientCredential(
  config: ClientCredentialConfig,
): Promise<ConfidentialClientOptions['credential']> {
  if (config.secretFile !== undefined) {
    const clientSecret = stripNewline(
      await readCredentialFile('clientCredential.secretFile', config.secretFile),
    )
    if (clientSecret.length === 0) {
      throw new ConfigError(`config: clientCredential.secretFile ${config.secretFile} is empty`, {
        key: 'clientCredential.secretFile',
      })
    }
    return { clientSecret }
  }
  if (config.privateKeyFile !== undefined) {
    const [privateKey, certificate, passphrase] = await Promise.all([
      readCredentialFile('clientCredential.privateKeyFile', config.privateKeyFile),
      config.certificateFile === undefined
        ? undefined
        : readCredentialFile('clientCredential.certificateFile', config.certificateFile),
      config.privateKeyPassphraseFile === undefined
        ? undefined
        : readCredentialFile('clientCredential.privateKeyPassphraseFile', config.privateKeyPassphraseFile),
    ])
    return {
      privateKey,
      certificate,
      passphrase: passphrase === undefined ? undefined : stripNewline(passphrase),
      sendCertificateChain: config.sendCertificateChain,
    }
  }
  if (config.assertionFile !== undefined) return { clientAssertionFile: config.assertionFile }
  throw new ConfigError('config: clientCredential is not set', { key: 'clientCredential' })
}

/** Options of {@link clientCredentialAcquisition}. */
export interface ClientCredentialAcquisitionOptions {
  /** The authority. */
  authority: string
  /** The confidential client's id. */
  clientId: string
  /** The credential files. */
  credential: ClientCredentialConfig
  /** Where discovery documents are cached (the store's state directory). */
  metadataCache?: MetadataCache | undefined
  /** Cancels discovery and the token request. */
  signal?: AbortSignal | undefined
  /**
   * The `dpop` setting: `auto` (default) binds the tokens to the app's DPoP key when the IdP
   * advertises `dpop_signing_alg_values_supported`, `true` always, `false` never.
   */
  dpop?: DPoPSetting | undefined
}

/**
 * The token cache's acquisition for `client_credentials`: reads the credential, asks the token
 * endpoint, and reports a rejected credential (`invalid_client`) as "sign-in required" (exit 3),
 * the way a dead refresh token is reported, since both need a person to act.
 *
 * @param options - authority, client id, credential files, discovery cache, signal, `dpop` setting.
 * @returns the acquisition; the account is `{"id": clientId}`; with DPoP, the key the token is
 *   bound to (the stored one, or a new one to store with the token).
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.4
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-5
 */
export function clientCredentialAcquisition(options: ClientCredentialAcquisitionOptions): MachineAcquisition {
  return {
    grant: 'client_credentials',
    acquire: async (scopes, context) => {
      const app = new ConfidentialClient({
        authority: options.authority,
        clientId: options.clientId,
        credential: await readClientCredential(options.credential),
        metadataCache: options.metadataCache,
      })
      // jose and discovery only when DPoP may be used; the grant resolves the same (cached) server.
      const dpop =
        options.dpop === false
          ? undefined
          : await accountDPoPKey(options.dpop, await app.resolve(options.signal), context?.dpopKey)
      try {
        const tokenSet = await app.acquireTokenByClientCredentials({
          scopes,
          forceRefresh: true,
          signal: options.signal,
          dpop: dpop?.handle,
        })
        return {
          tokenSet,
          account: { id: options.clientId, issuer: options.authority },
          dpopKey: dpop?.key,
        }
      } catch (err) {
        // RFC 6749 §5.2: invalid_client = "client authentication failed": a revoked secret or
        // certificate, an expired federated token. Nothing the machine can fix by itself.
        if (err instanceof OAuthServerError && err.error === 'invalid_client') {
          throw new OAuthServerError('ERR_SIGNIN_REQUIRED', err.error, {
            status: err.status,
            errorDescription: err.errorDescription,
            body: err.body,
            cause: err,
            message: `the client credential was rejected (invalid_client): replace it (clientCredential), then run 'edgetoken login' to check it`,
          })
        }
        throw err
      }
    },
  }
}
