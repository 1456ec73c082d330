/**
 * The `WWW-Authenticate` header (RFC 9110 §11.6.1) a protected resource answers a 401 with, and
 * the Bearer challenge's error (RFC 6750 §3), including Microsoft Entra ID's claims challenge
 * (`error="insufficient_claims"`, `claims="<base64>"`).
 *
 * The grammar, from RFC 9110 §11.6.1 and §5.6:
 * ```
 * WWW-Authenticate = #challenge
 * challenge   = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 * auth-param  = token BWS "=" BWS ( token / quoted-string )
 * token68     = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
 * ```
 * Commas separate both challenges and their parameters; a parameter is told from the next
 * challenge by the `=` after its name.
 *
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-11.6.1
 * @see https://www.rfc-editor.org/rfc/rfc6750#section-3
 * @packageDocumentation
 */
import { InvalidResponseError } from '../errors.js'
import { decodeClaimsChallenge } from './claims.js'

/** One challenge of a `WWW-Authenticate` header. */
export interface AuthChallenge {
  /** The auth-scheme, lower-cased (`bearer`, `dpop`, `basic`): schemes are case-insensitive. */
  readonly scheme: string
  /** The token68 form's value, when the challenge has one instead of parameters. */
  readonly token68?: string | undefined
  /** The parameters, names lower-cased (case-insensitive, §11.2), values unquoted. */
  readonly params: Readonly<Record<string, string>>
}

/** Longest header parsed, characters: a challenge is a few hundred; more is not a challenge. */
const MAX_HEADER_LENGTH = 16 * 1024

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*/

function malformed(what: string): InvalidResponseError {
  return new InvalidResponseError(`WWW-Authenticate: ${what} (RFC 9110 §11.6.1)`)
}

/** A cursor over the header text. */
class Reader {
  pos = 0
  readonly text: string

  constructor(text: string) {
    this.text = text
  }

  get done(): boolean {
    return this.pos >= this.text.length
  }

  peek(): string {
    return this.text[this.pos] ?? ''
  }

  /** OWS / BWS: spaces and tabs. */
  skipSpace(): number {
    const start = this.pos
    while (this.peek() === ' ' || this.peek() === '\t') this.pos += 1
    return this.pos - start
  }

  token(): string {
    const start = this.pos
    while (!this.done && TCHAR.test(this.peek())) this.pos += 1
    return this.text.slice(start, this.pos)
  }

  quoted(): string {
    // RFC 9110 §5.6.4: DQUOTE *( qdtext / quoted-pair ) DQUOTE.
    this.pos += 1
    let value = ''
    while (!this.done) {
      const c = this.peek()
      if (c === '"') {
        this.pos += 1
        return value
      }
      if (c === '\\') {
        this.pos += 1
        if (this.done) break
      }
      const ch = this.peek()
      if (ch < ' ' && ch !== '\t') throw malformed('control character in a quoted-string')
      value += ch
      this.pos += 1
    }
    throw malformed('unterminated quoted-string')
  }

  /** Whether a parameter (`token BWS "="`, not a token68's padding) starts here. */
  atParam(): boolean {
    const save = this.pos
    const name = this.token()
    this.skipSpace()
    const param = name.length > 0 && this.peek() === '='
    this.pos = save
    return param
  }

  /** Whether a token68 that ends the challenge (OWS then "," or the end) starts here. */
  token68(): string | undefined {
    const match = TOKEN68.exec(this.text.slice(this.pos))
    if (!match) return undefined
    const after = this.text.slice(this.pos + match[0].length)
    if (!/^[ \t]*(,|$)/.test(after)) return undefined
    this.pos += match[0].length
    return match[0]
  }
}

/**
 * Parses a `WWW-Authenticate` header value (or several: a header repeated on the wire).
 *
 * @param header - the value(s), as an HTTP client gives them.
 * @returns the challenges, in order.
 * @throws InvalidResponseError `ERR_INVALID_RESPONSE` for text that breaks the grammar, a
 *   parameter repeated in a challenge, or a header over 16 KiB.
 * @example
 * ```ts
 * parseWwwAuthenticate('Bearer realm="api", error="invalid_token", DPoP algs="ES256"')
 * // [{ scheme: 'bearer', params: { realm: 'api', error: 'invalid_token' } }, { scheme: 'dpop', params: { algs: 'ES256' } }]
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-11.6.1
 */
export function parseWwwAuthenticate(header: string | readonly string[]): AuthChallenge[] {
  const text = typeof header === 'string' ? header : header.join(', ')
  if (text.length > MAX_HEADER_LENGTH) throw malformed('longer than 16 KiB')
  const r = new Reader(text)
  const challenges: AuthChallenge[] = []
  for (;;) {
    // #rule: empty list elements are allowed (§5.6.1).
    while (r.skipSpace() > 0 || r.peek() === ',') if (r.peek() === ',') r.pos += 1
    if (r.done) return challenges
    const scheme = r.token()
    if (scheme.length === 0) throw malformed(`unexpected character at ${r.pos}`)
    const params: Record<string, string> = Object.create(null)
    let token68: string | undefined
    if (r.skipSpace() > 0 && !r.done && r.peek() !== ',') {
      // A token68 ends its challenge; `name=value` never does (the value follows the "=").
      token68 = r.token68()
      if (token68 === undefined) {
        // #auth-param, until the end or a comma followed by something that is no parameter.
        for (;;) {
          const name = r.token().toLowerCase()
          if (name.length === 0) throw malformed(`expected a parameter name at ${r.pos}`)
          r.skipSpace()
          if (r.peek() !== '=') throw malformed(`expected "=" after ${name}`)
          r.pos += 1
          r.skipSpace()
          const value = r.peek() === '"' ? r.quoted() : r.token()
          if (value.length === 0 && text[r.pos - 1] !== '"') throw malformed(`no value for ${name}`)
          // §11.2: each parameter name MUST only occur once per challenge.
          if (name in params) throw malformed(`parameter ${name} is repeated`)
          params[name] = value
          r.skipSpace()
          if (r.done) break
          if (r.peek() !== ',') throw malformed(`expected "," at ${r.pos}`)
          // Another parameter of this challenge, or the next challenge?
          let next = r.pos
          while (text[next] === ',' || text[next] === ' ' || text[next] === '\t') next += 1
          const save = r.pos
          r.pos = next
          if (r.done || !r.atParam()) {
            r.pos = save
            break
          }
        }
      }
    }
    challenges.push(Object.freeze({ scheme: scheme.toLowerCase(), token68, params: Object.freeze(params) }))
    r.skipSpace()
    if (!r.done && r.peek() !== ',') throw malformed(`expected "," at ${r.pos}`)
  }
}

/** A Bearer challenge's error (RFC 6750 §3), and its claims when it is a claims challenge. */
export interface BearerChallengeError {
  /** The scheme it came with (`bearer` or `dpop`). */
  readonly scheme: string
  /** `invalid_request`, `invalid_token`, `insufficient_scope`, `insufficient_claims`, ... */
  readonly error: string
  /** `error_description`, when sent (untrusted text). */
  readonly errorDescription?: string | undefined
  /** For `insufficient_claims`: the decoded claims request, compact JSON. */
  readonly claims?: string | undefined
}

/**
 * The first `error` of a Bearer (or DPoP) challenge in a 401's `WWW-Authenticate`, with the
 * claims of an `insufficient_claims` challenge decoded and checked. A header that cannot be
 * parsed, and a claims value that is not a valid claims request, count as no challenge: the
 * caller handles the 401 as it would without one.
 *
 * @param header - the `WWW-Authenticate` value(s), or undefined.
 * @returns the error, or undefined.
 * @example
 * ```ts
 * const challenge = bearerChallengeError(response.headers['www-authenticate'])
 * if (challenge?.claims) await getToken({ claims: challenge.claims })
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc6750#section-3
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
 */
export function bearerChallengeError(
  header: string | readonly string[] | undefined,
): BearerChallengeError | undefined {
  if (header === undefined) return undefined
  let challenges: AuthChallenge[]
  try {
    challenges = parseWwwAuthenticate(header)
  } catch {
    return undefined
  }
  for (const { scheme, params } of challenges) {
    if ((scheme !== 'bearer' && scheme !== 'dpop') || params.error === undefined) continue
    let claims: string | undefined
    if (params.error === 'insufficient_claims') {
      if (params.claims === undefined) continue
      try {
        claims = decodeClaimsChallenge(params.claims)
      } catch {
        continue
      }
    }
    return Object.freeze({
      scheme,
      error: params.error,
      errorDescription: params.error_description,
      claims,
    })
  }
  return undefined
}
