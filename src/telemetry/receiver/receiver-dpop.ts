/**
 * The reference receiver's DPoP checks (RFC 9449 §4.3 and §7.1): a DPoP-bound access token
 * (`cnf.jkt`) is accepted only with the `DPoP` scheme and a proof of its key made for this very
 * request, fresh and never seen before; and never as a bearer token.
 *
 * jose is imported by the first proof checked, like the receiver's token verification.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-4.3
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-7.1
 * @internal
 */
import { createHash, createHmac, randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { JWTPayload } from 'jose'
import { isNonEmptyString, isObject } from '../../lib/validate.js'

/** Options of {@link createDPoPVerifier}. */
export interface DPoPVerifierOptions {
  /** Accepted proof algorithms (asymmetric only). */
  algorithms: readonly string[]
  /** How old a proof's `iat` may be, seconds. Default 60. */
  maxAgeSeconds?: number | undefined
  /** Clock skew tolerated for a proof's `iat` in the future, seconds. Default 30. */
  clockToleranceSeconds?: number | undefined
  /**
   * The endpoint's URL as clients call it (`htu`); default: from the request's `Host` header and
   * path, `https` when the connection is TLS. Set it behind a proxy that rewrites them.
   */
  url?: string | undefined
  /** Require server nonces in proofs (RFC 9449 §9); they change every `nonceLifetimeSeconds`. */
  requireNonce?: boolean | undefined
  /** How long a nonce is good for, seconds. Default 300. */
  nonceLifetimeSeconds?: number | undefined
  /** Proof `jti`s remembered at most (replay cache). Default 100 000. */
  maxRememberedProofs?: number | undefined
  /** The clock, epoch ms. */
  now: () => number
}

/** A failed check: the receiver answers 401 with this DPoP challenge. */
export class DPoPRefusal {
  /** `invalid_dpop_proof`, `invalid_token` or `use_dpop_nonce`. */
  readonly error: string
  /** The one-line description. */
  readonly description: string
  /** A `DPoP-Nonce` to send with the refusal (with `use_dpop_nonce`). */
  readonly nonce: string | undefined

  /**
   * @param error - the challenge's error code.
   * @param description - why.
   * @param nonce - the nonce to hand out.
   */
  constructor(error: string, description: string, nonce?: string) {
    this.error = error
    this.description = description
    this.nonce = nonce
  }
}

/** What {@link createDPoPVerifier} returns. */
export interface DPoPVerifier {
  /**
   * Checks the proof of a request that presented `token` with the `DPoP` scheme (RFC 9449 §4.3).
   *
   * @param req - the request (method, URL, the `DPoP` header).
   * @param token - the access token as presented (for `ath`).
   * @param payload - the verified access token's claims (`cnf.jkt`).
   * @throws DPoPRefusal when anything does not match.
   */
  verify(req: IncomingMessage, token: string, payload: JWTPayload): Promise<void>
  /** The nonce to send in `DPoP-Nonce` now, when nonces are required. */
  currentNonce(): string | undefined
  /** The `algs` parameter of the `DPoP` challenge. */
  readonly algs: string
}

/**
 * The `cnf.jkt` of an access token (RFC 9449 §6.1), when it has one.
 *
 * @param payload - the verified claims.
 * @returns the thumbprint, or undefined for a token not bound to a DPoP key.
 */
export function boundThumbprint(payload: JWTPayload): string | undefined {
  const cnf = payload.cnf
  return isObject(cnf) && isNonEmptyString(cnf.jkt) ? cnf.jkt : undefined
}

function expectedHtu(req: IncomingMessage, configured: string | undefined): string | undefined {
  const path = (req.url ?? '/').split('?')[0] ?? '/'
  try {
    if (configured !== undefined) return new URL(configured).href.split(/[?#]/)[0]
    const host = req.headers.host
    if (!isNonEmptyString(host)) return undefined
    const scheme = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'
    return new URL(`${scheme}://${host}${path}`).href
  } catch {
    return undefined
  }
}

function normalizeHtu(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined
  try {
    const url = new URL(value)
    url.search = ''
    url.hash = ''
    return url.href
  } catch {
    return undefined
  }
}

/**
 * Creates the DPoP checks of one receiver (its replay cache and nonces).
 *
 * @param options - algorithms, windows, URL, nonces, clock.
 * @returns the verifier.
 */
export function createDPoPVerifier(options: DPoPVerifierOptions): DPoPVerifier {
  const maxAgeMs = (options.maxAgeSeconds ?? 60) * 1000
  const skewMs = (options.clockToleranceSeconds ?? 30) * 1000
  const maxRemembered = Math.max(1, options.maxRememberedProofs ?? 100_000)
  const nonceLifetimeMs = Math.max(1, options.nonceLifetimeSeconds ?? 300) * 1000
  const nonceKey = randomBytes(32)
  // jkt + jti -> when it can be forgotten (a proof that old fails the iat check anyway).
  const seen = new Map<string, number>()
  let jose: typeof import('jose') | undefined

  const nonceAt = (slot: number) =>
    createHmac('sha256', nonceKey).update(String(slot)).digest('base64url').slice(0, 32)
  const slotOf = (ms: number) => Math.floor(ms / nonceLifetimeMs)
  const currentNonce = () => (options.requireNonce ? nonceAt(slotOf(options.now())) : undefined)
  // The previous slot's nonce stays good, so a nonce handed out just before a change still works.
  const nonceValid = (nonce: unknown) => {
    const slot = slotOf(options.now())
    return typeof nonce === 'string' && (nonce === nonceAt(slot) || nonce === nonceAt(slot - 1))
  }

  const forget = (now: number) => {
    for (const [key, until] of seen) {
      if (seen.size <= maxRemembered && until > now) break
      seen.delete(key)
    }
  }

  const invalid = (description: string) => new DPoPRefusal('invalid_dpop_proof', description)

  return {
    algs: options.algorithms.join(' '),
    currentNonce,
    async verify(req, token, payload) {
      const jkt = boundThumbprint(payload)
      // RFC 9449 §7.1: the DPoP scheme carries only DPoP-bound tokens.
      if (jkt === undefined) throw new DPoPRefusal('invalid_token', 'the access token is not DPoP-bound')
      // §4.3 (1): exactly one DPoP header.
      const proofs = req.headersDistinct.dpop
      const proof = proofs?.length === 1 ? proofs[0] : undefined
      if (!isNonEmptyString(proof) || proof.length > 8192) {
        throw invalid('exactly one DPoP proof header is required')
      }
      jose ??= await import('jose')
      let header: { jwk?: unknown }
      let claims: JWTPayload
      try {
        // §4.3 (2-6): a JWT, typ dpop+jwt, an allowed asymmetric alg, signed by the public key in its jwk.
        const verified = await jose.jwtVerify(proof, jose.EmbeddedJWK, {
          typ: 'dpop+jwt',
          algorithms: [...options.algorithms],
        })
        header = verified.protectedHeader
        claims = verified.payload
      } catch {
        throw invalid('the DPoP proof is not a valid dpop+jwt signed by its jwk')
      }
      // §4.3 (7-9): jti, htm, htu.
      if (!isNonEmptyString(claims.jti) || claims.jti.length > 256) throw invalid('jti is missing')
      if (claims.htm !== req.method) throw invalid('htm does not match the request method')
      const htu = expectedHtu(req, options.url)
      if (htu === undefined || normalizeHtu(claims.htu) !== htu)
        throw invalid('htu does not match the request URL')
      // §4.3 (10): the nonce, when this server hands them out.
      if (options.requireNonce && !nonceValid(claims.nonce)) {
        throw new DPoPRefusal('use_dpop_nonce', 'a DPoP nonce is required', currentNonce())
      }
      // §4.3 (11): iat within the window.
      const now = options.now()
      if (typeof claims.iat !== 'number' || !Number.isFinite(claims.iat)) throw invalid('iat is missing')
      const iatMs = claims.iat * 1000
      if (iatMs > now + skewMs || iatMs < now - maxAgeMs - skewMs) {
        throw invalid('iat is outside the accepted window')
      }
      // §4.3 (12): ath, the hash of the token presented with it.
      const ath = createHash('sha256').update(token, 'ascii').digest('base64url')
      if (claims.ath !== ath) throw invalid('ath does not match the access token')
      // §4.3 (12), §6.1: the proof's key is the one the token is bound to.
      const thumbprint = await jose.calculateJwkThumbprint(header.jwk as import('jose').JWK, 'sha256')
      if (thumbprint !== jkt) throw invalid('the DPoP key is not the one the access token is bound to')
      // §11.1: a proof is good for one request.
      forget(now)
      const key = `${jkt}.${claims.jti}`
      if (seen.has(key)) throw invalid('the DPoP proof was used before')
      seen.set(key, iatMs + maxAgeMs + 2 * skewMs)
    },
  }
}
