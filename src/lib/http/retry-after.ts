/**
 * `Retry-After` parsing (RFC 9110 §10.2.3): either delay-seconds or an HTTP-date.
 *
 * @internal
 */

/** The longest wait we accept from a server, so a hostile header cannot park us for days. */
export const MAX_RETRY_AFTER_SECONDS = 3600

/**
 * Parses a `Retry-After` header value into whole seconds from now.
 *
 * @param value - the header value, if any.
 * @param nowMs - the current time, epoch ms (for HTTP-dates).
 * @returns seconds to wait (0..{@link MAX_RETRY_AFTER_SECONDS}), or undefined when absent or invalid.
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3
 */
export function parseRetryAfter(
  value: string | string[] | undefined | null,
  nowMs = Date.now(),
): number | undefined {
  const v = Array.isArray(value) ? value[0] : value
  if (typeof v !== 'string') return undefined
  const text = v.trim()
  let seconds: number
  if (/^\d{1,10}$/.test(text)) {
    seconds = Number(text)
  } else {
    // HTTP-date (IMF-fixdate and the two obsolete forms) always starts with a day name; without this
    // check Date.parse would read '-5' or '2' as a date.
    if (!/^[A-Za-z]{3}/.test(text)) return undefined
    const at = Date.parse(text)
    if (Number.isNaN(at)) return undefined
    seconds = Math.ceil((at - nowMs) / 1000)
  }
  return Math.min(Math.max(seconds, 0), MAX_RETRY_AFTER_SECONDS)
}
