/**
 * Types shared by the protocol core, the store and the library faces. Types only: no code, so any
 * layer may import them without pulling in HTTP.
 */

/**
 * A validated token endpoint response (RFC 6749 §5.1), with times made absolute.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-5.1
 */
export interface TokenSet {
  /** The access token. Secret. */
  readonly accessToken: string
  /** The token type, lower-cased: `bearer`, or `dpop` for a DPoP-bound token (RFC 9449 §5). */
  readonly tokenType: string
  /** When the access token expires, epoch milliseconds, computed from `expires_in` at receipt. */
  readonly expiresAt: number
  /** The granted scopes (from `scope`, else the requested ones, RFC 6749 §3.3). */
  readonly scopes: readonly string[]
  /** The refresh token, when one was issued. Secret. */
  readonly refreshToken?: string | undefined
  /** The id_token, when one was issued (already verified when {@link TokenSet.idTokenClaims} is set). */
  readonly idToken?: string | undefined
  /** The verified id_token claims. */
  readonly idTokenClaims?: Readonly<Record<string, unknown>> | undefined
  /** Entra ID's `refresh_in`: seconds after which a refresh is advised, when sent. */
  readonly refreshInSeconds?: number | undefined
  /**
   * `refresh_token_expires_in`: the refresh token's lifetime in seconds, when the server says (Entra
   * ID for single-page apps, some others); the token cache keeps a partition that long.
   */
  readonly refreshTokenExpiresInSeconds?: number | undefined
  /** Entra ID's `client_info` (base64url JSON with `uid` and `utid`), when sent. */
  readonly clientInfo?: string | undefined
  /**
   * A non-fatal problem with the response, for the caller to log: e.g. a refreshed id_token that
   * could not be verified (signing keys unreachable) and was dropped.
   */
  readonly warning?: string | undefined
}

/**
 * The signed-in account, as shown in `status` and NDJSON events.
 */
export interface Account {
  /** A stable id: Entra ID `uid.utid` from client_info, else the id_token `sub`, else a hash of the issuer and client. */
  readonly id: string
  /** A human-readable name (`preferred_username`, `email`, `name`), when known. */
  readonly username?: string | undefined
  /** The tenant id (Entra ID `tid`/`utid`), when known. */
  readonly tenant?: string | undefined
  /** The issuer that signed the account in. */
  readonly issuer: string
}

/**
 * How a client authenticates at the token endpoint.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-2.3
 * @see https://www.rfc-editor.org/rfc/rfc7523#section-2.2
 */
export type ClientAuth =
  /** A public client (device, CLI): sends only `client_id`. */
  | { readonly method: 'none' }
  /** `client_secret_basic` or `client_secret_post`. */
  | { readonly method: 'client_secret_basic' | 'client_secret_post'; readonly clientSecret: string }
  /** `private_key_jwt`: a JWT assertion signed with the client's key (jose KeyLike/JWK), optionally with an X.509 thumbprint for Entra ID certificates. */
  | {
      readonly method: 'private_key_jwt'
      readonly privateKey:
        | import('node:crypto').webcrypto.CryptoKey
        | import('node:crypto').KeyObject
        | Record<string, unknown>
      readonly alg: string
      readonly kid?: string
      /** base64url SHA-256 thumbprint of the certificate (`x5t#S256` header), for Entra ID. */
      readonly x5tS256?: string
      /** base64url SHA-1 thumbprint (`x5t` header), for older Entra ID setups. */
      readonly x5t?: string
      /**
       * The certificate chain (`x5c` header, RFC 7515 §4.1.6): standard base64 DER, the key's own
       * certificate first. Entra ID's subject name and issuer authentication needs it.
       */
      readonly x5c?: readonly string[]
    }
  /**
   * A client assertion made elsewhere (RFC 7521 §4.2, RFC 7523 §2.2): a federated workload
   * identity token (Kubernetes projected service account token, GitHub Actions OIDC, Azure
   * `AZURE_FEDERATED_TOKEN_FILE`), asked for again for every request because it rotates.
   */
  | {
      readonly method: 'client_assertion'
      /** Returns the current assertion (a JWT). Secret. */
      readonly getAssertion: (audience: string) => string | Promise<string>
    }

/** A registered OAuth client. */
export interface OAuthClient {
  /** The `client_id`. */
  readonly clientId: string
  /** How it authenticates; default `{ method: 'none' }`. */
  readonly auth?: ClientAuth | undefined
}

/**
 * A small key-value cache for authorization server metadata (public data). The protocol core stays
 * file-free; the store supplies a file-backed implementation in the state directory.
 */
export interface MetadataCache {
  /** The cached value for a key, or undefined when absent or past its TTL. */
  get(key: string): Promise<unknown>
  /** Stores a value for `ttlSeconds`. Failures to write are not fatal to the caller. */
  set(key: string, value: unknown, ttlSeconds: number): Promise<void>
}
