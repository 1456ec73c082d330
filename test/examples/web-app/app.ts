/**
 * The example web app (issue 18): a `node:http` server that signs users in with
 * `ConfidentialClient` (authorization code + PKCE, `response_mode=form_post`), keeps each user's
 * tokens in the client's partitioned token cache, and calls a protected API for the signed-in user
 * with `acquireTokenSilent({ account, scopes })`.
 *
 * Routes: `GET /` (who is signed in), `GET /signin`, `POST /auth/callback`, `GET /telemetry` (posts
 * one telemetry batch to the API as the user), `GET /signout`.
 *
 * Cookies: `sid` holds only a random session id (HttpOnly, SameSite=Lax, Path=/), issued afresh
 * after sign-in. The sign-in in progress (its PKCE verifier, state, nonce) stays server-side under
 * another random id in `signin` (HttpOnly, Path=/auth/callback, SameSite=None; Secure), because
 * the IdP's form_post is a cross-site POST, which a browser sends without SameSite=Lax cookies.
 * Browsers accept Secure cookies from http://localhost and http://127.0.0.1.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConfidentialClient } from '../../../src/index.js'
import { EdgeTokenError, OAuthServerError } from '../../../src/index.js'
import { isSessionId, newSessionId, type Session, type SessionStore } from './sessions.js'

/** Options of {@link createWebApp}. */
export interface WebAppOptions {
  /** The app's confidential client, its `cache` option set (memory or Redis). */
  client: ConfidentialClient
  /** Where the app is reached, e.g. `http://127.0.0.1:3000`; the redirect URI is `<publicUrl>/auth/callback`. */
  publicUrl: string
  /** The scopes the user signs in for and the API needs (`openid` and `offline_access` are added). */
  scopes: readonly string[]
  /** The protected API's endpoint (the reference telemetry receiver's `POST /ingest`, or the web API). */
  apiUrl: string
  /** Sessions and sign-ins in progress. */
  sessions: SessionStore
  /**
   * OpenID Connect `prompt` of the sign-in. `consent` where the IdP honours `offline_access` (a
   * refresh token) only then, as OpenID Connect Core §11 lets it (oidc-provider does). Default none.
   */
  prompt?: string | undefined
  /** A line for the operator (never a token). Default: stderr. */
  log?: ((line: string) => void) | undefined
}

const SESSION_TTL_SECONDS = 8 * 3600
const SIGNIN_TTL_SECONDS = 600
const MAX_FORM_BYTES = 64 * 1024

/** An answer chosen before any library call: a bad request, a missing sign-in. */
class HttpAnswer extends Error {
  readonly status: number
  readonly error: string

  constructor(status: number, error: string, message: string) {
    super(message)
    this.status = status
    this.error = error
  }
}

function cookies(req: IncomingMessage): Map<string, string> {
  const out = new Map<string, string>()
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim())
  }
  return out
}

function readForm(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > MAX_FORM_BYTES) {
        req.destroy()
        reject(new HttpAnswer(413, 'payload_too_large', `the form is larger than ${MAX_FORM_BYTES} bytes`))
      } else chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers })
  res.end(JSON.stringify(body))
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/**
 * What a failure becomes: a status and a one-line JSON body. Library errors carry a stable code
 * and a message that never holds a secret; anything else is answered without detail.
 */
function errorAnswer(err: unknown): { status: number; error: string; message: string; retryAfter?: string } {
  if (err instanceof HttpAnswer) return { status: err.status, error: err.error, message: err.message }
  if (err instanceof EdgeTokenError) {
    switch (err.code) {
      case 'ERR_SIGNIN_REQUIRED':
        return { status: 401, error: 'signin_required', message: `${err.message}; sign in again at /signin` }
      case 'ERR_CACHE_UNAVAILABLE':
        return { status: 503, error: 'cache_unavailable', message: err.message, retryAfter: '5' }
      case 'ERR_UNAVAILABLE':
        return { status: 503, error: 'idp_unavailable', message: err.message, retryAfter: '5' }
      case 'ERR_ACCESS_DENIED':
        return { status: 403, error: 'access_denied', message: err.message }
      case 'ERR_INVALID_RESPONSE':
      case 'ERR_JWT_INVALID':
        // At the callback: a forged or replayed response (state, iss, nonce); otherwise the IdP's fault.
        return { status: 400, error: 'invalid_response', message: err.message }
      default:
        return {
          status: err instanceof OAuthServerError ? 502 : 500,
          error: err.code.toLowerCase(),
          message: err.message,
        }
    }
  }
  return { status: 500, error: 'server_error', message: 'the request could not be processed' }
}

/**
 * Creates the web app's request handler.
 *
 * @param options - the client, public URL, scopes, API and session store.
 * @returns the `node:http` request listener.
 * @example
 * ```ts
 * const client = new ConfidentialClient({ authority, clientId, credential: { clientSecret }, cache: new MemoryTokenCache() })
 * http.createServer(createWebApp({ client, publicUrl, scopes: ['telemetry:write'], apiUrl, sessions: new MemorySessionStore() })).listen(3000)
 * ```
 */
export function createWebApp(options: WebAppOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { client, sessions } = options
  const redirectUri = new URL('/auth/callback', options.publicUrl).href
  const secure = new URL(options.publicUrl).protocol === 'https:'
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const sessionCookie = (value: string, maxAge: number) =>
    `sid=${value}; Max-Age=${maxAge}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`
  const signInCookie = (value: string, maxAge: number) =>
    `signin=${value}; Max-Age=${maxAge}; Path=/auth/callback; HttpOnly; SameSite=None; Secure`

  /** The session of the request's `sid` cookie, when it names a signed-in one. */
  async function signedIn(req: IncomingMessage): Promise<{ id: string; accountId: string } | undefined> {
    const id = cookies(req).get('sid')
    if (!isSessionId(id)) return undefined
    const session = await sessions.get(id)
    return session?.accountId === undefined ? undefined : { id, accountId: session.accountId }
  }

  async function home(req: IncomingMessage, res: ServerResponse) {
    const session = await signedIn(req)
    const account = session && (await client.getAccount(session.accountId))
    const body = account
      ? `<p>Signed in as ${escapeHtml(account.username ?? account.id)}.</p><p><a href="/telemetry">Send telemetry</a> · <a href="/signout">Sign out</a></p>`
      : '<p><a href="/signin">Sign in</a></p>'
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
    res.end(`<!DOCTYPE html><title>edgetoken web app</title>${body}`)
  }

  async function signIn(_req: IncomingMessage, res: ServerResponse) {
    const request = await client.getAuthorizationUrl({
      scopes: options.scopes,
      redirectUri,
      prompt: options.prompt,
    })
    const id = newSessionId()
    await sessions.set(`signin:${id}`, { signIn: request }, SIGNIN_TTL_SECONDS)
    res.writeHead(302, { location: request.url, 'set-cookie': signInCookie(id, SIGNIN_TTL_SECONDS) })
    res.end()
  }

  async function callback(req: IncomingMessage, res: ServerResponse) {
    const form = await readForm(req)
    const id = cookies(req).get('signin')
    const pending: Session | undefined = isSessionId(id) ? await sessions.get(`signin:${id}`) : undefined
    if (pending?.signIn === undefined) {
      throw new HttpAnswer(400, 'no_signin', 'no sign-in in progress in this browser; start again at /signin')
    }
    // One use: a replayed response finds nothing.
    await sessions.delete(`signin:${id}`)
    const { account } = await client.acquireTokenByCode(pending.signIn, form)
    // A fresh session id after sign-in (no session fixation); the old one is forgotten.
    const previous = cookies(req).get('sid')
    if (isSessionId(previous)) await sessions.delete(previous)
    const sid = newSessionId()
    await sessions.set(sid, { accountId: account.id }, SESSION_TTL_SECONDS)
    log(`signed in ${account.id}`)
    res.writeHead(303, {
      location: '/',
      'set-cookie': [sessionCookie(sid, SESSION_TTL_SECONDS), signInCookie('', 0)],
    })
    res.end()
  }

  async function telemetry(req: IncomingMessage, res: ServerResponse) {
    const session = await signedIn(req)
    if (!session) throw new HttpAnswer(401, 'signin_required', 'not signed in; sign in at /signin')
    const token = await client.acquireTokenSilent({ account: session.accountId, scopes: options.scopes })
    const batchId = randomUUID()
    const body = JSON.stringify({
      device_id: 'web-app',
      batch_id: batchId,
      seq: 0,
      records: [{ ts: new Date().toISOString(), event: 'page_view', path: '/telemetry' }],
    })
    const answer = await fetch(options.apiUrl, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token.accessToken}`,
        'content-type': 'application/json',
        'idempotency-key': batchId,
      },
      body,
      signal: AbortSignal.timeout(10_000),
    }).catch(() => {
      throw new HttpAnswer(502, 'api_unreachable', 'the API cannot be reached')
    })
    const result: unknown = await answer.json().catch(() => undefined)
    json(res, answer.ok ? 200 : 502, {
      user: token.account.username ?? token.account.id,
      fromCache: token.fromCache,
      api: { status: answer.status, ...(typeof result === 'object' && result !== null ? result : {}) },
    })
  }

  async function signOut(req: IncomingMessage, res: ServerResponse) {
    const session = await signedIn(req)
    if (session) {
      // The cache forgets the user's tokens (no revocation at the IdP); the session goes too.
      await client.removeAccount(session.accountId)
      await sessions.delete(session.id)
      log(`signed out ${session.accountId}`)
    }
    res.writeHead(303, { location: '/', 'set-cookie': sessionCookie('', 0) })
    res.end()
  }

  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void>> = {
    'GET /': home,
    'GET /signin': signIn,
    'POST /auth/callback': callback,
    'GET /telemetry': telemetry,
    'GET /signout': signOut,
  }

  return (req, res) => {
    const path = new URL(req.url ?? '/', 'http://app.invalid').pathname
    const route = routes[`${req.method} ${path}`]
    if (!route) {
      req.resume()
      json(res, 404, { error: 'not_found', message: `no route ${req.method} ${path}` })
      return
    }
    route(req, res).catch((err: unknown) => {
      const answer = errorAnswer(err)
      log(
        `${req.method} ${path}: ${answer.status} ${err instanceof EdgeTokenError ? err.code : answer.error}`,
      )
      if (res.headersSent) {
        res.destroy()
        return
      }
      json(
        res,
        answer.status,
        { error: answer.error, message: answer.message },
        answer.retryAfter ? { 'retry-after': answer.retryAfter } : {},
      )
    })
  }
}
