/**
 * A small Microsoft Entra ID (v2.0 endpoint) dialect server on 127.0.0.1, answering the response
 * shapes Microsoft documents for the device code flow, so the client's Entra handling is tested
 * without the internet:
 *
 * - discovery at `/<tenant>/v2.0/.well-known/openid-configuration` with the `{tenantid}` issuer
 *   template for common/organizations/consumers;
 * - `/<tenant>/oauth2/v2.0/devicecode`: `user_code`, `device_code`, `verification_uri` (no
 *   `_complete`), `expires_in`, `interval` as numbers, and a `message`;
 * - `/<tenant>/oauth2/v2.0/token`: `authorization_pending`, `authorization_declined`,
 *   `expired_token`, `bad_verification_code` errors with AADSTS descriptions and `error_codes`; a
 *   success with `token_type: "Bearer"`, `client_info` (when `client_info=1` is sent) and an RS256
 *   id_token whose `iss` is `https://login.microsoftonline.com/<tid>/v2.0`;
 * - a tenant that blocks the device code flow by Conditional Access: `invalid_grant` with
 *   `error_codes: [53003]` ("AADSTS53003: Access has been blocked by Conditional Access policies"),
 *   at a poll ({@link EntraDialectServer.setOutcomes}) or at the device authorization request
 *   ({@link EntraDialectServer.setDeviceCodeOutcome});
 * - the same token endpoint for confidential clients: `client_credentials` and the on-behalf-of
 *   grant (`urn:ietf:params:oauth:grant-type:jwt-bearer` + `requested_token_use=on_behalf_of` +
 *   `assertion`), which require client authentication (secret or `client_assertion`), answer
 *   `invalid_request` (AADSTS) for a malformed request, take `invalid_grant` from the outcomes,
 *   and return an id_token only when `openid` is asked for;
 * - claims challenges (issue 13): a protected API at `/api/telemetry` that answers
 *   `401` with `WWW-Authenticate: Bearer ... error="insufficient_claims", claims="<base64>"` (the
 *   format Microsoft documents) to every token not issued by a refresh whose `claims` parameter
 *   asks for the challenge's claims; such a refresh either succeeds, or is answered
 *   `interaction_required` (AADSTS50076, MFA needed) when the refresh token cannot meet them.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code
 * @see https://learn.microsoft.com/entra/identity-platform/claims-challenge
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { Agent } from 'undici'
import { ENTRA_HOSTS } from '../../src/oauth/authority.js'
import { setHttpDispatcher } from '../../src/oauth/http.js'
import { closeServer, listen } from './net.js'

/** What the token endpoint answers to a device_code poll. */
export type EntraOutcome =
  | 'authorization_pending'
  | 'authorization_declined'
  | 'expired_token'
  | 'bad_verification_code'
  | 'invalid_grant'
  | 'conditional_access_blocked'
  | 'success'

/** One request the server received. */
export interface EntraRequest {
  method: string
  path: string
  params: URLSearchParams
  /** The `authorization` header, when sent (client_secret_basic). */
  authorization?: string | undefined
  at: number
}

/** A running Entra dialect server. */
export interface EntraDialectServer {
  /** `http://127.0.0.1:PORT`; {@link routeEntraHosts} sends the Entra ID hosts' requests here. */
  baseUrl: string
  /** The tenant's GUID (`tid`, `utid`). */
  tenantId: string
  /** The user's object id (`oid`, client_info `uid`). */
  objectId: string
  /** Every request received. */
  requests: EntraRequest[]
  /** Answers of the next polls, in order; the last one repeats. Default `['success']`. */
  setOutcomes(outcomes: EntraOutcome[]): void
  /** What the device authorization endpoint answers from now on. Default `'success'`. */
  setDeviceCodeOutcome(outcome: EntraOutcome): void
  /** The `aud` the next id_token carries (default: the client_id of the request). */
  setIdTokenAudience(aud: string | undefined): void
  /**
   * The claims request (JSON) `/api/telemetry` challenges for, or undefined for none (default):
   * every token not issued for these claims is then answered with the claims challenge.
   */
  setApiClaimsChallenge(claims: string | undefined): void
  /** How a refresh that carries `claims` is answered. Default `success`. */
  setClaimsRefreshOutcome(outcome: 'success' | 'interaction_required'): void
  /** Bodies `/api/telemetry` accepted (200), parsed. */
  apiAccepted: Record<string, unknown>[]
  /** How many requests `/api/telemetry` answered with the claims challenge. */
  readonly apiChallenges: number
  /** The API's URL (`<baseUrl>/api/telemetry`). */
  apiUrl: string
  /**
   * Registers a federated workload-identity token as a valid `client_assertion` (it is not in the
   * certificate format the server checks otherwise).
   */
  trustFederatedAssertion(assertion: string): void
  /**
   * Signs a v2.0 access token for an API (issue 18's on-behalf-of example): what Entra ID gives a
   * client for the middle-tier web API, with the tenant's key. Defaults: `iss`
   * `https://login.microsoftonline.com/<tid>/v2.0`, `tid`, `oid` and `sub` of the user, issued now,
   * valid an hour; `claims` add to or replace them (`aud`, `scp`, `azp` are the caller's to set).
   */
  signAccessToken(claims: Record<string, unknown>): Promise<string>
  /** The tenant's signing keys (`/<tid>/discovery/v2.0/keys` on this server). */
  jwksUri: string
  /** Stops the server. */
  close(): Promise<void>
}

const ENTRA_ISSUER_HOST = 'https://login.microsoftonline.com'
const MULTI_TENANT = new Set(['common', 'organizations', 'consumers'])

/** Each outcome's AADSTS code, text and, where it differs from the outcome's name, `error`. */
const ERRORS: Record<Exclude<EntraOutcome, 'success'>, [number, string, string?]> = {
  authorization_pending: [70016, 'OAuth 2.0 device flow error. Authorization is pending. Continue polling.'],
  authorization_declined: [70000, 'The end user denied the authorization request.'],
  expired_token: [70020, 'The provided value for the input parameter device_code is expired.'],
  bad_verification_code: [70019, 'Verification code expired or was not recognised.'],
  invalid_grant: [50013, 'Assertion failed signature validation.'],
  conditional_access_blocked: [
    53003,
    'Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.',
    'invalid_grant',
  ],
}

/** An Entra ID error body, as the v2.0 endpoints send it. */
function aadErrorBody(outcome: Exclude<EntraOutcome, 'success'>): Record<string, unknown> {
  const [code, text, error] = ERRORS[outcome]
  return {
    error: error ?? outcome,
    error_description: `AADSTS${code}: ${text} Trace ID: ${randomUUID()} Correlation ID: ${randomUUID()} Timestamp: 2026-11-25 10:00:00Z`,
    error_codes: [code],
    timestamp: '2026-11-25 10:00:00Z',
    trace_id: randomUUID(),
    correlation_id: randomUUID(),
    error_uri: `${ENTRA_ISSUER_HOST}/error?code=${code}`,
  }
}

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer'

/** Whether a confidential-client request authenticated (secret in the body or Basic, or an assertion). */
function clientAuthenticated(params: URLSearchParams, authorization: string | undefined): boolean {
  return (
    params.has('client_secret') ||
    authorization?.startsWith('Basic ') === true ||
    (params.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' &&
      params.has('client_assertion'))
  )
}

/**
 * Why a client assertion does not meet Microsoft's "certificate credentials" format, or undefined
 * when it does (issue 12): header `alg` RS256/PS256/ES256 and `typ` JWT; `x5t#S256` (or the legacy
 * `x5t`); `x5c`, when sent, leaf first, whose SHA-256 thumbprint is `x5t#S256` and whose key
 * verifies the signature; claims `aud` = the token endpoint, `iss` = `sub` = client_id, a `jti`,
 * `exp` in the future and at most 10 minutes after `iat`/`nbf`.
 *
 * @see https://learn.microsoft.com/entra/identity-platform/certificate-credentials
 */
async function assertionProblem(
  assertion: string,
  clientId: string,
  tokenEndpoint: string,
): Promise<string | undefined> {
  const { decodeProtectedHeader, decodeJwt, compactVerify } = await import('jose')
  const { X509Certificate, createHash } = await import('node:crypto')
  let header: Record<string, unknown>
  let claims: Record<string, unknown>
  try {
    header = decodeProtectedHeader(assertion) as Record<string, unknown>
    claims = decodeJwt(assertion) as Record<string, unknown>
  } catch {
    return 'not a JWT'
  }
  if (!['RS256', 'PS256', 'ES256'].includes(String(header.alg))) return `alg ${String(header.alg)}`
  if (header.typ !== 'JWT') return 'typ is not JWT'
  if (typeof header['x5t#S256'] !== 'string' && typeof header.x5t !== 'string') return 'no x5t#S256 or x5t'
  if (header.x5c !== undefined) {
    if (!Array.isArray(header.x5c) || header.x5c.length === 0) return 'x5c is not a non-empty array'
    const der = Buffer.from(String(header.x5c[0]), 'base64')
    if (der.toString('base64') !== header.x5c[0]) return 'x5c is not standard base64 (RFC 7515 §4.1.6)'
    const leaf = new X509Certificate(der)
    if (createHash('sha256').update(leaf.raw).digest('base64url') !== header['x5t#S256'])
      return 'x5c[0] is not the x5t#S256 certificate'
    try {
      await compactVerify(assertion, leaf.publicKey)
    } catch {
      return 'signature does not verify with x5c[0]'
    }
  }
  const now = Math.floor(Date.now() / 1000)
  if (claims.aud !== tokenEndpoint) return `aud ${String(claims.aud)} is not the token endpoint`
  if (claims.iss !== clientId || claims.sub !== clientId) return 'iss/sub is not the client_id'
  if (typeof claims.jti !== 'string' || claims.jti.length === 0) return 'no jti'
  if (typeof claims.exp !== 'number' || claims.exp <= now) return 'exp missing or past'
  const start =
    typeof claims.nbf === 'number' ? claims.nbf : typeof claims.iat === 'number' ? claims.iat : now
  if (claims.exp - start > 600) return 'lifetime over 10 minutes'
  return undefined
}

/** The client_id of a request: the body's, else the Basic header's. */
function requestClientId(params: URLSearchParams, authorization: string | undefined): string {
  const fromBody = params.get('client_id')
  if (fromBody) return fromBody
  if (authorization?.startsWith('Basic ')) {
    const decoded = Buffer.from(authorization.slice(6), 'base64').toString('utf8')
    return decodeURIComponent((decoded.split(':')[0] ?? '').replace(/\+/g, ' '))
  }
  return ''
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => {
      text += chunk
    })
    req.on('end', () => resolve(text))
    req.on('error', reject)
  })
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })
  res.end(JSON.stringify(body))
}

/**
 * Starts the dialect server.
 *
 * @returns the server; call `close()` when done.
 */
export async function startEntraDialect(): Promise<EntraDialectServer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true })
  const kid = randomBytes(8).toString('hex')
  const jwk = { ...(await exportJWK(publicKey)), kid, use: 'sig', alg: 'RS256' }
  const tenantId = randomUUID()
  const objectId = randomUUID()
  const requests: EntraRequest[] = []
  const federatedAssertions = new Set<string>()
  let outcomes: EntraOutcome[] = ['success']
  let deviceCodeOutcome: EntraOutcome = 'success'
  let idTokenAudience: string | undefined
  let apiClaims: string | undefined
  let claimsRefreshOutcome: 'success' | 'interaction_required' = 'success'
  let apiChallenges = 0
  const apiAccepted: Record<string, unknown>[] = []
  /** Access tokens issued by a refresh that asked for the API's claims. */
  const claimsTokens = new Set<string>()
  let baseUrl = ''
  // The scope of each device authorization, answered in its token response as Entra does.
  const scopes = new Map<string, string>()

  const handleApi = async (req: IncomingMessage, res: ServerResponse) => {
    const body = await readBody(req)
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''
    if (apiClaims !== undefined && !claimsTokens.has(token)) {
      apiChallenges += 1
      const claims = Buffer.from(apiClaims).toString('base64')
      res.writeHead(401, {
        'www-authenticate': `Bearer realm="", authorization_uri="${ENTRA_ISSUER_HOST}/common/oauth2/authorize", error="insufficient_claims", claims="${claims}"`,
      })
      return res.end()
    }
    apiAccepted.push(JSON.parse(body) as Record<string, unknown>)
    return json(res, 200, { accepted: true })
  }

  /** Whether a refresh's `claims` parameter asks for every access_token claim of the challenge. */
  const meetsChallenge = (claims: string | null): boolean => {
    if (claims === null || apiClaims === undefined) return false
    const wanted = (JSON.parse(apiClaims) as { access_token?: Record<string, unknown> }).access_token ?? {}
    const asked = (JSON.parse(claims) as { access_token?: Record<string, unknown> }).access_token ?? {}
    return Object.entries(wanted).every(([k, v]) => JSON.stringify(asked[k]) === JSON.stringify(v))
  }

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', baseUrl)
    if (url.pathname === '/api/telemetry' && req.method === 'POST') return handleApi(req, res)
    const params = new URLSearchParams(req.method === 'POST' ? await readBody(req) : url.search)
    const authorization = req.headers.authorization
    requests.push({ method: req.method ?? 'GET', path: url.pathname, params, authorization, at: Date.now() })
    const [, tenant = '', ...rest] = url.pathname.split('/')
    const route = rest.join('/')
    const issuerTenant = MULTI_TENANT.has(tenant) ? '{tenantid}' : tenantId
    if (req.method === 'GET' && route === 'v2.0/.well-known/openid-configuration') {
      return json(res, 200, {
        issuer: `${ENTRA_ISSUER_HOST}/${issuerTenant}/v2.0`,
        token_endpoint: `${baseUrl}/${tenant}/oauth2/v2.0/token`,
        device_authorization_endpoint: `${baseUrl}/${tenant}/oauth2/v2.0/devicecode`,
        authorization_endpoint: `${baseUrl}/${tenant}/oauth2/v2.0/authorize`,
        jwks_uri: `${baseUrl}/${tenant}/discovery/v2.0/keys`,
        end_session_endpoint: `${baseUrl}/${tenant}/oauth2/v2.0/logout`,
        response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
        id_token_signing_alg_values_supported: ['RS256'],
        tenant_region_scope: null,
        cloud_instance_name: 'microsoftonline.com',
      })
    }
    if (req.method === 'GET' && route === 'discovery/v2.0/keys') return json(res, 200, { keys: [jwk] })
    if (req.method === 'POST' && route === 'oauth2/v2.0/devicecode') {
      if (deviceCodeOutcome !== 'success') return json(res, 400, aadErrorBody(deviceCodeOutcome))
      const userCode = randomBytes(5).toString('hex').toUpperCase().slice(0, 9)
      const deviceCode = `DAQABAAEAAAD${randomBytes(48).toString('base64url')}`
      scopes.set(deviceCode, params.get('scope') ?? '')
      return json(res, 200, {
        user_code: userCode,
        device_code: deviceCode,
        verification_uri: 'https://microsoft.com/devicelogin',
        expires_in: 900,
        interval: 5,
        message: `To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code ${userCode} to authenticate.`,
      })
    }
    const grantType = params.get('grant_type')
    const confidential = grantType === 'client_credentials' || grantType === JWT_BEARER
    if (req.method === 'POST' && route === 'oauth2/v2.0/token' && confidential) {
      const aadError = (error: string, code: number, text: string) =>
        json(res, error === 'invalid_client' ? 401 : 400, {
          error,
          error_description: `AADSTS${code}: ${text} Trace ID: ${randomUUID()}`,
          error_codes: [code],
        })
      if (!clientAuthenticated(params, authorization)) {
        return aadError(
          'invalid_client',
          7000218,
          "The request body must contain 'client_assertion' or 'client_secret'.",
        )
      }
      const assertion = params.get('client_assertion')
      // A federated token (issue 12) is another issuer's JWT, not in the certificate format.
      if (assertion !== null && !federatedAssertions.has(assertion)) {
        const problem = await assertionProblem(
          assertion,
          requestClientId(params, authorization),
          `${baseUrl}/${tenant}/oauth2/v2.0/token`,
        )
        if (problem)
          return aadError(
            'invalid_client',
            700027,
            `Client assertion failed signature validation: ${problem}.`,
          )
      }
      if (grantType === JWT_BEARER) {
        if (params.get('requested_token_use') !== 'on_behalf_of' || !params.get('assertion')) {
          return aadError('invalid_request', 50027, 'Invalid on-behalf-of request.')
        }
      }
      if (!params.get('scope')) return aadError('invalid_request', 90014, "The 'scope' parameter is missing.")
      const outcome = outcomes.length > 1 ? (outcomes.shift() as EntraOutcome) : (outcomes[0] ?? 'success')
      if (outcome !== 'success') {
        const [code, text, error] = ERRORS[outcome]
        return aadError(error ?? outcome, code, text)
      }
      const scope = params.get('scope') ?? ''
      const body: Record<string, unknown> = {
        token_type: 'Bearer',
        scope: scope
          .split(' ')
          .filter((s) => !['openid', 'profile', 'offline_access'].includes(s))
          .join(' '),
        expires_in: 3599,
        ext_expires_in: 3599,
        access_token: `eyJ0eXAiOiJKV1Qi.${randomBytes(32).toString('base64url')}.sig`,
      }
      if (grantType === JWT_BEARER && scope.split(' ').includes('offline_access')) {
        body.refresh_token = `0.AAAA${randomBytes(48).toString('base64url')}`
      }
      if (grantType === JWT_BEARER && scope.split(' ').includes('openid')) {
        const now = Math.floor(Date.now() / 1000)
        body.id_token = await new SignJWT({ tid: tenantId, oid: objectId, ver: '2.0' })
          .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
          .setIssuer(`${ENTRA_ISSUER_HOST}/${tenantId}/v2.0`)
          .setSubject(objectId)
          .setAudience(requestClientId(params, authorization))
          .setIssuedAt(now)
          .setExpirationTime(now + 3600)
          .sign(privateKey)
      }
      return json(res, 200, body)
    }
    if (req.method === 'POST' && route === 'oauth2/v2.0/token') {
      if (grantType === 'refresh_token' && params.has('claims') && claimsRefreshOutcome !== 'success') {
        return json(res, 400, {
          error: 'interaction_required',
          error_description: `AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication to access '${randomUUID()}'. Trace ID: ${randomUUID()}`,
          error_codes: [50076],
          suberror: 'basic_action',
          claims: params.get('claims'),
        })
      }
      const outcome = outcomes.length > 1 ? (outcomes.shift() as EntraOutcome) : (outcomes[0] ?? 'success')
      if (outcome !== 'success') return json(res, 400, aadErrorBody(outcome))
      const clientId = params.get('client_id') ?? ''
      const now = Math.floor(Date.now() / 1000)
      const idToken = await new SignJWT({
        tid: tenantId,
        oid: objectId,
        preferred_username: 'adele@contoso.example',
        name: 'Adele Vance',
        ver: '2.0',
      })
        .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
        .setIssuer(`${ENTRA_ISSUER_HOST}/${tenantId}/v2.0`)
        // Entra ID's `sub` is pairwise: stable for one user and one application, different across
        // applications ("ID token claims reference", learn.microsoft.com/entra/identity-platform/
        // id-token-claims-reference: "The subject is a pairwise identifier"). A refreshed id_token
        // must carry the same one (OpenID Connect Core §12.2).
        .setSubject(createHash('sha256').update(`${objectId}\n${clientId}`).digest('base64url').slice(0, 43))
        .setAudience(idTokenAudience ?? clientId)
        .setIssuedAt(now)
        .setNotBefore(now)
        .setExpirationTime(now + 3600)
        .sign(privateKey)
      const body: Record<string, unknown> = {
        token_type: 'Bearer',
        scope: (params.get('scope') ?? scopes.get(params.get('device_code') ?? '') ?? '')
          .split(' ')
          .filter((s) => !['openid', 'profile', 'offline_access'].includes(s))
          .join(' '),
        expires_in: 3599,
        ext_expires_in: 3599,
        access_token: `eyJ0eXAiOiJKV1Qi.${randomBytes(32).toString('base64url')}.sig`,
        refresh_token: `0.AAAA${randomBytes(48).toString('base64url')}`,
        id_token: idToken,
      }
      if (grantType === 'refresh_token' && meetsChallenge(params.get('claims'))) {
        claimsTokens.add(String(body.access_token))
      }
      if (params.get('client_info') === '1') {
        body.client_info = Buffer.from(JSON.stringify({ uid: objectId, utid: tenantId })).toString(
          'base64url',
        )
      }
      return json(res, 200, body)
    }
    return json(res, 404, { error: 'invalid_request', error_description: 'AADSTS900561: unknown endpoint' })
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500)
      res.end()
    })
  })
  const port = await listen(server)
  baseUrl = `http://127.0.0.1:${port}`
  return {
    baseUrl,
    tenantId,
    objectId,
    requests,
    setOutcomes(list) {
      outcomes = [...list]
    },
    setDeviceCodeOutcome(outcome) {
      deviceCodeOutcome = outcome
    },
    setIdTokenAudience(aud) {
      idTokenAudience = aud
    },
    setApiClaimsChallenge(claims) {
      apiClaims = claims
    },
    setClaimsRefreshOutcome(outcome) {
      claimsRefreshOutcome = outcome
    },
    apiAccepted,
    get apiChallenges() {
      return apiChallenges
    },
    apiUrl: `${baseUrl}/api/telemetry`,
    trustFederatedAssertion(assertion: string) {
      federatedAssertions.add(assertion)
    },
    signAccessToken(claims: Record<string, unknown>) {
      const now = Math.floor(Date.now() / 1000)
      return new SignJWT({
        iss: `${ENTRA_ISSUER_HOST}/${tenantId}/v2.0`,
        tid: tenantId,
        oid: objectId,
        sub: objectId,
        ver: '2.0',
        iat: now,
        nbf: now,
        exp: now + 3600,
        uti: randomBytes(16).toString('base64url'),
        ...claims,
      })
        .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
        .sign(privateKey)
    },
    jwksUri: `${baseUrl}/${tenantId}/discovery/v2.0/keys`,
    close: () => closeServer(server),
  }
}

/**
 * Routes the protocol core's requests to every Entra ID host (`https://login.microsoftonline.com`,
 * the sovereign clouds) to the dialect server, through an undici dispatcher that rewrites the
 * origin ({@link setHttpDispatcher}): the library has no test-only option for it.
 *
 * @param entra - the running dialect server.
 * @returns undoes the routing and closes the dispatcher.
 * @example
 * ```ts
 * const unroute = routeEntraHosts(entra)
 * after(() => unroute())
 * ```
 */
export function routeEntraHosts(entra: Pick<EntraDialectServer, 'baseUrl'>): () => Promise<void> {
  const agent = new Agent()
  const routed = agent.compose((dispatch) => (options, handler) => {
    const origin = new URL(String(options.origin))
    if (origin.protocol === 'https:' && ENTRA_HOSTS.has(origin.hostname)) {
      return dispatch({ ...options, origin: entra.baseUrl }, handler)
    }
    return dispatch(options, handler)
  })
  setHttpDispatcher(routed)
  return async () => {
    setHttpDispatcher(undefined)
    await agent.close()
  }
}
