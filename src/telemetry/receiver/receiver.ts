/**
 * The reference protected API: a `node:http` request handler that accepts telemetry batches in
 * edgetoken's wire format, authorised by a Bearer JWT access token from the configured issuer.
 *
 * It is what the uploader is tested against and a starting point for a real ingest service:
 * token verification (RFC 6750, RFC 9068), `Idempotency-Key` deduplication, body validation and
 * a size cap. Accepted batches are kept in memory and handed to `onBatch`.
 *
 * @see ../shared/CONTRACT.md "Telemetry wire format"
 * @packageDocumentation
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { createRemoteJWKSet, FetchImplementation, JWTPayload } from 'jose'
import { EdgeTokenError } from '../../errors.js'
import { ASYMMETRIC_JWS_ALGORITHMS } from '../../lib/jws.js'
import { assertSecureUrl } from '../../lib/url.js'
import { isNonEmptyString, isObject, parseJson } from '../../lib/validate.js'
import { jsonTooDeep, MAX_JSON_DEPTH } from '../json-depth.js'
import { boundThumbprint, createDPoPVerifier, DPoPRefusal } from './receiver-dpop.js'

/** Options of {@link createReceiver}. */
export interface ReceiverOptions {
  /** The issuer whose access tokens are accepted (`iss`); https, or http to a loopback host. */
  issuer: string
  /** The API's own identifier, required in the token's `aud`. */
  audience: string
  /** The scope a token must carry (`scope` or Entra ID's `scp`). Default `telemetry:write`. */
  requiredScope?: string
  /** Where the signing keys are; default: `jwks_uri` from the issuer's discovery document, fetched once. */
  jwksUri?: string
  /** Clock skew tolerated on `exp`, `nbf` and `iat`. Default 30. */
  clockToleranceSeconds?: number
  /** The largest request body accepted; larger ones get 413. Default 1 MiB. */
  maxBodyBytes?: number
  /** Called once per accepted (new) batch before it is acknowledged; a throw answers 500 and the batch is not kept. */
  onBatch?: (batch: ReceivedBatch) => void | Promise<void>
  /**
   * Keep accepted batches in {@link Receiver.batches}. Default true (tests read them); a
   * long-running server hands them to `onBatch` and sets false, or memory grows without bound.
   */
  keepBatches?: boolean
  /** Idempotency keys remembered at most (oldest forgotten first). Default 100 000. */
  maxRememberedKeys?: number
  /** How long an idempotency key is remembered, seconds. Default 86 400 (a day of retries). */
  rememberKeySeconds?: number
  /**
   * The JWS algorithms accepted (RFC 8725 §3.1: never let the token choose). Asymmetric only: a
   * resource server verifying with a public key must not accept `HS*` or `none`. Default RS256,
   * RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA.
   */
  algorithms?: readonly string[]
  /**
   * Require the RFC 9068 §4 JWT `typ` header `at+jwt` (or `application/at+jwt`), so an id_token
   * or another JWT from the same issuer is not taken for an access token. Default false, because
   * Entra ID does not send it.
   */
  requireAtJwtType?: boolean
  /** The clock for remembering keys, epoch ms (tests). Default `Date.now`. */
  now?: () => number
  /**
   * DPoP (RFC 9449): tokens bound to a key (`cnf.jkt`) are always accepted only with the `DPoP`
   * scheme and a valid proof, and refused as bearer tokens; these options tune the proof checks
   * and, when given at all, add a `DPoP` challenge to the answer without credentials.
   */
  dpop?: ReceiverDPoPOptions | undefined
}

/** DPoP options of {@link ReceiverOptions}. */
export interface ReceiverDPoPOptions {
  /** How old a proof's `iat` may be, seconds. Default 60. */
  maxAgeSeconds?: number | undefined
  /**
   * The endpoint's URL as clients call it (each proof's `htu`); default from the request's `Host`
   * header and path. Set it behind a reverse proxy.
   */
  url?: string | undefined
  /** Hand out nonces (`DPoP-Nonce`) and require them in proofs (RFC 9449 §9). Default false. */
  requireNonce?: boolean | undefined
  /** How long a nonce stays good, seconds. Default 300. */
  nonceLifetimeSeconds?: number | undefined
}

/** One accepted telemetry batch. */
export interface ReceivedBatch {
  /** `device_id` from the body. */
  deviceId: string
  /** `batch_id` from the body (equal to the `Idempotency-Key` header). */
  batchId: string
  /** `seq` from the body. */
  seq: number
  /** The records, in the order sent. */
  records: unknown[]
  /** The access token's `sub`. */
  subject: string
}

/** A receiver created by {@link createReceiver}. */
export interface Receiver {
  /** The request listener; mount it on any `node:http` server or route. */
  handler: (req: IncomingMessage, res: ServerResponse) => void
  /** Accepted batches, deduplicated, in arrival order (empty when `keepBatches` is false). */
  batches: ReceivedBatch[]
  /** Stops accepting: later requests get 503. */
  close(): void
}

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024
const DEFAULT_MAX_REMEMBERED_KEYS = 100_000
const DEFAULT_REMEMBER_KEY_SECONDS = 86_400
const ASYMMETRIC_ALGORITHM = /^(?:RS|PS|ES)(?:256|384|512)$|^ES256K$|^EdDSA$|^Ed25519$|^Ed448$/
const DISCOVERY_TIMEOUT_MS = 10_000
const MAX_DISCOVERY_BYTES = 512 * 1024

/** jose error codes that mean "this token is bad" (anything else means the key set is unavailable). */
const TOKEN_FAULTS = new Set([
  'ERR_JWT_EXPIRED',
  'ERR_JWT_CLAIM_VALIDATION_FAILED',
  'ERR_JWT_INVALID',
  'ERR_JWS_INVALID',
  'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
  'ERR_JWKS_NO_MATCHING_KEY',
  'ERR_JWKS_MULTIPLE_MATCHING_KEYS',
  'ERR_JOSE_ALG_NOT_ALLOWED',
  'ERR_JOSE_NOT_SUPPORTED',
])

/** Why a request is refused; turned into a status, an optional challenge and a JSON error body. */
class Refusal {
  readonly status: number
  readonly error: string
  readonly description: string
  readonly challenge: string | undefined
  readonly headers: Record<string, string>

  constructor(
    status: number,
    error: string,
    description: string,
    challenge?: string,
    headers: Record<string, string> = {},
  ) {
    this.status = status
    this.error = error
    this.description = description
    this.challenge = challenge
    this.headers = headers
  }
}

// undici and jose are loaded by the first request, not by `import 'edgetoken'` (see oauth/http.ts).
let jose: typeof import('jose') | undefined
const undiciFetch = async (...args: Parameters<typeof import('undici')['fetch']>) =>
  (await import('undici')).fetch(...args)

// jose fetches the JWKS; give it undici's fetch so the process holds one HTTP stack (STYLE.md).
const joseFetch: FetchImplementation = (url, options) =>
  undiciFetch(url, {
    method: options.method,
    headers: Object.fromEntries(options.headers),
    signal: options.signal,
    redirect: 'manual',
  }) as unknown as Promise<Response>

async function discoverJwksUri(issuer: string): Promise<URL> {
  const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`
  const response = await undiciFetch(url, {
    redirect: 'manual',
    headers: { accept: 'application/json' },
    signal: AbortSignal.timeout(DISCOVERY_TIMEOUT_MS),
  })
  const text = await response.text()
  if (response.status !== 200 || text.length > MAX_DISCOVERY_BYTES) {
    throw new EdgeTokenError('ERR_UNAVAILABLE', `issuer discovery answered ${response.status}`)
  }
  const document = parseJson(text)
  // OpenID Connect Discovery 1.0 §4.3: the document's issuer must be the one we asked.
  if (!isObject(document) || document.issuer !== issuer || !isNonEmptyString(document.jwks_uri)) {
    throw new EdgeTokenError('ERR_INVALID_RESPONSE', 'issuer discovery document is invalid')
  }
  return assertSecureUrl(document.jwks_uri, 'jwks_uri')
}

function scopesOf(payload: JWTPayload): Set<string> {
  // RFC 9068 §2.2.3 `scope` is space-delimited; Entra ID puts delegated scopes in `scp`.
  const values: string[] = []
  for (const claim of [payload.scope, payload.scp]) {
    if (typeof claim === 'string') values.push(...claim.split(' '))
    else if (Array.isArray(claim)) values.push(...claim.filter((s): s is string => typeof s === 'string'))
  }
  return new Set(values.filter(Boolean))
}

/** The token and its scheme: RFC 6750 §2.1 `Bearer`, or RFC 9449 §7.1 `DPoP`. */
function presentedToken(req: IncomingMessage): { scheme: 'Bearer' | 'DPoP'; token: string } | undefined {
  const header = req.headers.authorization
  const match =
    typeof header === 'string' ? /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header) : null
  const scheme = match?.[1]?.toLowerCase()
  const token = match?.[2]
  if (scheme === undefined || token === undefined) return undefined
  return { scheme: scheme === 'dpop' ? 'DPoP' : 'Bearer', token }
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > maxBytes) {
      reject(new Refusal(413, 'payload_too_large', `body exceeds ${maxBytes} bytes`))
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBytes) {
        req.removeAllListeners('data')
        reject(new Refusal(413, 'payload_too_large', `body exceeds ${maxBytes} bytes`))
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

interface WireBatch {
  device_id: string
  batch_id: string
  seq: number
  records: unknown[]
}

function parseBatch(body: Buffer): WireBatch {
  // The records sit two levels down ({"records":[...]}); deeper ones would overflow the stack of
  // whoever serialises them again (onBatch), so they are refused like the device refuses them.
  if (jsonTooDeep(body, MAX_JSON_DEPTH + 2)) {
    throw new Refusal(
      400,
      'invalid_request',
      `records must not be nested deeper than ${MAX_JSON_DEPTH} levels`,
    )
  }
  const value = parseJson(body.toString('utf8'))
  if (!isObject(value)) throw new Refusal(400, 'invalid_request', 'body must be a JSON object')
  if (!isNonEmptyString(value.device_id))
    throw new Refusal(400, 'invalid_request', 'device_id must be a non-empty string')
  if (!isNonEmptyString(value.batch_id))
    throw new Refusal(400, 'invalid_request', 'batch_id must be a non-empty string')
  if (typeof value.seq !== 'number' || !Number.isSafeInteger(value.seq) || value.seq < 0) {
    throw new Refusal(400, 'invalid_request', 'seq must be an integer >= 0')
  }
  if (!Array.isArray(value.records)) throw new Refusal(400, 'invalid_request', 'records must be an array')
  return { device_id: value.device_id, batch_id: value.batch_id, seq: value.seq, records: value.records }
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(text)
}

/**
 * Creates the reference telemetry ingest handler.
 *
 * Answers: 200 `{"accepted":N}` for a new or repeated batch (a repeat carries
 * `Idempotent-Replayed: true` and is not stored again); 400 for a malformed body or a missing or
 * mismatched `Idempotency-Key`; 401 with `WWW-Authenticate: Bearer` for a missing token and
 * `error="invalid_token"` for a bad one; 403 `insufficient_scope`; 405 for methods other than
 * POST; 409 while the same key is being processed; 413 for oversized bodies; 415 for a non-JSON
 * content type; 422 when a key is reused with a different body; 503 when the signing keys cannot
 * be fetched. A DPoP-bound token (`cnf.jkt`) is accepted only as `Authorization: DPoP` with a
 * proof of its key for this request (`htm`, `htu`, `iat` window, `ath`, unused `jti`, the nonce
 * when nonces are on); otherwise 401 with `WWW-Authenticate: DPoP error="invalid_token"`,
 * `"invalid_dpop_proof"` or `"use_dpop_nonce"` (with `DPoP-Nonce`).
 *
 * @param options - issuer, audience, scope and limits.
 * @returns the handler, the accepted batches and `close()`.
 * @throws EdgeTokenError `ERR_INSECURE_URL` when the issuer or jwksUri is plain http to a non-loopback host.
 * @see https://www.rfc-editor.org/rfc/rfc6750#section-3 (Bearer challenges)
 * @see https://www.rfc-editor.org/rfc/rfc9068 (JWT access tokens)
 * @see https://www.rfc-editor.org/rfc/rfc9449#section-7.1 (DPoP at resource servers)
 * @example
 * ```ts
 * const receiver = createReceiver({ issuer: 'https://login.example.com', audience: 'https://telemetry.example.com' })
 * http.createServer(receiver.handler).listen(8080)
 * ```
 */
export function createReceiver(options: ReceiverOptions): Receiver {
  assertSecureUrl(options.issuer, 'issuer')
  const requiredScope = options.requiredScope ?? 'telemetry:write'
  const clockTolerance = options.clockToleranceSeconds ?? 30
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  const realm = `scope="${requiredScope}"`
  const keepBatches = options.keepBatches ?? true
  const maxKeys = Math.max(1, Math.floor(options.maxRememberedKeys ?? DEFAULT_MAX_REMEMBERED_KEYS))
  const keyTtlMs = Math.max(1, options.rememberKeySeconds ?? DEFAULT_REMEMBER_KEY_SECONDS) * 1000
  const now = options.now ?? Date.now
  const algorithms = [...(options.algorithms ?? ASYMMETRIC_JWS_ALGORITHMS)]
  if (algorithms.length === 0 || !algorithms.every((alg) => ASYMMETRIC_ALGORITHM.test(alg))) {
    throw new EdgeTokenError(
      'ERR_CONFIG',
      `receiver algorithms must be asymmetric JWS algorithms (RS*, PS*, ES*, EdDSA), got ${algorithms.join(', ') || 'none'}`,
    )
  }

  let keys: Promise<ReturnType<typeof createRemoteJWKSet>> | undefined
  const keySet = () => {
    keys ??= (
      options.jwksUri
        ? Promise.resolve(assertSecureUrl(options.jwksUri, 'jwksUri'))
        : discoverJwksUri(options.issuer)
    )
      .then(async (uri) => {
        const { createRemoteJWKSet, customFetch } = await import('jose')
        return createRemoteJWKSet(uri, { [customFetch]: joseFetch })
      })
      .catch((err: unknown) => {
        keys = undefined // try discovery again on the next request
        throw err
      })
    return keys
  }

  const batches: ReceivedBatch[] = []
  // Idempotency-Key -> fingerprint of the body it was first accepted with, the answer, and when.
  // Insertion order is age order: the oldest keys are forgotten first (bounded in count and age).
  const seen = new Map<string, { fingerprint: string; accepted: number; at: number }>()
  const forgetOld = () => {
    const cutoff = now() - keyTtlMs
    for (const [key, entry] of seen) {
      if (seen.size <= maxKeys && entry.at > cutoff) break
      seen.delete(key)
    }
  }
  const inFlight = new Set<string>()
  let closed = false

  const dpop = createDPoPVerifier({
    algorithms,
    maxAgeSeconds: options.dpop?.maxAgeSeconds,
    clockToleranceSeconds: clockTolerance,
    url: options.dpop?.url,
    requireNonce: options.dpop?.requireNonce,
    nonceLifetimeSeconds: options.dpop?.nonceLifetimeSeconds,
    now,
  })
  const dpopChallenge = (error?: string) =>
    `DPoP algs="${dpop.algs}"${error === undefined ? '' : `, error="${error}"`}`

  async function authenticate(req: IncomingMessage): Promise<string> {
    const presented = presentedToken(req)
    // RFC 6750 §3.1: no credentials at all gets a challenge without an error code.
    if (!presented) {
      const challenge = options.dpop ? `Bearer ${realm}, ${dpopChallenge()}` : `Bearer ${realm}`
      throw new Refusal(401, 'unauthorized', 'a Bearer access token is required', challenge)
    }
    const { token } = presented
    let jwks: Awaited<ReturnType<typeof keySet>>
    try {
      jwks = await keySet()
    } catch {
      throw new Refusal(503, 'temporarily_unavailable', 'signing keys cannot be fetched')
    }
    let payload: JWTPayload
    try {
      jose ??= await import('jose')
      const { jwtVerify } = jose
      ;({ payload } = await jwtVerify(token, jwks, {
        issuer: options.issuer,
        audience: options.audience,
        clockTolerance,
        requiredClaims: ['exp', 'sub'],
        algorithms,
        // RFC 9068 §4: the resource server MUST check typ when it requires JWT access tokens.
        ...(options.requireAtJwtType ? { typ: 'at+jwt' } : {}),
      }))
    } catch (err) {
      if (!TOKEN_FAULTS.has(String((err as { code?: unknown }).code))) {
        // The key set could not be fetched or read: our problem, not the token's.
        throw new Refusal(503, 'temporarily_unavailable', 'signing keys cannot be fetched')
      }
      // Never echo why in detail: the client only needs to know it should get a new token.
      throw new Refusal(
        401,
        'invalid_token',
        'the access token is invalid',
        `Bearer ${realm}, error="invalid_token"`,
      )
    }
    if (!scopesOf(payload).has(requiredScope)) {
      throw new Refusal(
        403,
        'insufficient_scope',
        `the access token lacks the ${requiredScope} scope`,
        `Bearer ${realm}, error="insufficient_scope"`,
      )
    }
    if (presented.scheme === 'DPoP') {
      try {
        await dpop.verify(req, token, payload)
      } catch (err) {
        if (!(err instanceof DPoPRefusal)) throw err
        throw new Refusal(
          401,
          err.error,
          err.description,
          dpopChallenge(err.error),
          err.nonce === undefined ? {} : { 'dpop-nonce': err.nonce },
        )
      }
    } else if (boundThumbprint(payload) !== undefined) {
      // RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused (it may be stolen).
      throw new Refusal(
        401,
        'invalid_token',
        'the access token is DPoP-bound: present it with the DPoP scheme and a proof',
        dpopChallenge('invalid_token'),
      )
    }
    return payload.sub as string
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (closed) throw new Refusal(503, 'temporarily_unavailable', 'receiver is closed')
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST')
      throw new Refusal(405, 'method_not_allowed', 'only POST is accepted')
    }
    // RFC 9449 §9: every answer carries the nonce the next proof should use.
    const nonce = dpop.currentNonce()
    if (nonce !== undefined) res.setHeader('dpop-nonce', nonce)
    const subject = await authenticate(req)

    const contentType = req.headers['content-type']
    if (contentType !== undefined && !/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(contentType)) {
      throw new Refusal(415, 'unsupported_media_type', 'body must be application/json')
    }
    const key = req.headers['idempotency-key']
    if (!isNonEmptyString(key))
      throw new Refusal(400, 'invalid_request', 'Idempotency-Key header is required')

    const body = await readBody(req, maxBodyBytes)
    const batch = parseBatch(body)
    if (batch.batch_id !== key)
      throw new Refusal(400, 'invalid_request', 'Idempotency-Key must equal batch_id')

    const fingerprint = createHash('sha256').update(body).digest('hex')
    forgetOld()
    const previous = seen.get(key)
    if (previous) {
      // draft-ietf-httpapi-idempotency-key-header §2.7: same key, other payload.
      if (previous.fingerprint !== fingerprint) {
        throw new Refusal(422, 'idempotency_key_reused', 'Idempotency-Key was used with a different body')
      }
      send(res, 200, { accepted: previous.accepted }, { 'idempotent-replayed': 'true' })
      return
    }
    if (inFlight.has(key))
      throw new Refusal(409, 'conflict', 'a request with this Idempotency-Key is in progress')

    inFlight.add(key)
    try {
      const received: ReceivedBatch = {
        deviceId: batch.device_id,
        batchId: batch.batch_id,
        seq: batch.seq,
        records: batch.records,
        subject,
      }
      await options.onBatch?.(received)
      if (keepBatches) batches.push(received)
      seen.set(key, { fingerprint, accepted: batch.records.length, at: now() })
      forgetOld()
    } finally {
      inFlight.delete(key)
    }
    send(res, 200, { accepted: batch.records.length })
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy()
        return
      }
      const refusal =
        err instanceof Refusal ? err : new Refusal(500, 'server_error', 'the batch could not be processed')
      const headers: Record<string, string> = { ...refusal.headers }
      if (refusal.challenge) headers['www-authenticate'] = refusal.challenge
      if (refusal.status === 503) headers['retry-after'] = '5'
      // An unread (oversized) body would otherwise keep the connection busy.
      if (refusal.status === 413) headers.connection = 'close'
      send(res, refusal.status, { error: refusal.error, error_description: refusal.description }, headers)
    })
  }

  return {
    handler,
    batches,
    close() {
      closed = true
    },
  }
}
