/**
 * The protected telemetry API for tests: the reference receiver on a real 127.0.0.1 port, plus
 * switchable failure modes an uploader must survive (connection refused, 503 with Retry-After,
 * one stray 401, a captive portal's 200 HTML page).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createReceiver, type Receiver } from '../../src/telemetry/receiver/receiver.js'
import { closeServer, listen } from './net.js'

/**
 * How the API behaves: `up` = the real receiver; `down` = the port refuses connections;
 * `unavailable` = 503 with Retry-After; `unauthorized-once` = the next request gets 401
 * `invalid_token`, then `up`; `captive-portal` = 200 with an HTML login page.
 */
export type ApiMode = 'up' | 'down' | 'unavailable' | 'unauthorized-once' | 'captive-portal'

/** One request that reached the API (requests refused while `down` never do). */
export interface ApiRequestRecord {
  /** When it arrived (`Date.now()` ms). */
  at: number
  /** The status answered. */
  status: number
  /** The `Idempotency-Key` header, if sent. */
  idempotencyKey?: string
  /** Whether an `Authorization` header was sent (never its value). */
  authorization: boolean
}

/** Options of {@link TestApi.setMode}. */
export interface SetModeOptions {
  /** `Retry-After` sent in `unavailable` mode. Default 1. */
  retryAfterSeconds?: number
}

/** A running test API; see {@link startTestApi}. */
export interface TestApi {
  /** The ingest endpoint, `http://127.0.0.1:PORT/ingest`. */
  url: string
  /** The port; stays the same across `down` and back `up`. */
  port: number
  /** The reference receiver behind it; `.batches` holds accepted batches. */
  receiver: Receiver
  /** Every request that reached the server, in order. */
  requests: ApiRequestRecord[]
  /** The current mode. */
  readonly mode: ApiMode
  /**
   * Switches the mode. Leaving or entering `down` closes or re-opens the port; await the
   * returned promise before relying on it (going down takes effect at once).
   */
  setMode(mode: ApiMode, opts?: SetModeOptions): Promise<void>
  /** Stops the server. */
  close(): Promise<void>
}

const PORTAL_PAGE =
  '<!DOCTYPE html><html><head><title>Wi-Fi login</title></head>' +
  '<body><form method="post" action="/portal"><input name="accept" type="submit" value="Accept terms"></form></body></html>'

/**
 * Starts the test API on a free 127.0.0.1 port, verifying tokens from `issuer` for `audience`.
 *
 * @param options - the issuer (its discovery document gives the keys) and the API's audience.
 * @returns the running API; call `close()` when done.
 * @example
 * ```ts
 * const api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
 * t.after(() => api.close())
 * await api.setMode('unavailable', { retryAfterSeconds: 2 })
 * ```
 */
export async function startTestApi(options: { issuer: string; audience: string }): Promise<TestApi> {
  const receiver = createReceiver({ issuer: options.issuer, audience: options.audience })
  const requests: ApiRequestRecord[] = []
  let mode: ApiMode = 'up'
  let retryAfterSeconds = 1
  let closed = false

  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    const current = mode
    if (current === 'unauthorized-once') mode = 'up'
    switch (current) {
      case 'unavailable':
        req.resume()
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': String(retryAfterSeconds) })
        res.end('{"error":"temporarily_unavailable"}')
        return
      case 'unauthorized-once':
        req.resume()
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': 'Bearer error="invalid_token", error_description="the access token expired"',
        })
        res.end('{"error":"invalid_token"}')
        return
      case 'captive-portal':
        req.resume()
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
        res.end(PORTAL_PAGE)
        return
      default:
        receiver.handler(req, res)
    }
  }

  const server = createServer((req, res) => {
    const at = Date.now()
    const key = req.headers['idempotency-key']
    res.on('finish', () => {
      requests.push({
        at,
        status: res.statusCode,
        ...(typeof key === 'string' ? { idempotencyKey: key } : {}),
        authorization: req.headers.authorization !== undefined,
      })
    })
    if (new URL(req.url ?? '/', 'http://127.0.0.1').pathname !== '/ingest') {
      req.resume()
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}')
      return
    }
    answer(req, res)
  })
  const port = await listen(server)

  return {
    url: `http://127.0.0.1:${port}/ingest`,
    port,
    receiver,
    requests,
    get mode() {
      return mode
    },
    async setMode(next: ApiMode, opts: SetModeOptions = {}) {
      retryAfterSeconds = opts.retryAfterSeconds ?? 1
      const wasDown = mode === 'down'
      mode = next
      if (closed) return
      // server.close() stops accepting synchronously, so "down" holds as soon as this is called.
      if (next === 'down' && !wasDown) await closeServer(server)
      else if (next !== 'down' && wasDown) await listen(server, port)
    },
    async close() {
      closed = true
      receiver.close()
      await closeServer(server)
    },
  }
}
