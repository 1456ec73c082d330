/**
 * The uploader's transport under hostile networks (issue 11, from the audit's #9, #10, #12):
 * an overall deadline per POST that a dribbling API cannot stretch, a cap on the answer drained,
 * loopback endpoints never sent through HTTP(S)_PROXY, a proxy that drops CONNECT costing one
 * connection per attempt, and messages naming `telemetry.endpoint`.
 *
 * Real `node:http` servers and a real loopback proxy; `api.test` is only ever named to the proxy.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, type TestContext, test } from 'node:test'
import { isEdgeTokenError } from '../../../src/errors.js'
import { openSpool, type Spool } from '../../../src/telemetry/spool/spool.js'
import { Uploader, type UploaderOptions } from '../../../src/telemetry/upload/uploader.js'
import { closeServer, listen } from '../../support/net.js'
import { startProxy } from '../../support/proxy.js'

const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']

function useEnv(t: TestContext, vars: Record<string, string>): void {
  const saved = Object.fromEntries(PROXY_VARS.map((k) => [k, process.env[k]]))
  for (const k of PROXY_VARS) delete process.env[k]
  Object.assign(process.env, vars)
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
}

async function serve(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const server = createServer(handler)
  const port = await listen(server)
  t.after(() => closeServer(server))
  return port
}

async function uploader(
  t: TestContext,
  endpoint: string,
  extra: Partial<UploaderOptions> = {},
): Promise<{ spool: Spool; uploader: Uploader }> {
  const dir = await mkdtemp(join(tmpdir(), 'edgetoken-upnet-'))
  const spool = await openSpool(dir)
  const up = new Uploader({
    spool,
    endpoint,
    deviceId: 'pi-net',
    getAccessToken: async () => 'not-a-real-token',
    sleep: async () => {},
    random: () => 0.5,
    ...extra,
  })
  t.after(async () => {
    await up.close()
    await spool.close()
    await rm(dir, { recursive: true, force: true })
  })
  await spool.append([{ n: 1 }, { n: 2 }])
  return { spool, uploader: up }
}

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

describe('uploader transport (issue 11)', () => {
  test('issue 11 #2: an API dribbling its answer a byte every 50 ms is given up at the 300 ms deadline; the batch is kept', async (t) => {
    let askedAt = 0
    let closedAt = 0
    const port = await serve(t, (req, res) => {
      askedAt = Date.now()
      req.resume()
      res.writeHead(200, { 'content-type': 'application/json' })
      // Every byte well within undici's idle timeouts (300 ms here); the answer never ends.
      const timer = setInterval(() => res.write(' '), 50)
      res.on('close', () => {
        clearInterval(timer)
        closedAt = Date.now()
      })
    })
    const { spool, uploader: up } = await uploader(t, `http://127.0.0.1:${port}/ingest`, {
      requestTimeoutMs: 300,
    })
    // The bound is generous: the first request imports undici, slow on a loaded machine.
    await assert.rejects(within(10_000, up.drain({ maxRetries: 0 })), (err: unknown) => {
      assert.ok(isEdgeTokenError(err, 'ERR_UNAVAILABLE'), String(err))
      assert.match(
        (err as Error).message,
        /^the telemetry API at 127\.0\.0\.1:\d+ did not answer within 300 ms: check `telemetry\.endpoint`/,
      )
      return true
    })
    assert.equal((await spool.stats()).pending, 2)
    for (let i = 0; i < 100 && closedAt === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.ok(closedAt > 0 && askedAt > 0, 'the connection was dropped')
  })

  test('issue 11 #2: an answer larger than maxResponseBytes is cut there and its connection dropped', async (t) => {
    let written = 0
    let closed = false
    const port = await serve(t, (req, res) => {
      req.resume()
      res.writeHead(503, { 'content-type': 'text/plain' })
      const chunk = Buffer.alloc(16 * 1024, 0x61)
      // An endless error page, written as fast as the client takes it.
      const pump = () => {
        while (!closed && res.write(chunk)) written += chunk.length
        if (!closed) res.once('drain', pump)
      }
      res.on('close', () => {
        closed = true
      })
      pump()
    })
    const { spool, uploader: up } = await uploader(t, `http://127.0.0.1:${port}/ingest`, {
      maxResponseBytes: 64 * 1024,
    })
    await assert.rejects(within(10_000, up.drain({ maxRetries: 0 })), (err: unknown) => {
      assert.ok(isEdgeTokenError(err, 'ERR_UNAVAILABLE'), String(err))
      assert.match((err as Error).message, /503/)
      return true
    })
    assert.equal((await spool.stats()).pending, 2)
    for (let i = 0; i < 100 && !closed; i++) await new Promise((resolve) => setTimeout(resolve, 20))
    assert.ok(closed, 'the connection was dropped')
    // Socket buffers hold some more than the cap; nowhere near an endless read.
    assert.ok(written < 8 * 1024 * 1024, `the API wrote ${written} bytes`)
  })

  test('issue 11 #1: an API refusing connections: the message names the API, the host and telemetry.endpoint', async (t) => {
    const dead = createServer()
    const port = await listen(dead)
    await closeServer(dead)
    const { uploader: up } = await uploader(t, `http://127.0.0.1:${port}/ingest`)
    await assert.rejects(up.drain({ maxRetries: 0 }), (err: unknown) => {
      assert.equal(
        (err as Error).message,
        `the telemetry API at 127.0.0.1:${port} is unreachable (ECONNREFUSED): ` +
          'check `telemetry.endpoint` in the config, the network and DNS, and HTTPS_PROXY/NO_PROXY',
      )
      return true
    })
  })

  test('issue 11 #3: with HTTP_PROXY and HTTPS_PROXY set and no NO_PROXY, a loopback endpoint is reached directly', async (t) => {
    const seen: string[] = []
    const port = await serve(t, (req, res) => {
      seen.push(String(req.headers.authorization))
      req.resume()
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
    const proxy = await startProxy({ connect: 'tunnel' })
    t.after(() => proxy.close())
    useEnv(t, { HTTP_PROXY: proxy.url, HTTPS_PROXY: proxy.url })
    const { spool, uploader: up } = await uploader(t, `http://127.0.0.1:${port}/ingest`)
    const result = await up.drain()
    assert.equal(result.delivered, 2)
    assert.equal((await spool.stats()).pending, 0)
    assert.deepEqual(seen, ['Bearer not-a-real-token'])
    assert.equal(proxy.connections(), 0, 'the access token went through the proxy')
  })

  test('issue 11 #4: through a proxy that drops CONNECT, one connection per attempt and a message naming the proxy', async (t) => {
    const proxy = await startProxy({ connect: 'close' })
    t.after(() => proxy.close())
    useEnv(t, { HTTPS_PROXY: proxy.url })
    const { spool, uploader: up } = await uploader(t, 'https://api.test/ingest')
    await assert.rejects(within(10_000, up.drain({ maxRetries: 1 })), (err: unknown) => {
      assert.ok(isEdgeTokenError(err, 'ERR_UNAVAILABLE'), String(err))
      assert.match(
        (err as Error).message,
        new RegExp(
          `^the proxy at 127\\.0\\.0\\.1:${proxy.port} closed the connection during CONNECT to api\\.test:443`,
        ),
      )
      return true
    })
    await new Promise((resolve) => setTimeout(resolve, 200))
    assert.equal(proxy.connections(), 2)
    assert.equal((await spool.stats()).pending, 2)
  })
})
