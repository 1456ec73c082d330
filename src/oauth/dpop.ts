/**
 * OAuth 2.0 Demonstrating Proof of Possession (RFC 9449), client side: one key pair per account,
 * proofs (`dpop+jwt`) for token requests and for calls to resource servers, and the server nonces
 * both kinds of server may ask for.
 *
 * Why: with DPoP the refresh token of a public client is bound to a key that never leaves the
 * device, so the authorization server need not rotate it (RFC 9700 §4.14.2): a device killed
 * between the IdP's answer and its durable save keeps a refresh token that still works, and a
 * copied refresh token is useless elsewhere.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9449
 * @packageDocumentation
 */
import { createHash, randomUUID } from 'node:crypto'
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose'
import { EdgeTokenError } from '../errors.js'
import { isNonEmptyString, isObject } from '../lib/validate.js'

/** The algorithm used when the server allows it (or advertises nothing): ES256 (RFC 9449 §5.1 example). */
export const DEFAULT_DPOP_ALGORITHM = 'ES256'

/**
 * The DPoP algorithms this client can generate a key for, in order of preference: small and fast
 * keys first (an RSA key takes up to 400 ms to generate on a gateway).
 */
export const DPOP_ALGORITHMS: readonly string[] = Object.freeze([
  'ES256',
  'Ed25519',
  'EdDSA',
  'ES384',
  'ES512',
  'PS256',
  'RS256',
])

/** Largest nonce accepted from a server, characters (RFC 9449 §8.1: `1*NQCHAR`). */
const MAX_NONCE_LENGTH = 1024
/** Servers whose last nonce is remembered. */
const MAX_REMEMBERED_NONCES = 32

/**
 * A DPoP key as kept in the encrypted store: the private JWK (which carries the public members
 * too), its algorithm and its RFC 7638 thumbprint (the `jkt` tokens are bound to). Secret.
 */
export interface DPoPKeyRecord {
  /** The JWS algorithm of the proofs. */
  readonly alg: string
  /** The private key as a JWK. Secret: never logged or printed. */
  readonly privateJwk: Readonly<Record<string, unknown>>
  /** base64url SHA-256 JWK thumbprint of the public key (RFC 7638), the tokens' `cnf.jkt`. */
  readonly jkt: string
}

/** What a proof is for (RFC 9449 §4.2). */
export interface DPoPProofParameters {
  /** `htm`: the HTTP method of the request. */
  readonly method: string
  /** `htu`: the request URL (query and fragment are dropped, §4.2). */
  readonly url: string | URL
  /** The access token the request carries, for `ath` (§4.2, calls to resource servers). Secret. */
  readonly accessToken?: string | undefined
  /** A server nonce; default the one last received from the URL's origin, if any. */
  readonly nonce?: string | undefined
}

/** A DPoP key ready to sign proofs. Made by {@link dpopHandle}. */
export interface DPoPHandle {
  /** The JWS algorithm. */
  readonly alg: string
  /** The key's thumbprint (`cnf.jkt` of the tokens it binds). */
  readonly jkt: string
  /**
   * Signs a fresh proof (new `jti`, `iat` now) for one request.
   *
   * @param parameters - method, URL, access token, nonce.
   * @returns the compact JWS for the `DPoP` header.
   */
  proof(parameters: DPoPProofParameters): Promise<string>
  /**
   * Remembers a server's `DPoP-Nonce` answer for later proofs to its origin.
   *
   * @param url - the URL that answered.
   * @param value - the `DPoP-Nonce` header value, if any.
   * @returns true when it is a new nonce (worth one retry after `use_dpop_nonce`).
   */
  rememberNonce(url: string | URL, value: unknown): boolean
}

/**
 * Chooses the DPoP algorithm for a server: ES256 when it is allowed, else the first of
 * {@link DPOP_ALGORITHMS} the server lists.
 *
 * @param supported - the server's `dpop_signing_alg_values_supported`, when advertised.
 * @returns the algorithm, or undefined when the server lists only algorithms we cannot generate.
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-5.1
 */
export function chooseDPoPAlgorithm(supported: readonly string[] | undefined): string | undefined {
  if (supported === undefined || supported.length === 0) return DEFAULT_DPOP_ALGORITHM
  return DPOP_ALGORITHMS.find((alg) => supported.includes(alg))
}

function publicJwk(jwk: Readonly<Record<string, unknown>>): JWK {
  // RFC 7517 §4-6: only the public members; the private ones (d, p, q, dp, dq, qi, oth) stay home.
  const { kty, crv, x, y, n, e } = jwk as Record<string, string | undefined>
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries({ kty, crv, x, y, n, e })) {
    if (value !== undefined) out[name] = value
  }
  return out as JWK
}

/**
 * Generates a new DPoP key pair.
 *
 * @param alg - the JWS algorithm (one of {@link DPOP_ALGORITHMS}). Default ES256.
 * @returns the key record to keep in the encrypted store.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for an algorithm not in {@link DPOP_ALGORITHMS}.
 * @example
 * ```ts
 * const key = await generateDPoPKey(chooseDPoPAlgorithm(server.dpopSigningAlgValues))
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-4
 */
export async function generateDPoPKey(alg: string = DEFAULT_DPOP_ALGORITHM): Promise<DPoPKeyRecord> {
  if (!DPOP_ALGORITHMS.includes(alg)) {
    throw Object.assign(new TypeError(`generateDPoPKey: unsupported algorithm ${alg}`), {
      code: 'ERR_INVALID_ARG_VALUE' as const,
    })
  }
  const { privateKey } = await generateKeyPair(alg, {
    extractable: true,
    ...(alg === 'EdDSA' ? { crv: 'Ed25519' } : {}),
  })
  const jwk = await exportJWK(privateKey)
  const jkt = await calculateJwkThumbprint(publicJwk(jwk as Record<string, unknown>), 'sha256')
  return Object.freeze({ alg, privateJwk: Object.freeze({ ...jwk }), jkt })
}

/**
 * Whether a value has the shape of a {@link DPoPKeyRecord} (a private JWK with `d`).
 *
 * @param value - anything (e.g. from the decrypted store).
 * @returns true when it does.
 */
export function isDPoPKeyRecord(value: unknown): value is DPoPKeyRecord {
  return (
    isObject(value) &&
    typeof value.alg === 'string' &&
    DPOP_ALGORITHMS.includes(value.alg) &&
    isNonEmptyString(value.jkt) &&
    isObject(value.privateJwk) &&
    isNonEmptyString(value.privateJwk.kty) &&
    isNonEmptyString(value.privateJwk.d)
  )
}

/** The `ath` of an access token: base64url SHA-256 of its ASCII (RFC 9449 §4.2). */
export function accessTokenHash(accessToken: string): string {
  return createHash('sha256').update(accessToken, 'ascii').digest('base64url')
}

/** The `htu` of a URL: without query and fragment (RFC 9449 §4.2). */
export function htuOf(url: string | URL): string {
  const u = new URL(url)
  u.search = ''
  u.hash = ''
  return u.href
}

const nonces = new Map<string, string>()

/**
 * The nonce a server last sent (`DPoP-Nonce`), per origin, for the next proof to it.
 *
 * @param url - any URL of the server.
 * @returns the nonce, if one was received.
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-8
 */
export function dpopNonceFor(url: string | URL): string | undefined {
  return nonces.get(new URL(url).origin)
}

/**
 * Remembers a `DPoP-Nonce` response header (§8.1: `1*NQCHAR`; anything else is ignored).
 *
 * @param url - the URL that answered.
 * @param value - the header value, if any.
 * @returns the nonce when it was valid and differs from the one remembered, else undefined.
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-8.1
 */
export function rememberDPoPNonce(url: string | URL, value: unknown): string | undefined {
  const nonce = Array.isArray(value) ? value[0] : value
  if (typeof nonce !== 'string' || nonce.length === 0 || nonce.length > MAX_NONCE_LENGTH) return undefined
  if (!/^[\x21\x23-\x5b\x5d-\x7e]+$/.test(nonce)) return undefined
  const origin = new URL(url).origin
  if (nonces.get(origin) === nonce) return undefined
  nonces.delete(origin)
  nonces.set(origin, nonce)
  if (nonces.size > MAX_REMEMBERED_NONCES) {
    const oldest = nonces.keys().next().value
    if (oldest !== undefined) nonces.delete(oldest)
  }
  return nonce
}

const imported = new Map<string, Promise<DPoPHandle>>()

/**
 * A signing handle for a stored key (imported once per process and key).
 *
 * @param key - the key record from the store.
 * @param options - the clock (proof `iat`), for tests. Default `Date.now`.
 * @returns the handle.
 * @throws EdgeTokenError `ERR_STORE_UNREADABLE` when the record is not a usable private key.
 * @example
 * ```ts
 * const handle = await dpopHandle(key)
 * headers.dpop = await handle.proof({ method: 'POST', url: endpoint, accessToken })
 * ```
 */
export function dpopHandle(key: DPoPKeyRecord, options: { now?: () => number } = {}): Promise<DPoPHandle> {
  const cacheKey = `${key.jkt} ${key.alg}`
  const now = options.now
  if (now === undefined) {
    const cached = imported.get(cacheKey)
    if (cached) return cached
  }
  const made = makeHandle(key, now ?? Date.now)
  if (now === undefined) {
    imported.set(cacheKey, made)
    made.catch(() => imported.delete(cacheKey))
  }
  return made
}

async function makeHandle(key: DPoPKeyRecord, now: () => number): Promise<DPoPHandle> {
  if (!isDPoPKeyRecord(key)) {
    throw new EdgeTokenError('ERR_STORE_UNREADABLE', 'the stored DPoP key is not a private key')
  }
  let privateKey: Awaited<ReturnType<typeof importJWK>>
  try {
    privateKey = await importJWK(key.privateJwk as JWK, key.alg)
  } catch (err) {
    throw new EdgeTokenError('ERR_STORE_UNREADABLE', 'the stored DPoP key cannot be imported', {
      cause: err,
    })
  }
  const jwk = publicJwk(key.privateJwk)
  const { alg, jkt } = key
  return Object.freeze({
    alg,
    jkt,
    proof: async (parameters: DPoPProofParameters): Promise<string> => {
      const htu = htuOf(parameters.url)
      const nonce = parameters.nonce ?? dpopNonceFor(htu)
      // RFC 9449 §4.2: typ dpop+jwt, the public key in the header; jti, htm, htu, iat; ath with a token.
      const claims: Record<string, string> = { jti: randomUUID(), htm: parameters.method, htu }
      if (parameters.accessToken !== undefined) claims.ath = accessTokenHash(parameters.accessToken)
      if (nonce !== undefined) claims.nonce = nonce
      return new SignJWT(claims)
        .setProtectedHeader({ alg, typ: 'dpop+jwt', jwk })
        .setIssuedAt(Math.floor(now() / 1000))
        .sign(privateKey)
    },
    rememberNonce: (url: string | URL, value: unknown): boolean =>
      rememberDPoPNonce(url, value) !== undefined,
  })
}

/**
 * Whether an error body or challenge asks for a DPoP nonce (`use_dpop_nonce`, RFC 9449 §8 and §9).
 *
 * @param error - the OAuth `error` (token endpoint) or the challenge's `error` (resource server).
 * @returns true for `use_dpop_nonce`.
 */
export function isUseDPoPNonce(error: unknown): boolean {
  return error === 'use_dpop_nonce'
}
