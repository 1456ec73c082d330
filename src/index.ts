/**
 * edgetoken as a library: the device authorization grant and the other token flows, the encrypted
 * token store with silent renewal, the telemetry spool and uploader, and the reference receiver.
 *
 * Re-exports only. The CLI does not import this module, so nothing here costs the CLI start-up.
 *
 * @example
 * ```ts
 * import { PublicClient } from 'edgetoken'
 * const client = new PublicClient({ authority: 'https://login.microsoftonline.com/organizations', clientId })
 * const flow = await client.startDeviceFlow({ scopes: ['api://telemetry/.default'] })
 * console.error(flow.message ?? `Open ${flow.verificationUri} and enter ${flow.userCode}`)
 * const { tokens, account } = await flow.poll()
 * ```
 *
 * @packageDocumentation
 */

// Library faces
export {
  type AcquireTokenByClientCredentialsOptions,
  type AcquireTokenOnBehalfOfOptions,
  type ClientAssertionCredential,
  type ClientSecretCredential,
  type ConfidentialAuthorizationRequest,
  type ConfidentialAuthorizationUrlOptions,
  ConfidentialClient,
  type ConfidentialClientOptions,
  type PrivateKeyCredential,
} from './client/confidential-client.js'
export {
  type AcquireManagedIdentityTokenOptions,
  ManagedIdentityClient,
  type ManagedIdentityClientOptions,
  type ManagedIdentitySource,
} from './client/managed-identity-client.js'
export {
  type AcquireTokenByCodeOptions,
  type AuthorizationRequest,
  type DeviceFlow,
  type GetAuthorizationUrlOptions,
  PublicClient,
  type PublicClientOptions,
  type SignInResult,
  type StartDeviceFlowOptions,
} from './client/public-client.js'
export { TokenCacheClient } from './client/token-cache-client.js'
export * from './errors.js'
export {
  type CallbackHandler,
  type CallbackVerdict,
  type LoopbackListener,
  startLoopbackListener,
  type WaitForCallbackOptions,
} from './identity/loopback-listener.js'
// Protocol core
export {
  type AuthorizationServer,
  parseAuthority,
  type ResolveAuthorityOptions,
  resolveAuthority,
} from './oauth/authority.js'
export {
  claimsFromArgument,
  decodeClaimsChallenge,
  MAX_CLAIMS_BYTES,
  mergeClaims,
  parseClaims,
} from './oauth/claims.js'
export {
  type DeviceAuthorization,
  type PollDeviceAuthorizationOptions,
  type PollEvent,
  pollDeviceAuthorization,
  processDeviceAuthorizationResponse,
  type StartDeviceAuthorizationOptions,
  startDeviceAuthorization,
} from './oauth/grants/device.js'
export {
  ACCESS_TOKEN_TYPE,
  type AuthorizationCodeGrantOptions,
  authorizationCodeGrant,
  type ClientCredentialsGrantOptions,
  clientCredentialsGrant,
  type OnBehalfOfGrantOptions,
  onBehalfOfGrant,
  type TokenExchangeGrantOptions,
  type TokenExchangeResult,
  tokenExchangeGrant,
} from './oauth/grants/grants.js'
export {
  type AuthorizationResponse,
  type AuthorizationUrlParameters,
  buildAuthorizationUrl,
  codeChallengeS256,
  generateCodeVerifier,
  generateNonce,
  generateState,
  type ValidateAuthorizationResponseOptions,
  validateAuthorizationResponse,
  validateFormPostResponse,
} from './oauth/grants/pkce.js'
export { type RefreshOptions, refreshTokenGrant, revokeToken } from './oauth/grants/refresh.js'
export { NetworkError, setHttpDispatcher } from './oauth/http.js'
export { signInScopes, withOfflineAccess } from './oauth/scopes.js'
export { accountFromTokenSet, type VerifyIdTokenOptions, verifyIdToken } from './oauth/tokens.js'
export type { Account, ClientAuth, MetadataCache, OAuthClient, TokenSet } from './oauth/types.js'
export {
  type AuthChallenge,
  type BearerChallengeError,
  bearerChallengeError,
  parseWwwAuthenticate,
} from './oauth/www-authenticate.js'
// Encrypted store and silent acquisition
export {
  type AccountStatus,
  type AcquireTokenSilentOptions,
  acquireTokenSilent,
  type RefreshFunction,
  readAccountStatus,
  removeAccount,
  type SaveSignInOptions,
  type SilentTokenResult,
  saveSignIn,
} from './store/cache.js'
export { fileMetadataCache } from './store/metadata-cache.js'
export { FileTokenCache } from './store/partitions/file.js'
export { MemoryTokenCache, type MemoryTokenCacheOptions } from './store/partitions/memory.js'
export {
  type RedisClientLike,
  RedisTokenCache,
  type RedisTokenCacheOptions,
} from './store/partitions/redis.js'
export type {
  AccountTokenResult,
  AcquireAccountTokenOptions,
} from './store/partitions/silent.js'
export {
  appKey,
  type CachePartition,
  isCachePartition,
  type PartitionKind,
  type PutOptions,
  partitionKey,
  type TokenCache,
  type VersionedPartition,
} from './store/partitions/token-cache.js'
export {
  type OpenTokenStoreOptions,
  openTokenStore,
  type StoreWriteReservation,
  type TokenStore,
} from './store/token-store.js'
export {
  TokenStoreMemo,
  type TokenStoreMemoAcquireOptions,
  type TokenStoreMemoOptions,
} from './store/token-store-memo.js'
// Telemetry
export {
  createReceiver,
  type ReceivedBatch,
  type Receiver,
  type ReceiverOptions,
} from './telemetry/receiver/receiver.js'
export {
  type OpenSpoolOptions,
  openSpool,
  type Spool,
  type SpoolBatch,
  type SpoolStats,
} from './telemetry/spool/spool.js'
export { readSpoolStatus, type SpoolStatus } from './telemetry/spool/spool-status.js'
export {
  type DrainOptions,
  type DrainResult,
  type UploadEvent,
  Uploader,
  type UploaderOptions,
} from './telemetry/upload/uploader.js'
export { VERSION } from './version.js'
