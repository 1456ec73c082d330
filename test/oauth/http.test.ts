/**
 * The HTTP client's house rules: headers, no redirects, size cap (streamed), content-type check,
 * timeouts and network errors as typed errors naming the host, proxy from the environment.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, type Socket } from 'node:net'
import { describe, type TestContext, test } from 'node:test'
import { EnvHttpProxyAgent } from 'undici'
import { InvalidResponseError } from '../../src/errors.js'
import { httpRequest, NetworkError, readJson, setHttpDispatcher } from '../../src/oauth/http.js'
import { VERSION } from '../../src/version.js'
import { JSON_HEADERS, mockHttp } from '../support/mock-http.js'
import { closeServer, listen } from '../support/net.js'
import { createTestPki } from '../support/tls.js'

const ORIGIN = 'https://idp.test'

/** Fails instead of hanging when `promise` has not settled within `ms`. */
async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

async function serve(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = createServer(handler)
  const port = await listen(server)
  t.after(() => closeServer(server))
  return `http://127.0.0.1:${port}`
}

describe('httpRequest', () => {
  test('sends a versioned user-agent and accept: application/json; posts forms', async (t) => {
    const agent = mockHttp(t)
    agent
      .get(ORIGIN)
      .intercept({
        path: '/token',
        method: 'POST',
        headers: {
          'user-agent': `edgetoken/${VERSION}`,
          accept: 'application/json',
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: 'a=1&b=x+y',
      })
      .reply(200, { ok: true }, { headers: JSON_HEADERS })
    const response = await httpRequest(`${ORIGIN}/token`, { body: new URLSearchParams({ a: '1', b: 'x y' }) })
    assert.equal(response.status, 200)
    assert.deepEqual(readJson(response, 'test'), { ok: true })
  })

  test('a 3xx is an error, never followed', async (t) => {
    const agent = mockHttp(t)
    agent
      .get(ORIGIN)
      .intercept({ path: '/.well-known/openid-configuration' })
      .reply(301, '', { headers: { location: 'http://evil.example/' } })
    await assert.rejects(httpRequest(`${ORIGIN}/.well-known/openid-configuration`), (err: unknown) => {
      assert.ok(err instanceof InvalidResponseError)
      assert.equal(err.status, 301)
      assert.match(err.message, /idp\.test answered with a redirect \(301\); redirects are not followed/)
      return true
    })
  })

  test('a declared content-length over the cap is refused before reading', async (t) => {
    const agent = mockHttp(t)
    agent
      .get(ORIGIN)
      .intercept({ path: '/big' })
      .reply(200, 'x', { headers: { ...JSON_HEADERS, 'content-length': String(10 * 1024 * 1024) } })
    await assert.rejects(httpRequest(`${ORIGIN}/big`), {
      code: 'ERR_INVALID_RESPONSE',
      message: /larger than/,
    })
  })

  test('a streamed 10 MB body is cut at the cap, not buffered whole', async (t) => {
    let written = 0
    let closedEarly = false
    const url = await serve(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      const chunk = Buffer.alloc(64 * 1024, 0x20)
      const total = 10 * 1024 * 1024
      res.on('close', () => {
        closedEarly = written < total
      })
      const pump = () => {
        while (written < total) {
          written += chunk.length
          if (!res.write(chunk)) {
            res.once('drain', pump)
            return
          }
        }
        res.end()
      }
      pump()
    })
    await assert.rejects(httpRequest(url, { maxBytes: 256 * 1024 }), (err: unknown) => {
      assert.ok(err instanceof InvalidResponseError)
      assert.match(err.message, /larger than 262144 bytes/)
      return true
    })
    for (let i = 0; i < 100 && !closedEarly; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.ok(closedEarly, `the server could write ${written} bytes`)
  })

  test('issue 11 #1: a refused connection is ERR_UNAVAILABLE naming the identity provider, the host and what to check', async () => {
    // A port that was just free: connecting is refused.
    const dead = createServer()
    const deadPort = await listen(dead)
    await closeServer(dead)
    await assert.rejects(httpRequest(`http://127.0.0.1:${deadPort}/x`), (err: unknown) => {
      assert.ok(err instanceof NetworkError)
      assert.equal(err.code, 'ERR_UNAVAILABLE')
      assert.equal(err.timedOut, false)
      assert.equal(
        err.message,
        `the identity provider at 127.0.0.1:${deadPort} is unreachable (ECONNREFUSED): ` +
          'check `authority` in the config, the network and DNS, and HTTPS_PROXY/NO_PROXY',
      )
      return true
    })
  })

  test('a server that does not answer in time is a timeout naming the host', async (t) => {
    const url = await serve(t, () => {
      // never answers
    })
    await assert.rejects(httpRequest(url, { timeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof NetworkError)
      assert.equal(err.timedOut, true)
      assert.match(
        err.message,
        /^the identity provider at 127\.0\.0\.1:\d+ did not answer within 200 ms: check `authority`/,
      )
      return true
    })
  })

  test('issue 11 #2: the deadline covers the whole body: an answer dribbled a byte every 50 ms ends at 300 ms', async (t) => {
    let askedAt = 0
    let closedAt = 0
    const url = await serve(t, (_req, res) => {
      askedAt = Date.now()
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"a":"')
      // Each byte comes well within any idle timeout; the whole answer never does.
      const timer = setInterval(() => res.write('x'), 50)
      res.on('close', () => {
        clearInterval(timer)
        closedAt = Date.now()
      })
    })
    await assert.rejects(within(5000, httpRequest(url, { timeoutMs: 300 })), (err: unknown) => {
      assert.ok(err instanceof NetworkError, String(err))
      assert.equal(err.timedOut, true)
      return true
    })
    for (let i = 0; i < 100 && closedAt === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.ok(closedAt > 0 && askedAt > 0, 'the connection was dropped')
  })

  test('an aborted signal is ERR_CANCELLED', async (t) => {
    const url = await serve(t, () => {})
    await assert.rejects(httpRequest(url, { signal: AbortSignal.timeout(100) }), { code: 'ERR_CANCELLED' })
  })

  test('HTTP_PROXY from the environment is used (EnvHttpProxyAgent), NO_PROXY bypasses it', async (t) => {
    const direct = await serve(t, (req, res) => {
      res.writeHead(200, JSON_HEADERS).end(JSON.stringify({ host: req.headers.host }))
    })
    // A tunnelling proxy: answers CONNECT and pipes every tunnel to the `direct` server.
    const seen: string[] = []
    const proxyServer = createServer((_req, res) => res.writeHead(405).end())
    proxyServer.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      seen.push(String(req.url))
      const upstream = connect(Number(new URL(direct).port), '127.0.0.1', () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
        upstream.write(head)
        upstream.pipe(socket)
        socket.pipe(upstream)
      })
      upstream.on('error', () => socket.destroy())
      socket.on('error', () => upstream.destroy())
    })
    const proxyPort = await listen(proxyServer)
    t.after(() => closeServer(proxyServer))
    const saved = { HTTP_PROXY: process.env.HTTP_PROXY, NO_PROXY: process.env.NO_PROXY }
    t.after(async () => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
      setHttpDispatcher(undefined)
    })
    process.env.HTTP_PROXY = `http://127.0.0.1:${proxyPort}`
    process.env.NO_PROXY = '127.0.0.1'
    setHttpDispatcher(undefined)
    const viaProxy = await httpRequest('http://idp.internal.test/.well-known/openid-configuration')
    assert.deepEqual(readJson(viaProxy, 'x'), { host: 'idp.internal.test' })
    assert.deepEqual(seen, ['idp.internal.test:80'])
    const bypass = await httpRequest(`${direct}/x`)
    assert.deepEqual(readJson(bypass, 'x'), { host: new URL(direct).host })
    assert.equal(seen.length, 1)
  })
})

describe('HTTPS_PROXY', () => {
  test('an https target goes through a CONNECT tunnel of HTTPS_PROXY, TLS verified end to end', async (t) => {
    const pki = await createTestPki()
    t.after(() => pki.close())
    const [cert, key] = await Promise.all([readFile(pki.serverCertFile), readFile(pki.serverKeyFile)])
    const target = createHttpsServer({ cert, key }, (req, res) => {
      res.writeHead(200, JSON_HEADERS).end(JSON.stringify({ host: req.headers.host, tls: true }))
    })
    const targetPort = await listen(target)
    t.after(() => closeServer(target))
    const seen: string[] = []
    const proxyServer = createServer((_req, res) => res.writeHead(405).end())
    proxyServer.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      seen.push(String(req.url))
      const upstream = connect(targetPort, '127.0.0.1', () => {
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
        upstream.write(head)
        upstream.pipe(socket)
        socket.pipe(upstream)
      })
      upstream.on('error', () => socket.destroy())
      socket.on('error', () => upstream.destroy())
    })
    const proxyPort = await listen(proxyServer)
    t.after(() => closeServer(proxyServer))
    const saved = { HTTPS_PROXY: process.env.HTTPS_PROXY, NO_PROXY: process.env.NO_PROXY }
    process.env.HTTPS_PROXY = `http://127.0.0.1:${proxyPort}`
    process.env.NO_PROXY = ''
    // The default dispatcher's class, read from the environment as in production; only the test
    // CA is added (the tunnel's TLS session is with the target, not with the proxy).
    const agent = new EnvHttpProxyAgent({ requestTls: { ca: pki.ca } })
    t.after(async () => {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
      setHttpDispatcher(undefined)
      await agent.close()
    })
    setHttpDispatcher(agent)
    const response = await httpRequest(`https://localhost:${targetPort}/.well-known/openid-configuration`)
    assert.deepEqual(readJson(response, 'x'), { host: `localhost:${targetPort}`, tls: true })
    assert.deepEqual(seen, [`localhost:${targetPort}`])
  })
})

describe('readJson', () => {
  const response = (body: string, type?: string) => ({
    url: new URL(`${ORIGIN}/x`),
    status: 200,
    headers: type ? { 'content-type': type } : {},
    body,
  })

  test('an HTML page is reported as such (captive portal)', () => {
    assert.throws(
      () => readJson(response('<!DOCTYPE html><title>Hotel Wi-Fi</title>', 'text/html'), 'token response'),
      {
        message: 'token response: idp.test answered with an HTML page, not JSON (captive portal?)',
      },
    )
  })

  test('HTML sent as application/json is still reported as HTML', () => {
    assert.throws(() => readJson(response('<html></html>', 'application/json'), 'x'), {
      message: /HTML page/,
    })
  })

  test('a wrong content type is refused', () => {
    assert.throws(() => readJson(response('{}', 'text/plain'), 'x'), {
      message: /content-type "text\/plain", not JSON/,
    })
    assert.throws(() => readJson(response('{}'), 'x'), { message: /content-type/ })
  })

  test('application/json with charset and +json types are accepted; invalid JSON is refused', () => {
    assert.deepEqual(readJson(response('{"a":1}', 'application/json; charset=utf-8'), 'x'), { a: 1 })
    assert.deepEqual(readJson(response('{"a":1}', 'application/jwk-set+json'), 'x'), { a: 1 })
    assert.throws(() => readJson(response('{"a":', 'application/json'), 'x'), {
      code: 'ERR_INVALID_RESPONSE',
      message: /invalid JSON/,
    })
  })
})
