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
import { EdgeTokenError } from '../errors.js'
import type { SpoolBatch } from './spool.js'
import type { UploadConnection } from './upload-http.js'
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
}

/** Returns a valid access token for the API (secret; never logged). */
export type TokenGetter = (options: GetAccessTokenOptions) => Promise<string>

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
 * refresh.
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
  for (;;) {
    let token: string
    try {
      // Asked per batch: the token source answers from its store (cheap) and renews ahead of
      // expiry, so a renewed token is used at once rather than after a 401.
      if (refused !== undefined && triedCurrent) {
        token = await getAccessToken({ forceRefresh: true })
        forced = true
      } else {
        token = await getAccessToken({ forceRefresh: false, rejected: refused })
        if (refused !== undefined) {
          // First answer to a 401: the token may have been renewed since it was read.
          triedCurrent = true
          if (token === refused) {
            token = await getAccessToken({ forceRefresh: true })
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
        if (err.category === 'unavailable') return { kind: 'retry', error: err }
      }
      throw err
    }
    const res = await connection.post(body, wireHeaders(token, batchId), signal)
    if (res.kind !== 'answer') return res.outcome
    if (res.status === 401) {
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
