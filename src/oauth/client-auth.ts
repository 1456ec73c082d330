/**
 * Client authentication at the token (and device authorization) endpoint.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6749#section-2.3
 * @see https://www.rfc-editor.org/rfc/rfc7523#section-2.2
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto'
import { EdgeTokenError } from '../errors.js'
import type { ClientAuth, OAuthClient } from './types.js'

/** RFC 7523 §2.2 client assertion type. */
export const JWT_BEARER_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
/** Lifetime of a private_key_jwt assertion, seconds. */
export const ASSERTION_TTL_SECONDS = 60

/** Options of {@link applyClientAuth}. */
export interface ApplyClientAuthOptions {
  /** The clock, epoch ms (assertion `iat`/`exp`). Default `Date.now`. */
  now?: (() => number) | undefined
}

/**
 * The application/x-www-form-urlencoded encoding RFC 6749 §2.3.1 asks for before Basic
 * authentication (so a secret with `:` or `%` survives).
 */
function formEncode(value: string): string {
  return new URLSearchParams([['', value]]).toString().slice(1)
}

/**
 * Adds a client's authentication to a request: `client_id` in the body for public clients,
 * HTTP Basic or body parameters for client secrets, a JWT assertion signed here (a fresh `jti`
 * and a 60-second `exp` each time), or one made elsewhere (a federated workload identity token).
 *
 * @param client - the client and its authentication method (default `none`).
 * @param audience - the assertion audience: the token endpoint URL.
 * @param body - the form body to complete (mutated).
 * @param headers - the request headers to complete (mutated).
 * @param options - the clock.
 * @returns when the body and headers are complete.
 * @throws EdgeTokenError `ERR_CONFIG` when a private key cannot be imported, or a supplied
 *   assertion is not a JWT; whatever the assertion callback throws.
 */
export async function applyClientAuth(
  client: OAuthClient,
  audience: string,
  body: URLSearchParams,
  headers: Record<string, string>,
  options: ApplyClientAuthOptions = {},
): Promise<void> {
  const auth: ClientAuth = client.auth ?? { method: 'none' }
  switch (auth.method) {
    case 'none':
      body.set('client_id', client.clientId)
      return
    case 'client_secret_basic': {
      // RFC 6749 §2.3.1: form-encode id and secret, then base64 "id:secret".
      const credentials = `${formEncode(client.clientId)}:${formEncode(auth.clientSecret)}`
      headers.authorization = `Basic ${Buffer.from(credentials, 'utf8').toString('base64')}`
      return
    }
    case 'client_secret_post':
      body.set('client_id', client.clientId)
      body.set('client_secret', auth.clientSecret)
      return
    case 'private_key_jwt': {
      body.set('client_id', client.clientId)
      body.set('client_assertion_type', JWT_BEARER_ASSERTION)
      body.set('client_assertion', await signAssertion(client.clientId, audience, auth, options))
      return
    }
    case 'client_assertion': {
      body.set('client_id', client.clientId)
      body.set('client_assertion_type', JWT_BEARER_ASSERTION)
      body.set('client_assertion', checkAssertion(await auth.getAssertion(audience)))
      return
    }
  }
}

/** Three base64url parts: a JWS in compact serialization (RFC 7515 §7.1). */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

/**
 * RFC 7523 §2.2: the assertion MUST be a single JWT. A file that holds something else (an empty
 * file mid-rotation, a PEM, a JSON document) is refused here rather than sent; the message never
 * shows it.
 */
function checkAssertion(value: unknown): string {
  const text = typeof value === 'string' ? value.trim() : ''
  if (!COMPACT_JWS.test(text)) {
    throw new EdgeTokenError('ERR_CONFIG', 'the client assertion is not a JWT (RFC 7523 §2.2)')
  }
  return text
}

async function signAssertion(
  clientId: string,
  audience: string,
  auth: Extract<ClientAuth, { method: 'private_key_jwt' }>,
  options: ApplyClientAuthOptions,
): Promise<string> {
  const { SignJWT, importJWK } = await import('jose')
  type SigningKey = Parameters<InstanceType<typeof SignJWT>['sign']>[0]
  const iat = Math.floor((options.now ?? Date.now)() / 1000)
  const header: Record<string, string> = { alg: auth.alg, typ: 'JWT' }
  if (auth.kid) header.kid = auth.kid
  if (auth.x5tS256) header['x5t#S256'] = auth.x5tS256
  if (auth.x5t) header.x5t = auth.x5t
  const chain = auth.x5c && auth.x5c.length > 0 ? [...auth.x5c] : undefined
  try {
    const key: SigningKey =
      'kty' in auth.privateKey || !('type' in auth.privateKey)
        ? await importJWK(auth.privateKey as Parameters<typeof importJWK>[0], auth.alg)
        : (auth.privateKey as SigningKey)
    // RFC 7523 §3: iss = sub = client_id, aud = the token endpoint, a unique jti, short lifetime.
    return await new SignJWT({})
      // RFC 7515 §4.1.6: x5c is an array of base64 (not base64url) DER certificates, leaf first.
      .setProtectedHeader({ ...(header as { alg: string }), ...(chain ? { x5c: chain } : {}) })
      .setIssuer(clientId)
      .setSubject(clientId)
      .setAudience(audience)
      .setJti(randomUUID())
      .setIssuedAt(iat)
      .setExpirationTime(iat + ASSERTION_TTL_SECONDS)
      .sign(key)
  } catch (err) {
    // The key is configuration: report which algorithm it failed for, never the key.
    throw new EdgeTokenError('ERR_CONFIG', `the client's private key cannot sign with ${auth.alg}`, {
      cause: err,
    })
  }
}
