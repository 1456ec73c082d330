/**
 * JWS algorithm policy shared by id_token verification and the reference receiver.
 *
 * @internal
 */

/**
 * The asymmetric JWS algorithms edgetoken accepts for signed tokens; `none` and HMAC never (a
 * public JWKS must not be usable as a shared secret, RFC 8725 §3.1).
 */
export const ASYMMETRIC_JWS_ALGORITHMS: readonly string[] = Object.freeze([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
])
