/**
 * `ConfidentialClient`: the library face for services and middle-tier APIs that hold a credential
 * (a client secret, or a private key with an optional X.509 certificate), in the spirit of MSAL's
 * `ConfidentialClientApplication`: app-only tokens (client credentials) and tokens on behalf of a
 * user (Entra ID on-behalf-of, RFC 8693 token exchange elsewhere), web app sign-ins (authorization
 * code + PKCE) and silent acquisition for the signed-in users, all kept in a partitioned token cache.
 *
 * @packageDocumentation
 */
import { createHash, createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto'
import { ConfigError } from '../errors.js'
import { type AuthorizationServer, parseAuthority } from '../oauth/authority.js'
import { mergeClaims } from '../oauth/claims.js'
import type { DPoPHandle } from '../oauth/dpop.js'
import { clientCredentialsGrant, onBehalfOfGrant, tokenExchangeGrant } from '../oauth/grants/grants.js'
import { refreshTokenGrant } from '../oauth/grants/refresh.js'
import { signInScopes } from '../oauth/scopes.js'
import type { Account, ClientAuth, MetadataCache, OAuthClient, TokenSet } from '../oauth/types.js'
import { MemoryTokenCache } from '../store/partitions/memory.js'
import {
  type AccountTokenResult,
  type AcquireAccountTokenOptions,
  TokenCacheEngine,
} from '../store/partitions/silent.js'
import type { TokenCache } from '../store/partitions/token-cache.js'
import { redeemAuthorization, startAuthorization } from './authorization-code.js'
import { authorityResolver } from './resolver.js'
import { TokenCacheClient } from './token-cache-client.js'

/** A client secret credential. */
export interface ClientSecretCredential {
  /** The client secret. Secret. */
  clientSecret: string
  /**
   * How it is sent. Default: `client_secret_post` for Entra ID (as MSAL does), else
   * `client_secret_basic` (the method RFC 6749 §2.3.1 says every server MUST support).
   */
  method?: 'client_secret_basic' | 'client_secret_post' | undefined
}

/** A private key credential: `private_key_jwt` client assertions (RFC 7523 §2.2). */
export interface PrivateKeyCredential {
  /** The private key: PEM (PKCS#8, PKCS#1 or SEC1), a `KeyObject`, or a private JWK. Secret. */
  privateKey: string | KeyObject | Record<string, unknown>
  /** The passphrase of an encrypted PEM private key. Secret. */
  passphrase?: string | undefined
  /**
   * The key's X.509 certificate (PEM), as registered with Entra ID, optionally followed by its
   * issuers (a chain, leaf first). The leaf's SHA-256 thumbprint is sent as the `x5t#S256`
   * assertion header (and, for Entra ID, its SHA-1 thumbprint as `x5t`). Checked to match the key.
   */
  certificate?: string | undefined
  /**
   * Send the certificate chain as the `x5c` assertion header (RFC 7515 §4.1.6), as Entra ID's
   * subject name and issuer (SN+I) authentication needs. Default false.
   */
  sendCertificateChain?: boolean | undefined
  /**
   * The JWS algorithm. Default: the JWK's `alg`, else from the key: RSA `RS256` (`PS256` for Entra
   * ID when a certificate is given, as Microsoft documents with `x5t#S256`), RSA-PSS `PS256`,
   * EC P-256/384/521 `ES256`/`ES384`/`ES512`, Ed25519 `EdDSA`.
   */
  alg?: string | undefined
  /** The `kid` header. Default: the JWK's `kid`, if any. */
  kid?: string | undefined
}

/**
 * A client assertion made by someone else (RFC 7521 §4.2): a federated workload identity token
 * (Kubernetes projected service account token, GitHub Actions OIDC token, Azure's
 * `AZURE_FEDERATED_TOKEN_FILE`). Asked for again for every token request, since it rotates.
 */
export interface ClientAssertionCredential {
  /**
   * The assertion (a JWT), or a callback returning the current one for a token endpoint. Secret.
   * Exactly one of `clientAssertion` and `clientAssertionFile`.
   */
  clientAssertion?:
    | string
    | ((options: { clientId: string; tokenEndpoint: string }) => string | Promise<string>)
  /** A file holding the assertion, read again for every token request (at most 64 KiB). */
  clientAssertionFile?: string | undefined
}

/** Options of {@link ConfidentialClient}. */
export interface ConfidentialClientOptions {
  /** The authority: an issuer URL, or `https://login.microsoftonline.com/<tenant>` (Entra ID). */
  authority: string
  /** The registered client_id. */
  clientId: string
  /** The client's credential. */
  credential: ClientSecretCredential | PrivateKeyCredential | ClientAssertionCredential
  /** Where discovery documents are cached. */
  metadataCache?: MetadataCache | undefined
  /** How long discovery documents are cached, seconds. Default 86400. */
  cacheTtlSeconds?: number | undefined
  /**
   * Where tokens are kept: the app's own (client credentials), those obtained on behalf of each
   * incoming token, and each signed-in user's. Default: a new {@link MemoryTokenCache} of
   * `maxCachedTokens` partitions; `RedisTokenCache` shares one cache between a web app's instances.
   */
  cache?: TokenCache | undefined
  /**
   * How long a refresh token lasts when the token response does not say
   * (`refresh_token_expires_in`), seconds: the cache keeps a signed-in user that long. Default 90
   * days (Entra ID's default).
   */
  refreshTokenLifetimeSeconds?: number | undefined
  /** Per-request timeout, ms. Default 10000. A refresh lease in a shared cache lasts twice that. */
  timeoutMs?: number | undefined
  /**
   * A cached token is reused while it has more than this left, seconds (at most half its
   * lifetime). Default 300 (as MSAL); Entra ID's `refresh_in` makes it renew sooner.
   */
  minTtlSeconds?: number | undefined
  /**
   * Most partitions of the default in-memory cache (the app's tokens, one per DPoP key and
   * resource; one per on-behalf-of assertion; one per signed-in user), least recently used out
   * first. Default 1000. Ignored with `cache`.
   */
  maxCachedTokens?: number | undefined
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
  /**
   * Client capabilities (`cp1`: Entra ID issues Continuous Access Evaluation tokens), sent as the
   * `xms_cc` claims request with every token request. Default none.
   * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
   */
  clientCapabilities?: readonly string[] | undefined
}

/** Options of {@link ConfidentialClient.getAuthorizationUrl} (a web app signing a user in). */
export interface ConfidentialAuthorizationUrlOptions {
  /** The scopes; `openid` and `offline_access` are added when absent. */
  scopes: readonly string[]
  /** The registered redirect URI (https, or http to loopback). */
  redirectUri: string
  /**
   * `form_post` (the code arrives in a POST body, out of URLs and logs; OAuth 2.0 Form Post
   * Response Mode) or `query`. Default `form_post`.
   */
  responseMode?: 'query' | 'form_post' | undefined
  /** OpenID Connect `prompt`. */
  prompt?: string | undefined
  /** OpenID Connect `login_hint`. */
  loginHint?: string | undefined
  /** A claims request (JSON), e.g. from an API's claims challenge. */
  claims?: string | undefined
  /** Cancels discovery. */
  signal?: AbortSignal | undefined
}

/** A pending authorization code request of a web app; keep it server-side (its verifier is secret). */
export interface ConfidentialAuthorizationRequest {
  /** The authorization URL to redirect the browser to. */
  readonly url: string
  /** The redirect URI it names. */
  readonly redirectUri: string
  /** How the response comes back. */
  readonly responseMode: 'query' | 'form_post'
  /** The scopes it asks for. */
  readonly scopes: readonly string[]
  /** `state` (RFC 6749 §10.12). */
  readonly state: string
  /** OpenID Connect `nonce`. */
  readonly nonce: string
  /** The PKCE code_verifier (RFC 7636 §4.1). Secret. */
  readonly codeVerifier: string
  /** The claims request sent, if any (sent again at redemption). */
  readonly claims?: string | undefined
}

/** Options of {@link ConfidentialClient.acquireTokenByClientCredentials}. */
export interface AcquireTokenByClientCredentialsOptions {
  /** The scopes (Entra ID: one `<resource>/.default`). */
  scopes: readonly string[]
  /** A claims request (JSON) from a claims challenge; the cache is skipped. */
  claims?: string | undefined
  /** RFC 8707 resource indicator, for servers that take one (a partition per resource). */
  resource?: string | undefined
  /** Skip the cache and ask the server. Default false. */
  forceRefresh?: boolean | undefined
  /** Cancels discovery and the token request. */
  signal?: AbortSignal | undefined
  /**
   * Binds the token to this DPoP key (RFC 9449 §5): the request carries a proof, the answer must
   * be `token_type` `DPoP`. Tokens are cached per key (a partition per key). Default: a bearer token.
   */
  dpop?: DPoPHandle | undefined
}

/** Options of {@link ConfidentialClient.acquireTokenOnBehalfOf}. */
export interface AcquireTokenOnBehalfOfOptions {
  /** The access token this API received from its caller (audience: this client). Secret. */
  assertion: string
  /** The downstream scopes. */
  scopes: readonly string[]
  /** RFC 8707 resource of the downstream API (token exchange only). */
  resource?: string | undefined
  /** Skip the cache and ask the server. Default false. */
  forceRefresh?: boolean | undefined
  /** Cancels discovery and the token request. */
  signal?: AbortSignal | undefined
}

function configError(message: string, cause?: unknown): ConfigError {
  return new ConfigError(message, { key: 'credential', cause })
}

function toPrivateKey(value: PrivateKeyCredential['privateKey'], passphrase?: string): KeyObject {
  if (typeof value === 'string') {
    try {
      return createPrivateKey(passphrase === undefined ? value : { key: value, passphrase })
    } catch (err) {
      // OpenSSL says "bad decrypt" or asks for a passphrase: name that, never the key.
      const encrypted = /ENCRYPTED/.test(value)
      throw configError(
        encrypted
          ? passphrase === undefined
            ? 'credential.privateKey is encrypted: give its passphrase'
            : 'credential.privateKey cannot be decrypted with the passphrase given'
          : 'credential.privateKey is not a PEM private key',
        err,
      )
    }
  }
  if (typeof value === 'object' && value !== null && 'kty' in value) {
    if (!('d' in value)) throw configError('credential.privateKey is a public JWK, not a private one')
    try {
      return createPrivateKey({ key: value as import('node:crypto').JsonWebKey, format: 'jwk' })
    } catch (err) {
      throw configError('credential.privateKey is not a usable JWK', err)
    }
  }
  if (typeof value === 'object' && value !== null && (value as KeyObject).type === 'private') {
    return value as KeyObject
  }
  throw configError('credential.privateKey must be a PEM string, a private KeyObject or a private JWK')
}

function algorithmFor(key: KeyObject, entraCertificate: boolean): string {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      // Microsoft's certificate credential format: PS256 with x5t#S256 (RS256 with x5t is legacy).
      return entraCertificate ? 'PS256' : 'RS256'
    case 'rsa-pss':
      return 'PS256'
    case 'ed25519':
      return 'EdDSA'
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve
      if (curve === 'prime256v1') return 'ES256'
      if (curve === 'secp384r1') return 'ES384'
      if (curve === 'secp521r1') return 'ES512'
      break
    }
  }
  throw configError(`credential.privateKey: no default algorithm for this key type; set credential.alg`)
}

/**
 * Turns a credential into the client authentication `applyClientAuth` sends.
 *
 * @param credential - the credential.
 * @param entra - whether the authority is Entra ID (secret method default).
 * @returns the client authentication, frozen.
 */
function clientAuthFor(
  credential: ConfidentialClientOptions['credential'],
  entra: boolean,
  clientId: string,
): ClientAuth {
  if (isAssertionCredential(credential)) return assertionAuthFor(credential, clientId)
  if ('clientSecret' in credential) {
    if (typeof credential.clientSecret !== 'string' || credential.clientSecret.length === 0) {
      throw configError('credential.clientSecret must be a non-empty string')
    }
    const method = credential.method ?? (entra ? 'client_secret_post' : 'client_secret_basic')
    return Object.freeze({ method, clientSecret: credential.clientSecret })
  }
  const key = toPrivateKey(credential.privateKey, credential.passphrase)
  const jwk =
    typeof credential.privateKey === 'object' && 'kty' in credential.privateKey ? credential.privateKey : {}
  const chain = credential.certificate === undefined ? [] : parseChain(credential.certificate)
  const leaf = chain[0]
  const alg =
    credential.alg ?? (typeof jwk.alg === 'string' ? jwk.alg : algorithmFor(key, entra && leaf !== undefined))
  const kid = credential.kid ?? (typeof jwk.kid === 'string' ? jwk.kid : undefined)
  let thumbprints: { x5tS256?: string; x5t?: string; x5c?: readonly string[] } = {}
  if (leaf !== undefined) {
    if (!leaf.checkPrivateKey(key)) {
      throw configError('credential.certificate does not belong to credential.privateKey')
    }
    // RFC 7515 §4.1.8/§4.1.7: base64url thumbprints of the DER certificate. SHA-1 `x5t` only for
    // Entra ID, which still documents it; elsewhere SHA-256 alone.
    thumbprints = {
      x5tS256: createHash('sha256').update(leaf.raw).digest('base64url'),
      ...(entra ? { x5t: createHash('sha1').update(leaf.raw).digest('base64url') } : {}),
      // RFC 7515 §4.1.6: standard base64 DER, leaf first, each certifying the one before.
      ...(credential.sendCertificateChain === true
        ? { x5c: Object.freeze(chain.map((c) => c.raw.toString('base64'))) }
        : {}),
    }
  } else if (credential.sendCertificateChain === true) {
    throw configError('credential.sendCertificateChain needs credential.certificate')
  }
  return Object.freeze({
    method: 'private_key_jwt',
    privateKey: key,
    alg,
    ...(kid !== undefined ? { kid } : {}),
    ...thumbprints,
  })
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/** The certificates of a PEM file, leaf first; each must be issued by the next (RFC 7515 §4.1.6). */
function parseChain(pem: string): X509Certificate[] {
  const blocks = typeof pem === 'string' ? (pem.match(PEM_CERTIFICATE) ?? []) : []
  if (blocks.length === 0) throw configError('credential.certificate is not a PEM X.509 certificate')
  const chain = blocks.map((block) => {
    try {
      return new X509Certificate(block)
    } catch (err) {
      throw configError('credential.certificate is not a PEM X.509 certificate', err)
    }
  })
  for (let i = 1; i < chain.length; i++) {
    const [child, issuer] = [chain[i - 1], chain[i]]
    if (child && issuer && !child.checkIssued(issuer)) {
      throw configError(`credential.certificate: certificate ${i + 1} did not issue certificate ${i}`)
    }
  }
  return chain
}

function isAssertionCredential(
  credential: ConfidentialClientOptions['credential'],
): credential is ClientAssertionCredential {
  return 'clientAssertion' in credential || 'clientAssertionFile' in credential
}

/** Most bytes read from an assertion file: a JWT is a few KiB. */
const MAX_ASSERTION_BYTES = 64 * 1024

function assertionAuthFor(credential: ClientAssertionCredential, clientId: string): ClientAuth {
  const { clientAssertion, clientAssertionFile } = credential
  if ((clientAssertion === undefined) === (clientAssertionFile === undefined)) {
    throw configError('credential: give exactly one of clientAssertion and clientAssertionFile')
  }
  if (clientAssertionFile !== undefined) {
    if (typeof clientAssertionFile !== 'string' || clientAssertionFile.length === 0) {
      throw configError('credential.clientAssertionFile must be a file path')
    }
    return Object.freeze({
      method: 'client_assertion',
      getAssertion: () => readAssertionFile(clientAssertionFile),
    })
  }
  if (typeof clientAssertion === 'string') {
    if (clientAssertion.length === 0) throw configError('credential.clientAssertion must not be empty')
    return Object.freeze({ method: 'client_assertion', getAssertion: () => clientAssertion })
  }
  if (typeof clientAssertion !== 'function') {
    throw configError('credential.clientAssertion must be a string or a function')
  }
  return Object.freeze({
    method: 'client_assertion',
    getAssertion: (tokenEndpoint: string) => clientAssertion({ clientId, tokenEndpoint }),
  })
}

/**
 * Reads a federated token file again for each request: Kubernetes rewrites a projected token
 * before it expires, so a copy kept in memory would go stale.
 */
async function readAssertionFile(file: string): Promise<string> {
  const { open } = await import('node:fs/promises')
  let text: string
  try {
    const handle = await open(file, 'r')
    try {
      const buffer = Buffer.alloc(MAX_ASSERTION_BYTES + 1)
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0)
      if (bytesRead > MAX_ASSERTION_BYTES) {
        throw configError(`credential.clientAssertionFile ${file} is larger than 64 KiB`)
      }
      text = buffer.subarray(0, bytesRead).toString('utf8')
    } finally {
      await handle.close()
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw configError(`credential.clientAssertionFile ${file} cannot be read (${code})`, err)
  }
  return text.trim()
}

/** A partition id: what it is for, and the resource when one is named (RFC 8707). */
function partitionId(id: string, resource: string | undefined): string {
  return resource === undefined ? id : `${id}\n${resource}`
}

/**
 * A confidential OAuth client: client credentials, on-behalf-of, and web app sign-ins with silent
 * acquisition for the signed-in users. Tokens live in a partitioned {@link TokenCache}: the app's
 * own per DPoP key (and resource), on-behalf-of tokens per incoming token (hashed), each user's per
 * account; within a partition, per scope set (order and duplicates ignored). Failures are never cached.
 *
 * @example
 * ```ts
 * const app = new ConfidentialClient({
 *   authority: 'https://login.microsoftonline.com/contoso.onmicrosoft.com',
 *   clientId,
 *   credential: { privateKey: readFileSync('app.key', 'utf8'), certificate: readFileSync('app.crt', 'utf8') },
 * })
 * const { accessToken } = await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.4
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
 */
export class ConfidentialClient extends TokenCacheClient {
  readonly #options: Readonly<Omit<ConfidentialClientOptions, 'credential'>>
  readonly #client: OAuthClient
  readonly #resolve: (signal?: AbortSignal) => Promise<AuthorizationServer>

  /**
   * @param options - authority, client id, credential, cache settings.
   * @throws ConfigError `ERR_INSECURE_URL`/`ERR_CONFIG` for a bad authority; `ERR_CONFIG` (key
   *   `credential`) for an unusable secret, key or certificate (the message never shows them).
   */
  constructor(options: ConfidentialClientOptions) {
    const parsed = parseAuthority(options.authority)
    const auth = clientAuthFor(options.credential, parsed.kind === 'entra', options.clientId)
    super(
      new TokenCacheEngine({
        cache:
          options.cache ??
          new MemoryTokenCache({ maxPartitions: Math.max(1, options.maxCachedTokens ?? 1000) }),
        authority: options.authority,
        clientId: options.clientId,
        timeoutMs: options.timeoutMs,
        refreshTokenLifetimeSeconds: options.refreshTokenLifetimeSeconds,
        expiryMarginSeconds: options.minTtlSeconds ?? 300,
        now: options.now,
      }),
    )
    const { credential: _credential, ...rest } = options
    this.#options = Object.freeze(rest)
    this.#resolve = authorityResolver(this.#options)
    this.#client = Object.freeze({ clientId: options.clientId, auth })
  }

  /** The authority. */
  get authority(): string {
    return this.#options.authority
  }

  /** The client_id. */
  get clientId(): string {
    return this.#options.clientId
  }

  /**
   * Resolves the authority (discovery, cached); a failure is not remembered.
   *
   * @param signal - cancels discovery.
   * @returns the authorization server.
   * @example
   * ```ts
   * const { tokenEndpoint } = await app.resolve()
   * ```
   * @see https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderConfig
   */
  resolve(signal?: AbortSignal): Promise<AuthorizationServer> {
    return this.#resolve(signal)
  }

  /**
   * An app-only token (client credentials grant), from the cache while it has more than
   * `minTtlSeconds` left.
   *
   * @param options - scopes, resource, forceRefresh, signal, DPoP key.
   * @returns the token set.
   * @throws OAuthServerError (`invalid_client`, `invalid_scope`, ...), `ERR_UNAVAILABLE`, ...
   * @example
   * ```ts
   * const tokens = await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.4
   * @see https://www.rfc-editor.org/rfc/rfc9449#section-5
   */
  async acquireTokenByClientCredentials(options: AcquireTokenByClientCredentialsOptions): Promise<TokenSet> {
    const id = partitionId(options.dpop?.jkt ?? '', options.resource)
    const claims = mergeClaims(options.claims, this.#options.clientCapabilities)
    // A token that answers a claims challenge must come from the server (MSAL skips its cache too).
    const force = options.forceRefresh === true || options.claims !== undefined
    return this.tokens.acquireOwnToken('app', id, options.scopes, force, async () => {
      const server = await this.resolve(options.signal)
      return clientCredentialsGrant(server, this.#client, {
        scopes: options.scopes,
        resource: options.resource,
        claims,
        signal: options.signal,
        now: this.#options.now,
        timeoutMs: this.#options.timeoutMs,
        dpop: options.dpop,
      })
    })
  }

  /**
   * A token for a downstream API on behalf of the user whose access token this API received:
   * Entra ID's on-behalf-of grant, or RFC 8693 token exchange for any other authority.
   *
   * @param options - the incoming token, downstream scopes, resource, forceRefresh, signal.
   * @returns the downstream token set.
   * @throws OAuthServerError (`invalid_grant`, `interaction_required`, ...), `ERR_UNAVAILABLE`, ...
   * @example
   * ```ts
   * const incoming = req.headers.authorization.slice('Bearer '.length)
   * const { accessToken } = await api.acquireTokenOnBehalfOf({ assertion: incoming, scopes: ['api://downstream/.default'] })
   * ```
   * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
   * @see https://www.rfc-editor.org/rfc/rfc8693#section-2.1
   */
  async acquireTokenOnBehalfOf(options: AcquireTokenOnBehalfOfOptions): Promise<TokenSet> {
    // The incoming token is hashed into the key, never stored.
    const id = partitionId(options.assertion, options.resource)
    return this.tokens.acquireOwnToken('obo', id, options.scopes, options.forceRefresh === true, async () => {
      const server = await this.resolve(options.signal)
      const common = { signal: options.signal, now: this.#options.now, timeoutMs: this.#options.timeoutMs }
      if (server.dialect === 'entra') {
        return onBehalfOfGrant(server, this.#client, {
          ...common,
          assertion: options.assertion,
          scopes: options.scopes,
        })
      }
      return tokenExchangeGrant(server, this.#client, {
        ...common,
        subjectToken: options.assertion,
        scopes: options.scopes,
        resource: options.resource,
      })
    })
  }

  /**
   * Starts a web app's sign-in of a user: the authorization code flow with PKCE (S256), `state`,
   * `nonce`, and by default `response_mode=form_post`. Keep the returned request server-side
   * (e.g. in the session) until the response arrives.
   *
   * @param options - scopes, redirect URI, response mode, prompt, login hint, claims, signal.
   * @returns the request: redirect the browser to `url`.
   * @throws EdgeTokenError `ERR_CONFIG` when the server has no authorization endpoint,
   *   `ERR_INSECURE_URL` for a remote http redirect URI; TypeError for malformed claims.
   * @example
   * ```ts
   * const request = await app.getAuthorizationUrl({ scopes: ['User.Read'], redirectUri: 'https://app.example/auth' })
   * session.signIn = request
   * res.redirect(request.url)
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.1
   * @see https://openid.net/specs/oauth-v2-form-post-response-mode-1_0.html
   */
  async getAuthorizationUrl(
    options: ConfidentialAuthorizationUrlOptions,
  ): Promise<ConfidentialAuthorizationRequest> {
    const server = await this.resolve(options.signal)
    const responseMode = options.responseMode ?? 'form_post'
    const request = startAuthorization(
      server,
      this.#options.clientId,
      { ...options, responseMode },
      this.#options.clientCapabilities,
    )
    // Given a response mode, the request carries it.
    return request as ConfidentialAuthorizationRequest
  }

  /**
   * Completes a web app's sign-in: checks the response (`iss` when sent, then `state`: RFC 9207,
   * RFC 6749 §4.1.2), redeems the code with the client's credential and the PKCE verifier, and
   * checks the id_token's nonce. The code is never cached; the sign-in is saved in the token cache
   * (replacing that account's partition), for {@link ConfidentialClient.acquireTokenSilent}.
   *
   * @param request - what {@link ConfidentialClient.getAuthorizationUrl} returned.
   * @param response - for `form_post`, the POST body (text or parsed); for `query`, the URL the
   *   browser was redirected to.
   * @param options - signal.
   * @returns the tokens and the account.
   * @throws InvalidResponseError `ERR_INVALID_RESPONSE` for a state or issuer mismatch (the code is
   *   not redeemed); OAuthServerError (`ERR_ACCESS_DENIED`, `invalid_grant`); `ERR_JWT_INVALID`;
   *   the token cache's `ERR_CACHE_UNAVAILABLE`.
   * @example
   * ```ts
   * const { tokens, account } = await app.acquireTokenByCode(session.signIn, await readBody(req))
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.1.3
   * @see https://openid.net/specs/oauth-v2-form-post-response-mode-1_0.html
   */
  async acquireTokenByCode(
    request: ConfidentialAuthorizationRequest,
    response: string | URL | URLSearchParams,
    options: { signal?: AbortSignal | undefined } = {},
  ): Promise<{ tokens: TokenSet; account: Account }> {
    const server = await this.resolve(options.signal)
    const { tokens, account, requestedAt } = await redeemAuthorization(
      server,
      this.#client,
      request,
      response,
      {
        signal: options.signal,
        now: this.#options.now,
        timeoutMs: this.#options.timeoutMs,
      },
    )
    await this.tokens.saveSignIn(account, tokens, request.scopes, requestedAt)
    return { tokens, account }
  }

  /**
   * An access token for a signed-in user, without the user: the cached one while it is good
   * enough (more than `minTtlSeconds` left, capped at half its lifetime; Entra ID's
   * `refresh_in`), else one refresh with the user's refresh token and the client's credential,
   * shared by every caller in this process and leased against other instances sharing the cache.
   *
   * @param options - account, scopes, forceRefresh, claims, minTtlSeconds, signal.
   * @returns the token, its expiry and scopes, whether it came from the cache, and the account.
   * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when the cache holds no sign-in for the account or
   *   its refresh token is rejected (`invalid_grant`: the account is kept, marked); the cache's
   *   `ERR_CACHE_UNAVAILABLE` when it is down and no good token was seen; the refresh's errors.
   * @example
   * ```ts
   * const { accessToken } = await app.acquireTokenSilent({ account: session.accountId, scopes: ['api://telemetry/.default'] })
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-6
   */
  acquireTokenSilent(options: AcquireAccountTokenOptions): Promise<AccountTokenResult> {
    return this.tokens.acquireTokenSilent(options, async (refreshToken, scopes, refreshOptions) => {
      const server = await this.resolve(refreshOptions.signal)
      return refreshTokenGrant(server, this.#client, refreshToken, signInScopes(scopes), {
        claims: mergeClaims(refreshOptions.claims, this.#options.clientCapabilities),
        signal: refreshOptions.signal,
        now: this.#options.now,
        timeoutMs: this.#options.timeoutMs,
        originalIdTokenClaims: refreshOptions.idTokenClaims,
      })
    })
  }

  /**
   * Forgets the app's own tokens: client credentials and on-behalf-of (e.g. after rotating the
   * credential). Signed-in users stay.
   *
   * @returns when the partitions are removed.
   * @example
   * ```ts
   * await app.clearCache()
   * ```
   * @see https://learn.microsoft.com/entra/msal/node/caching
   */
  clearCache(): Promise<void> {
    return this.tokens.clearAppTokens()
  }
}
