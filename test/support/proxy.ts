/**
 * A real HTTP proxy on loopback for tests (node:http and node:net): it answers CONNECT (tunnels)
 * and absolute-form requests (`GET http://host/path`), and records what it was asked.
 *
 * It never reaches beyond loopback: a tunnel or a forwarded request to any other host is answered
 * 502 without a connection, so a test cannot touch the real network even when the code under
 * test asks the proxy for `idp.test`. Tunnels to loopback go to `tunnelPort` when set (to serve a
 * made-up name such as `idp.test` from a local server), else to the port asked for.
 */
import { createServer, type IncomingMessage, request, type Server } from 'node:http'
import { connect, type Socket } from 'node:net'
import { closeServer, listen } from './net.js'

/** How the proxy answers CONNECT. */
export type ConnectMode =
  /** Opens the tunnel (to loopback targets, or to `tunnelPort`). */
  | 'tunnel'
  /** Answers `403 Forbidden` and closes the connection, like a proxy that refuses the target. */
  | 'refuse'
  /** Closes the socket without an answer, like a proxy that does not implement CONNECT. */
  | 'close'
  /** Never answers (the connection stays open until the proxy is closed). */
  | 'hang'

/** Options of {@link startProxy}. */
export interface ProxyOptions {
  /** How CONNECT is answered. Default `tunnel`. */
  connect?: ConnectMode
  /** Tunnels and forwarded requests go to this loopback port, whatever host they name. */
  tunnelPort?: number
}

/** A running test proxy. */
export interface TestProxy {
  /** `http://127.0.0.1:PORT`, for HTTP_PROXY / HTTPS_PROXY. */
  url: string
  /** The proxy's port. */
  port: number
  /** The `host:port` of every CONNECT, in order. */
  connects: string[]
  /** The absolute-form URL of every forwarded request, in order. */
  requests: string[]
  /** TCP connections accepted so far. */
  connections(): number
  /** Stops the proxy and drops open connections and tunnels. */
  close(): Promise<void>
}

function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(host)
}

function splitAuthority(authority: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(authority)
  return { host: (m?.[1] ?? '').toLowerCase(), port: Number(m?.[2] ?? 443) }
}

/**
 * Starts a loopback proxy.
 *
 * @param options - how CONNECT is answered, and where tunnels go.
 * @returns the proxy's URL, what it saw, and `close`.
 */
export async function startProxy(options: ProxyOptions = {}): Promise<TestProxy> {
  const mode = options.connect ?? 'tunnel'
  const connects: string[] = []
  const requests: string[] = []
  const open = new Set<Socket>()
  let accepted = 0

  const server: Server = createServer((req: IncomingMessage, res) => {
    const target = String(req.url)
    requests.push(target)
    let url: URL
    try {
      url = new URL(target)
    } catch {
      res.writeHead(400).end()
      return
    }
    if (options.tunnelPort === undefined && !isLoopbackName(url.hostname)) {
      res.writeHead(502).end()
      return
    }
    const upstream = request(
      {
        host: '127.0.0.1',
        port: options.tunnelPort ?? Number(url.port || 80),
        method: req.method,
        path: `${url.pathname}${url.search}`,
        headers: req.headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(res)
      },
    )
    upstream.on('error', () => res.destroy())
    req.pipe(upstream)
  })
  server.on('connection', (socket: Socket) => {
    accepted += 1
    open.add(socket)
    socket.on('close', () => open.delete(socket))
  })
  server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    connects.push(String(req.url))
    socket.on('error', () => {})
    if (mode === 'refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      return
    }
    if (mode === 'close') {
      socket.destroy()
      return
    }
    if (mode === 'hang') return
    const { host, port } = splitAuthority(String(req.url))
    if (options.tunnelPort === undefined && !isLoopbackName(host)) {
      socket.end('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
      return
    }
    const upstream = connect(options.tunnelPort ?? port, '127.0.0.1', () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.write(head)
      upstream.pipe(socket)
      socket.pipe(upstream)
    })
    open.add(upstream)
    upstream.on('close', () => open.delete(upstream))
    upstream.on('error', () => socket.destroy())
    socket.on('close', () => upstream.destroy())
  })
  const port = await listen(server)
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    connects,
    requests,
    connections: () => accepted,
    async close() {
      for (const s of open) s.destroy()
      await closeServer(server)
    },
  }
}
