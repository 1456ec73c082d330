/**
 * One attempt to deliver a batch: an access token from the token source, the POST, and a 401
 * answered with a renewed or refreshed token before the answer is classified.
 *
 * Separate from the uploader's loops because the token handling is the subtle part of a send: a
 * token renewed meanwhile must be used at once (not cost a 401 per token lifetime), and only a
 * 401 to a freshly refreshed token means the device must sign in again.
 *
 * @internal
 */
import { EdgeTokenError, UnavailableError } from '../../errors.js'
import type { DPoPHandle, DPoPKeyRecord } from '../../oauth/dpop.js'
import type { SpoolBatch } from '../spool/spool.js'
import type { PostResult, UploadConnection } from './upload-http.js'
import { classifyAnswer, type Outcome } from './upload-outcome.js'
import { wireBatchId, wireBody, wireHeaders } from './upload-wire.js'

/** Options of {@link TokenGetter}. */
export interface GetAccessTokenOptions {
  /** Ignore the cached token and refresh (after the API answered 401 to the current one). */
  forceRefresh: boolean
  /**
   * The token the API just answered 401 to: a source that keeps tokens in memory must not hand
   * it back without looking at its store again (it may have been renewed there).
   */
  rejected?: string | undefined
  /**
   * The claims request (compact JSON) of the API's claims challenge (`401` with
   * `WWW-Authenticate: Bearer error="insufficient_claims", claims="..."`): the token must be
   * issued for them now (a refresh with the `claims` parameter). A source that cannot meet them
   * throws `ERR_SIGNIN_REQUIRED`.
   */
  claims?: string | undefined
}

/**
 * An access token with what it takes to present it: a DPoP-bound token (RFC 9449) goes with a
 * proof of its key on every request.
 */
export interface AccessCredential {
  /** The access token. Secret. */
  readonly accessToken: string
  /** `DPoP` for a DPoP-bound token; default `Bearer`. */
  readonly tokenType?: 'Bearer' | 'DPoP' | undefined
  /** With `DPoP`: the key the token is bound to. Secret. */
  readonly dpopKey?: DPoPKeyRecord | undefined
}

/**
 * Returns a valid access token for the API (secret; never logged): a bearer token as a string,
 * or a credential that says how to present it.
 */
export type TokenGetter = (options: GetAccessTokenOptions) => Promise<string | AccessCredential>

/** A `WWW-Authenticate` that asks for a DPoP nonce (RFC 9449 §9): `DPoP error="use_dpop_nonce"`. */
function asksForDPoPNonce(header: string | string[] | undefined): boolean {
  const text = Array.isArray(header) ? header.join(', ') : (header ?? '')
  return /(?:^|[\s,])DPoP\b/i.test(text) && /\berror\s*=\s*"?use_dpop_nonce"?/i.test(text)
}

/** Presents a token: the POST with `Authorization: DPoP` and a fresh proof, or `Bearer`. */
async function postWith(
  connection: UploadConnection,
  credential: AccessCredential,
  body: string,
  batchId: string,
  signal: AbortSignal | undefined,
): Promise<PostResult> {
  const key = credential.tokenType === 'DPoP' ? credential.dpopKey : undefined
  if (key === undefined) return connection.post(body, wireHeaders(credential.accessToken, batchId), signal)
  // Loaded only for a DPoP-bound token: a bearer-only device never pays for jose here.
  const { dpopHandle } = await import('../../oauth/dpop.js')
  const handle: DPoPHandle = await dpopHandle(key)
  const send = async (): Promise<PostResult> => {
    const headers = wireHeaders(credential.accessToken, batchId, 'DPoP')
    // RFC 9449 §7.1: a new proof per request, with `ath` and the API's latest nonce.
    headers.dpop = await handle.proof({
      method: 'POST',
      url: connection.url,
      accessToken: credential.accessToken,
    })
    return connection.post(body, headers, signal)
  }
  const first = await send()
  if (first.kind !== 'answer') return first
  const fresh = handle.rememberNonce(connection.url, first.headers['dpop-nonce'])
  // RFC 9449 §9: one retry with the nonce the API asked for.
  if (!(fresh && first.status === 401 && asksForDPoPNonce(first.headers['www-authenticate']))) return first
  const second = await send()
  if (second.kind === 'answer') handle.rememberNonce(connection.url, second.headers['dpop-nonce'])
  return second
}

function credentialOf(value: string | AccessCredential): AccessCredential {
  return typeof value === 'string' ? { accessToken: value } : value
}

/** Where and as whom {@link sendBatch} sends. */
export interface SendTarget {
  /** The connection to the endpoint. */
  connection: UploadConnection
  /** This device's id. */
  deviceId: string
  /** Access tokens. */
  getAccessToken: TokenGetter
  /** The clock, epoch ms (for a `Retry-After` HTTP-date). */
  now: () => number
}

/**
 * Sends one batch and classifies the answer. A 401 is answered here: first with the token
 * source's current token when it is not the one refused (renewed meanwhile), then with one forced
 * refresh. A 401 with a claims challenge (RFC 6750 §3, Entra ID's `insufficient_claims`) is
 * answered once with a token refreshed for those claims (issue 13).
 *
 * @param target - the connection, device and token source.
 * @param batch - the batch.
 * @param signal - aborts the request (already includes the shutdown grace).
 * @returns the outcome; an `unavailable` error of the token source is a retry.
 * @throws EdgeTokenError `ERR_SIGNIN_REQUIRED` when the API refuses a freshly refreshed token (or
 *   the token source needs a sign-in), `ERR_CANCELLED` when `signal` fired, and any other error of
 *   the token source.
 */
export async function sendBatch(
  target: SendTarget,
  batch: SpoolBatch,
  signal: AbortSignal | undefined,
): Promise<Outcome> {
  const { connection, deviceId, getAccessToken } = target
  const batchId = wireBatchId(deviceId, batch)
  const body = wireBody(deviceId, batchId, batch)
  let refused: string | undefined
  let triedCurrent = false
  let forced = false
  /** The claims challenge to answer next, and whether one was answered already. */
  let claims: string | undefined
  let claimsAsked = false
  for (;;) {
    // Every path through the `try` below sets it (or throws) by asking `get`.
    let credential: AccessCredential = { accessToken: '' }
    const get = async (options: GetAccessTokenOptions): Promise<string> => {
      credential = credentialOf(await getAccessToken(options))
      return credential.accessToken
    }
    let token: string
    try {
      // Asked per batch: the token source answers from its store (cheap) and renews ahead of
      // expiry, so a renewed token is used at once rather than after a 401.
      if (claims !== undefined) {
        token = await get({ forceRefresh: true, claims })
        claims = undefined
        forced = true
      } else if (refused !== undefined && triedCurrent) {
        token = await get({ forceRefresh: true })
        forced = true
      } else {
        token = await get({ forceRefresh: false, rejected: refused })
        if (refused !== undefined) {
          // First answer to a 401: the token may have been renewed since it was read.
          triedCurrent = true
          if (token === refused) {
            token = await get({ forceRefresh: true })
            forced = true
          }
        }
      }
    } catch (err) {
      if (
        err instanceof EdgeTokenError &&
        err.code !== 'ERR_SIGNIN_REQUIRED' &&
        err.code !== 'ERR_CANCELLED'
      ) {
        if (err.category === 'unavailable') {
          // The IdP's `Retry-After` (RFC 9110 §10.2.3) holds for the next try of this batch too.
          const seconds = err instanceof UnavailableError ? err.retryAfterSeconds : undefined
          const retryAfterMs = seconds !== undefined && seconds > 0 ? seconds * 1000 : undefined
          return { kind: 'retry', error: err, retryAfterMs }
        }
      }
      throw err
    }
    const res = await postWith(connection, credential, body, batchId, signal)
    if (res.kind !== 'answer') return res.outcome
    if (res.status === 401) {
      // Loaded on a 401 only: an idle daemon does not pay for the parser.
      const { bearerChallengeError } = await import('../../oauth/www-authenticate.js')
      const challenge = bearerChallengeError(res.headers['www-authenticate'])
      if (challenge?.claims !== undefined) {
        if (claimsAsked) {
          throw new EdgeTokenError(
            'ERR_SIGNIN_REQUIRED',
            'the telemetry API refused a token issued for its claims challenge (401 insufficient_claims): sign in again',
          )
        }
        claimsAsked = true
        claims = challenge.claims
        refused = token
        continue
      }
      if (!forced) {
        refused = token
        continue
      }
      throw new EdgeTokenError(
        'ERR_SIGNIN_REQUIRED',
        'the telemetry API refused a freshly refreshed access token (401): sign in again',
      )
    }
    return classifyAnswer(res, connection.url.host, target.now)
  }
}
