/**
 * The loopback redirect listener of a browser sign-in (RFC 8252 §7.3): an HTTP server on
 * `127.0.0.1` on a port the kernel picks, that waits for the one callback that completes the
 * sign-in and then closes.
 *
 * Not protocol code: it knows nothing of `state` or codes. The caller's handler judges each
 * callback; the listener only guarantees the rules around it:
 * - it binds the IPv4 literal, never `localhost` (RFC 8252 §8.3: a name may resolve elsewhere, or
 *   to an interface other than the one listened on);
 * - only a `GET` of the exact redirect path, with a `Host` of the literal address and port,
 *   reach the handler: a page elsewhere on the web that makes the browser request another host
 *   name resolving to 127.0.0.1 (DNS rebinding) is refused before anything is judged;
 * - one callback at a time: while the handler works on one, another request gets a plain page and
 *   changes nothing; a callback the handler rejects gets a plain page and waiting goes on;
 * - the browser is only ever shown fixed plain text (`text/plain`, `no-store`, `no-referrer`):
 *   never a token, a code, or anything a response could inject markup with;
 * - it closes after the accepted callback, when the signal fires, and on `close()`.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8252#section-7.3
 * @see https://www.rfc-editor.org/rfc/rfc8252#section-8.3
 * @packageDocumentation
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { EdgeTokenError } from '../errors.js'

/** The address listened on: the IPv4 loopback literal (RFC 8252 §7.3, §8.3). */
export const LOOPBACK_ADDRESS = '127.0.0.1'

/** What a handler decides about one callback. */
export type CallbackVerdict<T> =
  /** The sign-in is complete: the listener answers the success page, closes, and resolves `value`. */
  | { readonly accept: T }
  /**
   * Not the callback being waited for (wrong `state`, no code, an error answer): the browser
   * gets `reason` on a plain page and the listener keeps waiting. `reason` must hold no secret.
   */
  | { readonly reject: string }

/** Judges one callback URL; throwing ends the wait with that error (the browser gets a failure page). */
export type CallbackHandler<T> = (callbackUrl: URL) => Promise<CallbackVerdict<T>>

/** Options of {@link LoopbackListener.waitForCallback}. */
export interface WaitForCallbackOptions {
  /** Ends the wait (rejecting with the signal's reason, or `ERR_CANCELLED`) and closes the listener. */
  signal?: AbortSignal | undefined
  /** Called with each rejected callback's reason (for the terminal). */
  onRejected?: ((reason: string) => void) | undefined
}

/** A running listener; see {@link startLoopbackListener}. */
export interface LoopbackListener {
  /** `http://127.0.0.1:<port>/`: the redirect URI to send, exactly. */
  readonly redirectUri: string
  /** The port the kernel picked. */
  readonly port: number
  /**
   * Waits for the callback the handler accepts. Call once.
   *
   * @param handler - judges each callback (serially, one at a time).
   * @param options - signal and a listener for rejected callbacks.
   * @returns what the handler accepted.
   * @throws what the handler threw; `ERR_CANCELLED` (or the signal's reason) when the signal fired.
   */
  waitForCallback<T>(handler: CallbackHandler<T>, options?: WaitForCallbackOptions): Promise<T>
  /** Stops listening and drops every connection. Safe to call more than once. */
  close(): Promise<void>
}

/** Fixed texts the browser is shown. */
const PAGES = {
  accepted: 'Signed in. You can close this window and return to edgetoken.',
  failed: 'The sign-in did not complete. See the terminal where edgetoken runs.',
  busy: 'A sign-in is already being completed. You can close this window.',
  closed: 'This sign-in is over. You can close this window.',
  notFound: 'Not found.',
  method: 'Method not allowed.',
  host: 'Misdirected request.',
}

const HEADERS = {
  'content-type': 'text/plain; charset=utf-8',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'",
  connection: 'close',
}

function send(req: IncomingMessage, res: ServerResponse, status: number, text: string): void {
  const body = `${text}\n`
  res.writeHead(status, { ...HEADERS, 'content-length': Buffer.byteLength(body) })
  res.end(req.method === 'HEAD' ? undefined : body)
}

/** Keeps a reason one printable line, bounded: it ends up on a page and in the terminal. */
function oneLine(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, ' ').slice(0, 300)
}

/**
 * Starts a listener on `127.0.0.1` on a random port, path `/`.
 *
 * @returns the listener; its `redirectUri` is `http://127.0.0.1:<port>/`.
 * @throws EdgeTokenError `ERR_UNAVAILABLE` when no loopback port can be bound.
 * @example
 * ```ts
 * const listener = await startLoopbackListener()
 * try {
 *   const url = buildUrl(listener.redirectUri)
 *   const code = await listener.waitForCallback(async (cb) =>
 *     cb.searchParams.get('state') === state ? { accept: cb.searchParams.get('code') } : { reject: 'wrong state' },
 *     { signal })
 * } finally {
 *   await listener.close()
 * }
 * ```
 * @see https://www.rfc-editor.org/rfc/rfc8252#section-7.3
 */
export async function startLoopbackListener(): Promise<LoopbackListener> {
  let route: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  // Loaded here, not at import: `import 'edgetoken'` re-exports this module, and node:http costs
  // 8-25 ms to load on its own (issue 17).
  const { createServer } = await import('node:http')
  const server: Server = createServer((req, res) => {
    if (route) route(req, res)
    else send(req, res, 503, PAGES.closed)
  })
  // A browser's preconnects and keep-alive sockets must not hold the process once it is done.
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      reject(
        new EdgeTokenError(
          'ERR_UNAVAILABLE',
          `cannot listen on ${LOOPBACK_ADDRESS} (${oneLine(err.message)})`,
          {
            cause: err,
          },
        ),
      )
    }
    server.once('error', onError)
    // Port 0: the kernel picks a free ephemeral port (RFC 8252 §7.3 "any port").
    server.listen({ host: LOOPBACK_ADDRESS, port: 0, exclusive: true }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const host = `${LOOPBACK_ADDRESS}:${port}`
  const redirectUri = `http://${host}/`

  let closed = false
  const close = async (): Promise<void> => {
    route = undefined
    if (closed) return
    closed = true
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }

  let waiting = false
  const waitForCallback = <T>(
    handler: CallbackHandler<T>,
    options: WaitForCallbackOptions = {},
  ): Promise<T> => {
    if (waiting) throw new TypeError('waitForCallback may be called once')
    waiting = true
    const { signal } = options
    return new Promise<T>((resolve, reject) => {
      let busy = false
      let settled = false
      const finish = (outcome: () => void) => {
        if (settled) return
        settled = true
        signal?.removeEventListener('abort', onAbort)
        // The answer page is written before the connections are dropped.
        setImmediate(() => {
          void close().finally(outcome)
        })
      }
      const onAbort = () => {
        const reason: unknown = signal?.reason
        finish(() =>
          reject(reason instanceof Error ? reason : new EdgeTokenError('ERR_CANCELLED', 'sign-in cancelled')),
        )
      }
      if (signal?.aborted) {
        onAbort()
        return
      }
      signal?.addEventListener('abort', onAbort, { once: true })

      route = (req, res) => {
        if (settled) return send(req, res, 410, PAGES.closed)
        // RFC 8252 §8.3 and DNS rebinding: only the literal address we listen on.
        if (req.headers.host !== host) return send(req, res, 421, PAGES.host)
        const url = new URL(req.url ?? '/', redirectUri)
        if (url.pathname !== '/') return send(req, res, 404, PAGES.notFound)
        // The query response mode arrives as a GET (RFC 6749 §4.1.2); nothing else is judged.
        if (req.method !== 'GET') {
          res.setHeader('allow', 'GET')
          return send(req, res, 405, PAGES.method)
        }
        // A second tab must not be judged while a callback is being redeemed.
        if (busy) return send(req, res, 409, PAGES.busy)
        busy = true
        handler(url).then(
          (verdict) => {
            busy = false
            if (settled) return send(req, res, 410, PAGES.closed)
            if ('accept' in verdict) {
              send(req, res, 200, PAGES.accepted)
              finish(() => resolve(verdict.accept))
              return
            }
            const reason = oneLine(verdict.reject)
            send(req, res, 400, `${reason}\nThe sign-in is still waiting: open the sign-in link again.`)
            options.onRejected?.(reason)
          },
          (err: unknown) => {
            busy = false
            send(req, res, 500, PAGES.failed)
            finish(() => reject(err))
          },
        )
      }
    })
  }

  return { redirectUri, port, waitForCallback, close }
}
