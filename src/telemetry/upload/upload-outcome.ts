/**
 * What an answer of the telemetry API means for the batch that was sent: delivered, moved to the
 * dead-letter file, or kept for a retry (with the error, the status, `Retry-After`, and whether
 * the endpoint itself refused the request).
 *
 * Separate from the request and the token handling because this is the policy that decides
 * whether records can be lost: only an answer about the batch itself (400, 413, 422) may
 * dead-letter it; anything about the endpoint keeps the spool intact.
 *
 * @see ../shared/CONTRACT.md "Telemetry wire format"
 * @internal
 */
import { type EdgeTokenError, InvalidResponseError, UnavailableError } from '../../errors.js'
import { parseRetryAfter } from '../../lib/http/retry-after.js'
import { isObject, parseJson } from '../../lib/validate.js'

/** What became of one attempt to send a batch. */
export type Outcome =
  | { kind: 'delivered'; status: number }
  | {
      kind: 'retry'
      error: EdgeTokenError
      retryAfterMs?: number | undefined
      status?: number
      /** The endpoint refused the request itself (not the batch): a configuration problem. */
      endpoint?: boolean
    }
  | { kind: 'dead-letter'; status: number; reason: string }

/** An HTTP answer as read by the uploader: the body only as far as it is needed for a reason. */
export interface HttpAnswer {
  /** The HTTP status. */
  status: number
  /** The response headers. */
  headers: Record<string, string | string[] | undefined>
  /** The start of the body (bounded), for the error reason. */
  text: string
}

const RETRYABLE_4XX = new Set([408, 409, 425, 429])
/** Answers about the batch itself (its content or size): the only ones that dead-letter it. */
const BATCH_REJECTED = new Set([400, 413, 422])

/**
 * One line of server text, bounded and printable: server text is untrusted and ends up in logs
 * and the status file.
 *
 * @param text - the text.
 * @returns at most 200 printable ASCII characters, control characters collapsed to spaces.
 */
export function serverLine(text: string): string {
  return text
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, 200)
}

/**
 * Classifies an answer other than 401 (the token handling answers that one).
 *
 * @param answer - the status, headers and the start of the body.
 * @param host - the API's host, for the messages.
 * @param now - the clock, epoch ms; read only for a `Retry-After` HTTP-date.
 * @returns delivered for a 2xx that is not an HTML page (a captive portal's 200); dead-letter for
 *   400, 413, 422; a retry for 3xx, 408, 409, 425, 429, 5xx (with `Retry-After`); a retry marked
 *   `endpoint` for 403, 404, 405, 410, 415 and any other 4xx.
 */
export function classifyAnswer(answer: HttpAnswer, host: string, now: () => number): Outcome {
  const { status, headers, text } = answer
  const contentType = String(headers['content-type'] ?? '').toLowerCase()
  if (status >= 200 && status < 300) {
    if (contentType.includes('text/html')) {
      return {
        kind: 'retry',
        status,
        error: new InvalidResponseError(
          `${host} answered with an HTML page instead of the API (captive portal?); the batch is kept`,
          { status },
        ),
      }
    }
    return { kind: 'delivered', status }
  }
  const reason = describe(status, text)
  if (status >= 500 || RETRYABLE_4XX.has(status) || (status >= 300 && status < 400)) {
    const retryAfter = parseRetryAfter(headers['retry-after'], now())
    const error =
      status >= 300 && status < 400
        ? new InvalidResponseError(`${host} redirected the upload (${status}); the batch is kept`, {
            status,
          })
        : new UnavailableError(`telemetry API ${host} answered ${reason}`, {
            status,
            retryAfterSeconds: retryAfter,
          })
    return {
      kind: 'retry',
      status,
      error,
      retryAfterMs: retryAfter === undefined ? undefined : retryAfter * 1000,
    }
  }
  if (BATCH_REJECTED.has(status)) return { kind: 'dead-letter', status, reason }
  // 403, 404, 405, 410, 415, any other 4xx: nothing is wrong with this batch; the endpoint
  // (URL, method, scope) is. Dead-lettering would empty the whole spool into a rotating file.
  return {
    kind: 'retry',
    status,
    endpoint: true,
    error: new UnavailableError(
      `telemetry API ${host} refused the upload (${reason}): check telemetry.endpoint and the token's scope; the spool is kept`,
      { status },
    ),
  }
}

/** `400 invalid_request: seq must be ...` from an OAuth-style JSON error body, else the status. */
function describe(status: number, text: string): string {
  const body = parseJson(text)
  if (isObject(body) && typeof body.error === 'string') {
    const desc = typeof body.error_description === 'string' ? `: ${body.error_description}` : ''
    return serverLine(`${status} ${body.error}${desc}`)
  }
  return String(status)
}
