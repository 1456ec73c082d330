/**
 * Validates a `<prefix>/<deviceId>/login` payload exactly like the reference firmware
 * (firmware/edgedisplay/parse.py) and schema/login.schema.json. Depends only on the published
 * contract, never on edgetoken's `src/`.
 *
 * @packageDocumentation
 */

/** A device flow waiting for the user. */
export interface PendingLogin {
  kind: 'pending'
  /** What the user types. */
  userCode: string
  /** Where the user goes (https, or http to loopback). */
  verificationUri: string
  /** The same with the code filled in, when the server sent one (what a QR code encodes). */
  verificationUriComplete?: string
  /** The ISO string as sent. */
  expiresAt: string
  /** Unix seconds. */
  expiresEpoch: number
  /** The authorization server's text, when sent. */
  message?: string
}

/** The end states of a device flow. */
export type EndState = 'approved' | 'denied' | 'expired' | 'cancelled'

/** How the flow ended. */
export interface EndedLogin {
  kind: 'ended'
  /** How it ended. */
  state: EndState
}

/** The agent cannot renew its tokens and waits for a new sign-in (retained until it has one). */
export interface SigninRequiredLogin {
  kind: 'signin_required'
  /** The ISO string as sent. */
  since: string
  /** Unix seconds. */
  sinceEpoch: number
  /** Whether the agent starts a sign-in on a pair request. */
  pair: boolean
}

/** The zero-length retained publish: nothing to show. */
export interface ClearedLogin {
  kind: 'cleared'
}

/** Any valid login-topic message. */
export type LoginState = PendingLogin | EndedLogin | SigninRequiredLogin | ClearedLogin

/** Largest accepted login payload, in bytes. */
export const MAX_LOGIN_PAYLOAD_BYTES = 2048
const END_STATES: readonly string[] = ['approved', 'denied', 'expired', 'cancelled']
const PENDING_KEYS = new Set([
  'state',
  'user_code',
  'verification_uri',
  'verification_uri_complete',
  'expires_at',
  'message',
])
const SIGNIN_KEYS = new Set(['state', 'since', 'pair'])

function isPrintableAscii(s: string): boolean {
  return /^[\x21-\x7e]*$/.test(s)
}

/**
 * The schema's `displayUrl`: https with a DNS-style host and no user info, or http to loopback.
 *
 * @param url - the candidate.
 * @returns whether a display may show it.
 */
export function isDisplayUrl(url: unknown): url is string {
  if (typeof url !== 'string' || url.length < 10 || url.length > 512 || !isPrintableAscii(url)) return false
  return /^(https:\/\/[A-Za-z0-9.-]+|http:\/\/(127\.0\.0\.1|localhost|\[::1\]))(:[0-9]{1,5})?([/?#][\x21-\x7e]*)?$/.test(
    url,
  )
}

function daysInMonth(y: number, m: number): number {
  if (m === 2) return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28
  return [4, 6, 9, 11].includes(m) ? 30 : 31
}

/**
 * Parses `YYYY-MM-DDTHH:MM:SS[.f]Z` into Unix seconds (fraction dropped), or null.
 *
 * @param s - the candidate.
 * @returns Unix seconds or null.
 */
export function parseUtc(s: unknown): number | null {
  if (typeof s !== 'string' || s.length > 35) return null
  const m = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z$/.exec(s)
  if (!m) return null
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number]
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth(y, mo) || h > 23 || mi > 59 || sec > 60) return null
  return Date.UTC(y, mo - 1, d, h, mi, Math.min(sec, 59)) / 1000
}

/** C0 controls and DEL: what the schema's message pattern forbids. */
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}

function codePoints(s: string): number {
  return [...s].length
}

/**
 * Validates one login-topic payload.
 *
 * @param payload - the raw MQTT payload.
 * @returns the state, or null when the payload is not a contract message (the display then
 *   ignores it: a bad publisher can blank nothing and show nothing of its own).
 */
export function parseLogin(payload: Buffer | string): LoginState | null {
  const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
  if (bytes === 0) return { kind: 'cleared' }
  if (bytes > MAX_LOGIN_PAYLOAD_BYTES) return null
  let obj: unknown
  try {
    const text =
      typeof payload === 'string' ? payload : new TextDecoder('utf-8', { fatal: true }).decode(payload)
    obj = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return null
  const o = obj as Record<string, unknown>
  const state = o.state
  if (typeof state === 'string' && END_STATES.includes(state)) {
    return Object.keys(o).length === 1 ? { kind: 'ended', state: state as EndState } : null
  }
  if (state === 'signin_required') return parseSignin(o)
  if (state !== 'pending') return null
  for (const key of Object.keys(o)) if (!PENDING_KEYS.has(key)) return null
  const code = o.user_code
  if (typeof code !== 'string' || code.length < 1 || code.length > 32 || !isPrintableAscii(code)) return null
  if (!isDisplayUrl(o.verification_uri)) return null
  if ('verification_uri_complete' in o && !isDisplayUrl(o.verification_uri_complete)) return null
  const expiresEpoch = parseUtc(o.expires_at)
  if (expiresEpoch === null) return null
  const message = o.message
  if ('message' in o) {
    if (typeof message !== 'string' || codePoints(message) < 1 || codePoints(message) > 512) return null
    if (hasControl(message)) return null
  }
  const result: PendingLogin = {
    kind: 'pending',
    userCode: code,
    verificationUri: o.verification_uri as string,
    expiresAt: o.expires_at as string,
    expiresEpoch,
  }
  if (typeof o.verification_uri_complete === 'string')
    result.verificationUriComplete = o.verification_uri_complete
  if (typeof message === 'string') result.message = message
  return result
}

function parseSignin(o: Record<string, unknown>): SigninRequiredLogin | null {
  const keys = Object.keys(o)
  if (keys.length !== SIGNIN_KEYS.size || !keys.every((k) => SIGNIN_KEYS.has(k))) return null
  if (typeof o.pair !== 'boolean') return null
  const sinceEpoch = parseUtc(o.since)
  if (sinceEpoch === null) return null
  return { kind: 'signin_required', since: o.since as string, sinceEpoch, pair: o.pair }
}
