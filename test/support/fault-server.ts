/**
 * A misbehaving identity provider on loopback for fault tests, on plain `node:net` (or `node:tls`)
 * so it can do what `node:http` will not: never answer, or send the headers and half of a JSON body
 * and then destroy the socket. It speaks just enough HTTP/1.1 (one request per connection, bodies
 * by `content-length`) and serves a minimal OIDC discovery document naming itself, so a device can
 * be configured with it as its `authority`.
 *
 * @see https://openid.net/specs/openid-connect-discovery-1_0.html#ProviderMetadata
 */
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'

/** What the server does with one request. */
export type FaultAction =
  /** A complete JSON answer. */
  | { status: number; json: unknown; headers?: Record<string, string> }
  /** Reads the request and never answers (the socket stays open until `close()`). */
  | 'hang'
  /** Sends the status line, the headers (with the full body's content-length) and half the body, then destroys the socket. */
  | { status: number; resetMidBody: unknown }

/** One request the server received. */
export interface FaultRequest {
  /** When it was read in full, epoch ms. */
  at: number
  method: string
  /** The request target (path and query). */
  path: string
  /** Request headers, lower-case names. */
  headers: Record<string, string>
  /** The body as text. */
  body: string
}

/** Chooses what to do with a request; `undefined` answers 404. */
export type FaultRoute = (request: FaultRequest, server: FaultServer) => FaultAction | undefined

/** Options of {@link startFaultServer}. */
export interface FaultServerOptions {
  /** Serve TLS with this certificate and key (PEM); else plain HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer }
  /**
   * Answers requests other than discovery. Default: 404 for everything. `GET
   * /.well-known/openid-configuration` is answered with {@link FaultServer.discovery} unless the
   * route returns something for it first.
   */
  route?: FaultRoute
}

/** A running fault server. */
export interface FaultServer {
  /** `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`: the issuer. */
  issuer: string
  port: number
  /** Every request read in full, in order. */
  requests: FaultRequest[]
  /** TCP connections accepted (TLS ones too, whether or not the handshake succeeded). */
  connections(): number
  /** The discovery document it serves: issuer, token and device authorization endpoints. */
  discovery(): Record<string, unknown>
  /** Replaces the route. */
  setRoute(route: FaultRoute): void
  /** Stops listening and destroys every open socket (hung ones too). */
  close(): Promise<void>
}

const REASONS: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  404: 'Not Found',
  503: 'Service Unavailable',
}

function head(status: number, headers: Record<string, string>, length: number): string {
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? 'Status'}`]
  for (const [k, v] of Object.entries({
    'content-type': 'application/json',
    ...headers,
    'content-length': String(length),
    connection: 'close',
  }))
    lines.push(`${k}: ${v}`)
  return `${lines.join('\r\n')}\r\n\r\n`
}

/**
 * Reads one HTTP/1.1 request from a socket (head, then `content-length` bytes of body).
 *
 * @param socket - the connection.
 * @param onRequest - called once with the request.
 */
function readRequest(socket: Socket, onRequest: (request: FaultRequest) => void): void {
  let buffered = Buffer.alloc(0)
  let done = false
  socket.on('data', (chunk: Buffer) => {
    if (done) return
    buffered = Buffer.concat([buffered, chunk])
    const end = buffered.indexOf('\r\n\r\n')
    if (end < 0) return
    const [requestLine = '', ...headerLines] = buffered.subarray(0, end).toString('latin1').split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of headerLines) {
      const colon = line.indexOf(':')
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    const body = buffered.subarray(end + 4)
    if (body.length < length) return
    done = true
    const [method = '', path = ''] = requestLine.split(' ')
    onRequest({ at: Date.now(), method, path, headers, body: body.subarray(0, length).toString('utf8') })
  })
}

/**
 * Starts a fault server on a free 127.0.0.1 port.
 *
 * @param options - TLS material and the route.
 * @returns the running server; call `close()` when done.
 * @example
 * ```ts
 * const idp = await startFaultServer({ route: (r) => (r.path === '/token' ? 'hang' : undefined) })
 * t.after(() => idp.close())
 * ```
 */
export async function startFaultServer(options: FaultServerOptions = {}): Promise<FaultServer> {
  const sockets = new Set<Socket>()
  const requests: FaultRequest[] = []
  let route: FaultRoute = options.route ?? (() => undefined)
  let accepted = 0
  let issuer = ''

  const discovery = () => ({
    issuer,
    token_endpoint: `${issuer}/token`,
    device_authorization_endpoint: `${issuer}/device/auth`,
    jwks_uri: `${issuer}/jwks`,
    response_types_supported: ['code'],
    grant_types_supported: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
  })

  const self = {} as FaultServer
  const onSocket = (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    readRequest(socket, (request) => {
      requests.push(request)
      let action = route(request, self)
      if (
        action === undefined &&
        request.method === 'GET' &&
        request.path === '/.well-known/openid-configuration'
      )
        action = { status: 200, json: discovery() }
      action ??= { status: 404, json: { error: 'not_found' } }
      if (action === 'hang') return
      if ('resetMidBody' in action) {
        const body = Buffer.from(JSON.stringify(action.resetMidBody))
        socket.write(head(action.status, {}, body.length))
        socket.write(body.subarray(0, Math.floor(body.length / 2)), () => socket.destroy())
        return
      }
      const body = Buffer.from(JSON.stringify(action.json))
      socket.end(Buffer.concat([Buffer.from(head(action.status, action.headers ?? {}, body.length)), body]))
    })
  }

  const server: Server = options.tls
    ? createTlsServer({ cert: options.tls.cert, key: options.tls.key }, onSocket)
    : createNetServer(onSocket)
  // Every TCP connection, also a TLS one whose handshake the client refuses (that one never
  // reaches the secure-connection listener).
  server.on('connection', (raw: Socket) => {
    accepted += 1
    raw.on('error', () => {})
    sockets.add(raw)
    raw.on('close', () => sockets.delete(raw))
  })
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  issuer = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`
  Object.assign(self, {
    issuer,
    port,
    requests,
    connections: () => accepted,
    discovery,
    setRoute(next: FaultRoute) {
      route = next
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  } satisfies FaultServer)
  return self
}
