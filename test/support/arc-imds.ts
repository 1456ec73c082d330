/**
 * A managed identity endpoint on 127.0.0.1, built from Microsoft's documented behaviour (and MSAL
 * Python's `msal/managed_identity.py`, which follows it), in one of two modes:
 *
 * - `arc`: the Azure Arc agent's identity endpoint (`IDENTITY_ENDPOINT`, normally
 *   `http://localhost:40342/metadata/identity/oauth2/token`). `GET` with `api-version=2020-06-01`,
 *   `resource` and `Metadata: true`; without `Authorization` it writes a fresh secret to
 *   `<tokenDirectory>/<uuid>.key` and answers `401` with `WWW-Authenticate: Basic realm=<that path>`;
 *   with `Authorization: Basic <the secret>` it answers the token: `access_token`, `expires_on`
 *   (epoch seconds as a string), `resource`, `token_type` ("Azure Arc-enabled servers: managed
 *   identity authentication"; MSAL: `_obtain_token_on_arc`).
 * - `imds`: an Azure VM's instance metadata service (`/metadata/identity/oauth2/token`,
 *   `api-version=2018-02-01`, `resource`, `client_id` for a user-assigned identity, `Metadata:
 *   true`; `expires_in` and `expires_on` as strings; `400` without the Metadata header, as IMDS
 *   documents). Tests point `AZURE_POD_IDENTITY_AUTHORITY_HOST` at it: 169.254.169.254 is never
 *   contacted.
 *
 * Both can answer the next requests with 429/5xx and `Retry-After`, and record every request
 * (with the `Authorization` header, so a test can prove a file was never sent).
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import { closeServer, listen } from './net.js'

/** One request the server received. */
export interface ManagedIdentityRequest {
  path: string
  query: URLSearchParams
  metadata: string | undefined
  authorization: string | undefined
  status: number
}

/** Options of {@link startArcImds}. */
export interface ArcImdsOptions {
  /** Which endpoint to be. */
  mode: 'arc' | 'imds'
  /** Arc: where challenge files are written (the test's stand-in for /var/opt/azcmagent/tokens). */
  tokenDirectory?: string
  /** Token lifetime, seconds. Default 3600. */
  lifetimeSeconds?: number
  /** Makes the access token for a resource (e.g. the test IdP's `signAccessToken`). Default a random string. */
  mint?: (resource: string, clientId: string | undefined) => Promise<string> | string
  /** Send `expires_in` too (IMDS always does; Arc only when this is true). */
  sendExpiresIn?: boolean
}

/** A running endpoint. */
export interface ArcImdsServer {
  /** `http://127.0.0.1:PORT` (for `AZURE_POD_IDENTITY_AUTHORITY_HOST`). */
  baseUrl: string
  /** The token URL (for `IDENTITY_ENDPOINT`). */
  tokenUrl: string
  requests: ManagedIdentityRequest[]
  /** Every access token issued. */
  issued: string[]
  /** Every challenge secret written. */
  secrets: string[]
  /** Arc: the realm the next challenges name instead of the file written (attack tests). */
  setRealm(realm: ((written: string) => string) | undefined): void
  /** Answers the next `count` requests with `status` (and `Retry-After` when given). */
  failNext(count: number, status: number, retryAfterSeconds?: number): void
  /** Refuses every token request with 400 `invalid_request` "Identity not found" (until false). */
  setIdentityGone(gone: boolean): void
  close(): Promise<void>
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers })
  res.end(JSON.stringify(body))
}

/**
 * Starts the endpoint.
 *
 * @param options - mode, challenge directory, lifetime, token minting.
 * @returns the server.
 */
export async function startArcImds(options: ArcImdsOptions): Promise<ArcImdsServer> {
  const lifetime = options.lifetimeSeconds ?? 3600
  const requests: ManagedIdentityRequest[] = []
  const issued: string[] = []
  const secrets: string[] = []
  const valid = new Set<string>()
  let realmOverride: ((written: string) => string) | undefined
  let failures: { count: number; status: number; retryAfter?: number | undefined } = { count: 0, status: 0 }
  let identityGone = false

  const handle = async (req: IncomingMessage, res: ServerResponse, record: ManagedIdentityRequest) => {
    const { query } = record
    if (req.method !== 'GET' || record.path !== '/metadata/identity/oauth2/token') {
      return json(res, 404, { error: 'not_found' })
    }
    if (failures.count > 0) {
      failures.count -= 1
      const headers: Record<string, string> =
        failures.retryAfter === undefined ? {} : { 'retry-after': String(failures.retryAfter) }
      return json(res, failures.status, { error: 'temporarily_unavailable' }, headers)
    }
    // Both document the header as required (it guards against server-side request forgery).
    if (record.metadata !== 'true') {
      return json(res, 400, {
        error: 'invalid_request',
        error_description: 'Required metadata header not specified',
      })
    }
    const version = options.mode === 'arc' ? '2020-06-01' : '2018-02-01'
    const resource = query.get('resource')
    if (query.get('api-version') !== version || !resource) {
      return json(res, 400, {
        error: 'invalid_request',
        error_description: 'api-version or resource missing',
      })
    }
    if (identityGone) {
      return json(res, 400, { error: 'invalid_request', error_description: 'Identity not found' })
    }
    if (options.mode === 'arc') {
      const auth = record.authorization
      if (auth === undefined) {
        const secret = randomBytes(32).toString('hex')
        const written = join(options.tokenDirectory ?? '/nonexistent', `${randomUUID()}.key`)
        writeFileSync(written, secret, { mode: 0o640 })
        secrets.push(secret)
        valid.add(secret)
        const realm = realmOverride ? realmOverride(written) : written
        res.writeHead(401, { 'www-authenticate': `Basic realm=${realm}`, 'content-type': 'application/json' })
        return res.end(JSON.stringify({ error: 'unauthorized' }))
      }
      const secret = /^Basic (.+)$/.exec(auth)?.[1]
      if (secret === undefined || !valid.delete(secret)) {
        return json(res, 401, { error: 'invalid_client', error_description: 'bad challenge response' })
      }
    }
    const clientId = query.get('client_id') ?? undefined
    const accessToken = options.mint
      ? await options.mint(resource, clientId)
      : `mi-${randomBytes(16).toString('base64url')}`
    issued.push(accessToken)
    const expiresOn = Math.floor(Date.now() / 1000) + lifetime
    const body: Record<string, unknown> = {
      access_token: accessToken,
      expires_on: String(expiresOn),
      resource,
      token_type: 'Bearer',
    }
    if (options.mode === 'imds' || options.sendExpiresIn) {
      body.expires_in = String(lifetime)
      body.not_before = String(expiresOn - lifetime)
      if (clientId !== undefined) body.client_id = clientId
    }
    return json(res, 200, body)
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const header = (name: string) => {
      const v = req.headers[name]
      return Array.isArray(v) ? v[0] : v
    }
    const record: ManagedIdentityRequest = {
      path: url.pathname,
      query: url.searchParams,
      metadata: header('metadata'),
      authorization: header('authorization'),
      status: 0,
    }
    requests.push(record)
    res.on('finish', () => {
      record.status = res.statusCode
    })
    handle(req, res, record).catch(() => {
      if (!res.headersSent) json(res, 500, { error: 'server_error' })
    })
  })
  const port = await listen(server)
  const baseUrl = `http://127.0.0.1:${port}`
  return {
    baseUrl,
    tokenUrl: `${baseUrl}/metadata/identity/oauth2/token`,
    requests,
    issued,
    secrets,
    setRealm(realm) {
      realmOverride = realm
    },
    failNext(count, status, retryAfterSeconds) {
      failures = { count, status, retryAfter: retryAfterSeconds }
    },
    setIdentityGone(gone) {
      identityGone = gone
    },
    close: () => closeServer(server),
  }
}
