/**
 * `ConfidentialClient`: the library face for services and middle-tier APIs that hold a credential
 * (a client secret, or a private key with an optional X.509 certificate), in the spirit of MSAL's
 * `ConfidentialClientApplication`: app-only tokens (client credentials) and tokens on behalf of a
 * user (Entra ID on-behalf-of, RFC 8693 token exchange elsewhere), with an in-memory cache.
 *
 * @packageDocumentation
 */
import { createHash, createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto'
import { ConfigError } from '../errors.js'
import { type AuthorizationServer, parseAuthority } from '../oauth/authority.js'
import { clientCredentialsGrant, onBehalfOfGrant, tokenExchangeGrant } from '../oauth/grants.js'
import type { ClientAuth, MetadataCache, OAuthClient, TokenSet } from '../oauth/types.js'
import { authorityResolver } from './resolver.js'

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
  /**
   * The key's X.509 certificate (PEM), as registered with Entra ID: its SHA-256 and SHA-1
   * thumbprints are sent as the `x5t#S256` and `x5t` assertion headers. Checked to match the key.
   */
  certificate?: string | undefined
  /**
   * The JWS algorithm. Default: the JWK's `alg`, else from the key: RSA `RS256`, RSA-PSS `PS256`,
   * EC P-256/384/521 `ES256`/`ES384`/`ES512`, Ed25519 `EdDSA`.
   */
  alg?: string | undefined
  /** The `kid` header. Default: the JWK's `kid`, if any. */
  kid?: string | undefined
}

/** Options of {@link ConfidentialClient}. */
export interface ConfidentialClientOptions {
  /** The authority: an issuer URL, or `https://login.microsoftonline.com/<tenant>` (Entra ID). */
  authority: string
  /** The registered client_id. */
  clientId: string
  /** The client's credential. */
  credential: ClientSecretCredential | PrivateKeyCredential
  /** Where discovery documents are cached. */
  cache?: MetadataCache | undefined
  /** How long discovery documents are cached, seconds. Default 86400. */
  cacheTtlSeconds?: number | undefined
  /** Per-request timeout, ms. Default 10000. */
  timeoutMs?: number | undefined
  /**
   * A cached token is reused while it has more than this left, seconds. Default 300 (as MSAL);
   * Entra ID's `refresh_in` makes it renew sooner.
   */
  minTtlSeconds?: number | undefined
  /** Most tokens kept in memory (app tokens and on-behalf-of tokens together). Default 1000. */
  maxCachedTokens?: number | undefined
  /** The clock, epoch ms. Default `Date.now`. */
  now?: (() => number) | undefined
}

/** Options of {@link ConfidentialClient.acquireTokenByClientCredentials}. */
export interface AcquireTokenByClientCredentialsOptions {
  /** The scopes (Entra ID: one `<resource>/.default`). */
  scopes: readonly string[]
  /** RFC 8707 resource indicator, for servers that take one. */
  resource?: string | undefined
  /** Skip the cache and ask the server. Default false. */
  forceRefresh?: boolean | undefined
  /** Cancels discovery and the token request. */
  signal?: AbortSignal | undefined
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

function toPrivateKey(value: PrivateKeyCredential['privateKey']): KeyObject {
  if (typeof value === 'string') {
    try {
      return createPrivateKey(value)
    } catch (err) {
      throw configError('credential.privateKey is not a PEM private key', err)
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

function algorithmFor(key: KeyObject): string {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'RS256'
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
function clientAuthFor(credential: ConfidentialClientOptions['credential'], entra: boolean): ClientAuth {
  if ('clientSecret' in credential) {
    if (typeof credential.clientSecret !== 'string' || credential.clientSecret.length === 0) {
      throw configError('credential.clientSecret must be a non-empty string')
    }
    const method = credential.method ?? (entra ? 'client_secret_post' : 'client_secret_basic')
    return Object.freeze({ method, clientSecret: credential.clientSecret })
  }
  const key = toPrivateKey(credential.privateKey)
  const jwk =
    typeof credential.privateKey === 'object' && 'kty' in credential.privateKey ? credential.privateKey : {}
  const alg = credential.alg ?? (typeof jwk.alg === 'string' ? jwk.alg : algorithmFor(key))
  const kid = credential.kid ?? (typeof jwk.kid === 'string' ? jwk.kid : undefined)
  let thumbprints: { x5tS256?: string; x5t?: string } = {}
  if (credential.certificate !== undefined) {
    let cert: X509Certificate
    try {
      cert = new X509Certificate(credential.certificate)
    } catch (err) {
      throw configError('credential.certificate is not a PEM X.509 certificate', err)
    }
    if (!cert.checkPrivateKey(key)) {
      throw configError('credential.certificate does not belong to credential.privateKey')
    }
    // RFC 7515 §4.1.8/§4.1.7: base64url thumbprints of the DER certificate.
    thumbprints = {
      x5tS256: createHash('sha256').update(cert.raw).digest('base64url'),
      x5t: createHash('sha1').update(cert.raw).digest('base64url'),
    }
  }
  return Object.freeze({
    method: 'private_key_jwt',
    privateKey: key,
    alg,
    ...(kid !== undefined ? { kid } : {}),
    ...thumbprints,
  })
}

interface CacheEntry {
  readonly tokens: TokenSet
  /** When the entry stops being served, epoch ms. */
  readonly renewAt: number
}

/**
 * A confidential OAuth client: client credentials and on-behalf-of, with an in-memory token
 * cache keyed by grant, scope set (order and duplicates ignored) and, for on-behalf-of, a SHA-256
 * hash of the incoming token. Failures are never cached.
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
export class ConfidentialClient {
  readonly #options: Readonly<Omit<ConfidentialClientOptions, 'credential'>>
  readonly #client: OAuthClient
  readonly #tokens = new Map<string, CacheEntry>()
  readonly #resolve: (signal?: AbortSignal) => Promise<AuthorizationServer>

  /**
   * @param options - authority, client id, credential, cache settings.
   * @throws ConfigError `ERR_INSECURE_URL`/`ERR_CONFIG` for a bad authority; `ERR_CONFIG` (key
   *   `credential`) for an unusable secret, key or certificate (the message never shows them).
   */
  constructor(options: ConfidentialClientOptions) {
    const parsed = parseAuthority(options.authority)
    const auth = clientAuthFor(options.credential, parsed.kind === 'entra')
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
   * @param options - scopes, resource, forceRefresh, signal.
   * @returns the token set.
   * @throws OAuthServerError (`invalid_client`, `invalid_scope`, ...), `ERR_UNAVAILABLE`, ...
   * @example
   * ```ts
   * const tokens = await app.acquireTokenByClientCredentials({ scopes: ['api://telemetry/.default'] })
   * ```
   * @see https://www.rfc-editor.org/rfc/rfc6749#section-4.4
   */
  async acquireTokenByClientCredentials(options: AcquireTokenByClientCredentialsOptions): Promise<TokenSet> {
    const key = `client_credentials\n${options.resource ?? ''}\n${scopeKey(options.scopes)}`
    return this.#cached(key, options.forceRefresh, async () => {
      const server = await this.resolve(options.signal)
      return clientCredentialsGrant(server, this.#client, {
        scopes: options.scopes,
        resource: options.resource,
        signal: options.signal,
        now: this.#options.now,
        timeoutMs: this.#options.timeoutMs,
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
    const assertionHash = createHash('sha256').update(options.assertion).digest('base64url')
    const key = `obo\n${assertionHash}\n${options.resource ?? ''}\n${scopeKey(options.scopes)}`
    return this.#cached(key, options.forceRefresh, async () => {
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
   * Forgets every cached token (e.g. after rotating the credential).
   *
   * @example
   * ```ts
   * app.clearCache()
   * ```
   * @see https://learn.microsoft.com/entra/msal/node/caching
   */
  clearCache(): void {
    this.#tokens.clear()
  }

  async #cached(key: string, force: boolean | undefined, fetch: () => Promise<TokenSet>): Promise<TokenSet> {
    const now = this.#now()
    const hit = this.#tokens.get(key)
    if (hit && !force && now < hit.renewAt) return hit.tokens
    const tokens = await fetch()
    const obtained = this.#now()
    const minTtlMs = (this.#options.minTtlSeconds ?? 300) * 1000
    let renewAt = tokens.expiresAt - minTtlMs
    // Entra ID's refresh_in: renew early, as the server asks.
    if (tokens.refreshInSeconds !== undefined)
      renewAt = Math.min(renewAt, obtained + tokens.refreshInSeconds * 1000)
    this.#tokens.delete(key)
    if (renewAt > obtained) {
      this.#tokens.set(key, { tokens, renewAt })
      this.#evict(obtained)
    }
    return tokens
  }

  #evict(now: number): void {
    const max = Math.max(1, this.#options.maxCachedTokens ?? 1000)
    if (this.#tokens.size <= max) return
    for (const [key, entry] of this.#tokens) if (entry.renewAt <= now) this.#tokens.delete(key)
    // Still too many: drop the oldest (a Map iterates in insertion order).
    for (const key of this.#tokens.keys()) {
      if (this.#tokens.size <= max) break
      this.#tokens.delete(key)
    }
  }

  #now(): number {
    return (this.#options.now ?? Date.now)()
  }
}

function scopeKey(scopes: readonly string[]): string {
  return [...new Set(scopes)].sort().join(' ')
}
