/**
 * Claims requests (OpenID Connect Core §5.5) as Microsoft Entra ID uses them for claims challenges
 * and client capabilities: an API answers 401 with `error="insufficient_claims"` and a base64
 * `claims` value; the client asks the authorization server for a token again with that JSON as the
 * `claims` parameter, merged with its client capabilities (`xms_cc`, e.g. `cp1` for Continuous
 * Access Evaluation), as MSAL does.
 *
 * Every claims value is untrusted (it comes from an API's header or a script's argument): it must
 * be a JSON object of at most {@link MAX_CLAIMS_BYTES} bytes whose members are objects of claim
 * requests (each `null` or an object), else it is refused whole.
 *
 * @see https://openid.net/specs/openid-connect-core-1_0.html#ClaimsParameter
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
 * @packageDocumentation
 */
import { isObject, type JsonObject } from '../lib/validate.js'

/** Longest claims request accepted, bytes of JSON (Entra's challenges are a few hundred). */
export const MAX_CLAIMS_BYTES = 16 * 1024

/** Longest client capability name, characters. */
const MAX_CAPABILITY_LENGTH = 64

function invalidArg(message: string): TypeError {
  return Object.assign(new TypeError(message), { code: 'ERR_INVALID_ARG_VALUE' })
}

/**
 * Checks a parsed claims request's shape: an object whose members (`access_token`, `id_token`,
 * `userinfo`, ...) are objects, whose members (the claims) are `null` or objects (§5.5.1).
 */
function assertClaimsShape(value: unknown): asserts value is Record<string, JsonObject> {
  if (!isObject(value)) throw invalidArg('claims must be a JSON object (OpenID Connect Core §5.5)')
  for (const [member, requests] of Object.entries(value)) {
    if (!isObject(requests)) {
      throw invalidArg(`claims: member ${clip(member)} must be an object of claim requests`)
    }
    for (const [claim, request] of Object.entries(requests)) {
      if (request !== null && !isObject(request)) {
        throw invalidArg(`claims: ${clip(member)}.${clip(claim)} must be null or an object (§5.5.1)`)
      }
    }
  }
}

function clip(value: string): string {
  return value.replace(/[^\x20-\x7e]/g, '').slice(0, 60)
}

/**
 * Parses and checks a claims request given as JSON text.
 *
 * @param json - the JSON text.
 * @returns the claims request, normalised to compact JSON.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when it is larger than {@link MAX_CLAIMS_BYTES}, not
 *   JSON, or not a claims request object.
 * @example
 * ```ts
 * parseClaims('{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}')
 * ```
 * @see https://openid.net/specs/openid-connect-core-1_0.html#ClaimsParameter
 */
export function parseClaims(json: string): string {
  if (typeof json !== 'string' || Buffer.byteLength(json) > MAX_CLAIMS_BYTES) {
    throw invalidArg(`claims must be JSON text of at most ${MAX_CLAIMS_BYTES} bytes`)
  }
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    throw invalidArg('claims is not valid JSON')
  }
  assertClaimsShape(value)
  return JSON.stringify(value)
}

/** Standard or URL-safe base64, with or without padding. */
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/

/**
 * Decodes the `claims` value of a claims challenge: base64 (Entra ID sends the standard alphabet
 * with padding; the URL-safe alphabet is accepted too) of a UTF-8 JSON claims request.
 *
 * @param value - the base64 text.
 * @returns the claims request as compact JSON.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` when it is not strict base64 of UTF-8 JSON of a
 *   claims request object, or too large.
 * @example
 * ```ts
 * decodeClaimsChallenge('eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwidmFsdWUiOiIxNzAwMDAwMDAwIn19fQ==')
 * ```
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
 */
export function decodeClaimsChallenge(value: string): string {
  // 4/3 of the JSON cap, plus padding: anything longer cannot decode to an acceptable request.
  if (typeof value !== 'string' || value.length > Math.ceil((MAX_CLAIMS_BYTES * 4) / 3) + 2) {
    throw invalidArg('claims challenge is too long')
  }
  if (!BASE64.test(value) || value.replace(/=+$/, '').length % 4 === 1) {
    throw invalidArg('claims challenge is not base64')
  }
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(value, 'base64'))
  } catch {
    throw invalidArg('claims challenge is not base64 of UTF-8 text')
  }
  return parseClaims(text)
}

/**
 * Reads a claims request from a script's argument: JSON text, or the base64
 * `claims` value of an API's `WWW-Authenticate` header as it was received.
 *
 * @param value - the argument.
 * @returns the claims request as compact JSON.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` as {@link parseClaims} and {@link decodeClaimsChallenge}.
 * @example
 * ```ts
 * claimsFromArgument(process.argv[2]) // '{"access_token":{...}}' or 'eyJhY2Nlc3Nf...'
 * ```
 */
export function claimsFromArgument(value: string): string {
  const text = value.trim()
  // Base64 never holds `{`, `[`, quotes or spaces: anything that is not base64 is read as JSON.
  return BASE64.test(text) ? decodeClaimsChallenge(text) : parseClaims(text)
}

/**
 * Checks client capabilities (`cp1`, ...): short printable names without quotes or spaces.
 *
 * @param capabilities - the names.
 * @returns them, deduplicated, in order.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for an empty or malformed name.
 */
export function checkClientCapabilities(capabilities: readonly string[]): readonly string[] {
  for (const capability of capabilities) {
    if (
      typeof capability !== 'string' ||
      capability.length === 0 ||
      capability.length > MAX_CAPABILITY_LENGTH ||
      !/^[\x21-\x7e]+$/.test(capability)
    ) {
      throw invalidArg(`a client capability must be 1-${MAX_CAPABILITY_LENGTH} printable characters`)
    }
  }
  return [...new Set(capabilities)]
}

/**
 * The claims request to send: a claims challenge (or a caller's claims) merged with the client's
 * capabilities as `access_token.xms_cc.values`, the way MSAL merges them. Claims of the same
 * member are combined claim by claim; `xms_cc` from the capabilities replaces one in the claims.
 *
 * @param claims - a claims request (compact JSON from {@link parseClaims}), if any.
 * @param capabilities - client capabilities, if any.
 * @returns compact JSON, or undefined when there is nothing to send.
 * @throws TypeError `ERR_INVALID_ARG_VALUE` for a malformed claims request or capability.
 * @example
 * ```ts
 * mergeClaims(undefined, ['cp1']) // '{"access_token":{"xms_cc":{"values":["cp1"]}}}'
 * ```
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge#client-capabilities
 */
export function mergeClaims(
  claims: string | undefined,
  capabilities: readonly string[] | undefined,
): string | undefined {
  const caps = capabilities === undefined ? [] : checkClientCapabilities(capabilities)
  if (claims === undefined && caps.length === 0) return undefined
  const merged: Record<string, JsonObject> = {}
  if (claims !== undefined) {
    const parsed: unknown = JSON.parse(parseClaims(claims))
    assertClaimsShape(parsed)
    for (const [member, requests] of Object.entries(parsed)) merged[member] = { ...requests }
  }
  if (caps.length > 0) merged.access_token = { ...merged.access_token, xms_cc: { values: [...caps] } }
  const json = JSON.stringify(merged)
  if (Buffer.byteLength(json) > MAX_CLAIMS_BYTES) {
    throw invalidArg(`claims must be JSON text of at most ${MAX_CLAIMS_BYTES} bytes`)
  }
  return json
}
