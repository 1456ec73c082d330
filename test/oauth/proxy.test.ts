/**
 * The protocol core's HTTP and proxies (issue 11 #3 and #4, from the audit's #10 and #12), against
 * a real loopback proxy (test/support/proxy.ts) that records what it was asked:
 * - loopback hosts are never sent through HTTP_PROXY/HTTPS_PROXY, whatever NO_PROXY says;
 * - a proxy that refuses, drops or ignores CONNECT costs a bounded number of connections, the
 *   deadline holds, and `login` fails with exit 5 naming the proxy, or stops on one SIGTERM.
 *
 * Only loopback traffic: the made-up `idp.test` is only ever named to the proxy (which never
 * resolves it), and tunnels to it go to a local server.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, type TestContext, test } from 'node:test'
import { Dispatcher } from 'undici'
import { proxyFor, proxySettings } from '../../src/lib/http/http-agent.js'
import { httpRequest, NetworkError, readJson, setHttpDispatcher } from '../../src/oauth/http.js'
import { withRetries } from '../../src/oauth/retry.js'
import { collect, newTestDevice, spawnCli } from '../support/cli.js'
import { closeServer, listen } from '../support/net.js'
import { type ConnectMode, startProxy, type TestProxy } from '../support/proxy.js'

const PROXY_VARS = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy']

/** Sets the proxy variables for one test (and fresh dispatchers that read them), restored after. */
function useEnv(t: TestContext, vars: Record<string, string>): void {
  const saved = Object.fromEntries(PROXY_VARS.map((k) => [k, process.env[k]]))
  for (const k of PROXY_VARS) delete process.env[k]
  Object.assign(process.env, vars)
  setHttpDispatcher(undefined)
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
    setHttpDispatcher(undefined)
  })
}

async function proxy(t: TestContext, mode: ConnectMode, tunnelPort?: number): Promise<TestProxy> {
  const p = await startProxy({ connect: mode, ...(tunnelPort === undefined ? {} : { tunnelPort }) })
  t.after(() => p.close())
  return p
}

async function jsonServer(t: TestContext): Promise<number> {
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ host: req.headers.host }))
  })
  const port = await listen(server)
  t.after(() => closeServer(server))
  return port
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

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

/** Waits until the proxy has seen a connection (the CLI starts in seconds under tsx on a busy machine). */
async function firstConnection(p: TestProxy): Promise<void> {
  const startBy = Date.now() + 25_000
  while (p.connections() === 0 && Date.now() < startBy) await sleep(10)
}

describe('issue 11 #3: loopback traffic never goes through a proxy', () => {
  test('proxyFor: 127.0.0.0/8, ::1 and localhost are direct; other hosts take the proxy of their scheme', () => {
    const settings = proxySettings({ HTTP_PROXY: 'http://p.test:3128', HTTPS_PROXY: 'http://ps.test:3129' })
    for (const url of [
      'http://127.0.0.1:8080/',
      'https://127.5.6.7/',
      'http://[::1]:9000/',
      'https://localhost/',
      'http://LOCALHOST:1/',
    ]) {
      assert.equal(proxyFor(new URL(url), settings), undefined, url)
    }
    assert.equal(proxyFor(new URL('https://idp.test/'), settings)?.host, 'ps.test:3129')
    assert.equal(proxyFor(new URL('http://idp.test/'), settings)?.host, 'p.test:3128')
    // Only HTTP_PROXY: https targets use it too (as undici's EnvHttpProxyAgent does).
    const httpOnly = proxySettings({ http_proxy: 'http://p.test:3128' })
    assert.equal(proxyFor(new URL('https://idp.test/'), httpOnly)?.host, 'p.test:3128')
    // Not loopback, although it starts with 127.
    assert.equal(proxyFor(new URL('https://127.example/'), settings)?.host, 'ps.test:3129')
  })

  test('a proxy variable that is not a URL is a config error that does not print it', () => {
    assert.throws(
      () => proxySettings({ HTTPS_PROXY: 'http://user:s3cret@[bad' }),
      (err: unknown) => {
        assert.equal((err as { code?: string }).code, 'ERR_CONFIG')
        assert.doesNotMatch(String((err as Error).message), /s3cret/)
        return true
      },
    )
  })

  test('with HTTP_PROXY and HTTPS_PROXY set and no NO_PROXY, requests to 127.0.0.1 and localhost never reach the proxy; idp.test does', async (t) => {
    const port = await jsonServer(t)
    const p = await proxy(t, 'tunnel', port)
    useEnv(t, { HTTP_PROXY: p.url, HTTPS_PROXY: p.url })
    const direct = await httpRequest(`http://127.0.0.1:${port}/.well-known/openid-configuration`)
    assert.deepEqual(readJson(direct, 'x'), { host: `127.0.0.1:${port}` })
    const named = await httpRequest(`http://localhost:${port}/token`, {
      body: new URLSearchParams({ a: '1' }),
    })
    assert.deepEqual(readJson(named, 'x'), { host: `localhost:${port}` })
    assert.equal(p.connections(), 0, 'the proxy saw a loopback request')
    // The same environment sends a non-loopback host through the proxy (tunnelled to the local server).
    const proxied = await httpRequest('http://idp.test/.well-known/openid-configuration')
    assert.deepEqual(readJson(proxied, 'x'), { host: 'idp.test' })
    assert.deepEqual(p.connects, ['idp.test:80'])
  })
})

describe('issue 11 #4: a proxy that refuses or drops CONNECT', () => {
  test('CONNECT answered 403: one connection, ERR_UNAVAILABLE naming the proxy, not retried', async (t) => {
    const p = await proxy(t, 'refuse')
    useEnv(t, { HTTPS_PROXY: p.url })
    const waits: number[] = []
    const started = Date.now()
    await assert.rejects(
      withRetries(
        () => httpRequest('https://idp.test/.well-known/openid-configuration', { timeoutMs: 5000 }),
        {
          sleep: async (ms) => {
            waits.push(ms)
          },
        },
      ),
      (err: unknown) => {
        assert.ok(err instanceof NetworkError)
        assert.equal(err.code, 'ERR_UNAVAILABLE')
        assert.equal(err.retryable, false)
        assert.match(
          err.message,
          new RegExp(
            `^the proxy at 127\\.0\\.0\\.1:${p.port} refused CONNECT \\(403\\) to idp\\.test:443 .*HTTPS_PROXY/NO_PROXY`,
          ),
        )
        return true
      },
    )
    assert.ok(Date.now() - started < 5000, 'failed at once, not at the deadline')
    assert.deepEqual(waits, [], 'a refusal by the proxy is not retried')
    await sleep(200)
    assert.equal(p.connections(), 1)
    assert.deepEqual(p.connects, ['idp.test:443'])
  })

  test('CONNECT dropped without an answer: one connection per request instead of a reconnect loop (nodejs/undici#3897)', async (t) => {
    const p = await proxy(t, 'close')
    useEnv(t, { HTTPS_PROXY: p.url })
    const started = Date.now()
    await assert.rejects(
      within(5000, httpRequest('https://idp.test/x', { timeoutMs: 10_000 })),
      (err: unknown) => {
        assert.ok(err instanceof NetworkError, String(err))
        assert.equal(err.timedOut, false)
        assert.equal(err.retryable, true)
        assert.match(
          err.message,
          new RegExp(`^the proxy at 127\\.0\\.0\\.1:${p.port} closed the connection during CONNECT`),
        )
        return true
      },
    )
    assert.ok(Date.now() - started < 5000, `took ${Date.now() - started} ms`)
    // Nothing goes on in the background either.
    await sleep(300)
    assert.equal(p.connections(), 1)
    // Retried by withRetries: one connection per attempt.
    await assert.rejects(withRetries(() => httpRequest('https://idp.test/x'), { sleep: async () => {} }))
    await sleep(100)
    assert.equal(p.connections(), 4)
  })

  test('CONNECT never answered: the overall deadline holds', async (t) => {
    const p = await proxy(t, 'hang')
    useEnv(t, { HTTPS_PROXY: p.url })
    const started = Date.now()
    await assert.rejects(
      within(5000, httpRequest('https://idp.test/x', { timeoutMs: 300 })),
      (err: unknown) => {
        assert.ok(err instanceof NetworkError)
        assert.equal(err.timedOut, true)
        assert.match(
          err.message,
          /^the identity provider at idp\.test did not answer within 300 ms: check `authority`/,
        )
        return true
      },
    )
    const took = Date.now() - started
    assert.ok(took >= 290, `took ${took} ms`)
    assert.equal(p.connections(), 1)
  })

  test('an unreachable proxy is named by host and port, never with its credentials', async (t) => {
    const dead = createServer()
    const port = await listen(dead)
    await closeServer(dead)
    useEnv(t, { HTTPS_PROXY: `http://edge:pr0xy-s3cret@127.0.0.1:${port}` })
    await assert.rejects(within(5000, httpRequest('https://idp.test/x')), (err: unknown) => {
      assert.ok(err instanceof NetworkError, String(err))
      assert.equal(
        err.message,
        `the proxy at 127.0.0.1:${port} is unreachable (ECONNREFUSED) for the identity provider: check HTTPS_PROXY/NO_PROXY`,
      )
      return true
    })
  })

  test('the deadline and the stop signal hold even when the HTTP client never settles the request', async (t) => {
    // A dispatcher that accepts the request and then never calls its handler, not even on abort:
    // what undici does with a request queued behind a reconnect loop.
    class Stuck extends Dispatcher {
      override dispatch(): boolean {
        return true
      }
    }
    setHttpDispatcher(new Stuck())
    t.after(() => setHttpDispatcher(undefined))
    await assert.rejects(within(5000, httpRequest('https://idp.test/x', { timeoutMs: 200 })), {
      code: 'ERR_UNAVAILABLE',
      message: /did not answer within 200 ms/,
    })
    await assert.rejects(
      within(
        1500,
        httpRequest('https://idp.test/x', { timeoutMs: 60_000, signal: AbortSignal.timeout(100) }),
      ),
      { code: 'ERR_CANCELLED' },
    )
  })
})

describe('issue 11 #4: edgetoken login through a proxy that refuses CONNECT', () => {
  const root = mkdtempSync(join(tmpdir(), 'edgetoken-proxy-'))
  after(() => rmSync(root, { recursive: true, force: true }))

  function login(p: TestProxy) {
    const device = newTestDevice(root, { issuer: 'https://idp.test' })
    return spawnCli(['login', '--json'], { env: { ...device.env, HTTPS_PROXY: p.url } })
  }

  test('403 to CONNECT: exit 5 at once with a message naming the proxy, one connection', async (t) => {
    const p = await proxy(t, 'refuse')
    const done = collect(login(p), { timeoutMs: 30_000 })
    await firstConnection(p)
    const asked = Date.now()
    const result = await done
    assert.equal(result.code, 5, result.stderr)
    // Within the 10 s request deadline (it takes milliseconds when the machine is idle): the
    // refusal is final, neither waited out nor retried.
    assert.ok(Date.now() - asked < 10_000, `exited ${Date.now() - asked} ms after the proxy refused`)
    assert.match(
      result.stderr,
      new RegExp(`^edgetoken: the proxy at 127\\.0\\.0\\.1:${p.port} refused CONNECT \\(403\\)`),
    )
    const events = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { event: string; code?: string })
    assert.deepEqual(events.at(-1)?.code, 'unavailable')
    assert.equal(p.connections(), 1)
  })

  test('CONNECT dropped: a bounded number of connections, and one SIGTERM ends login within 2 s (exit 4)', async (t) => {
    const p = await proxy(t, 'close')
    const child = login(p)
    const done = collect(child, { timeoutMs: 30_000 })
    await firstConnection(p)
    const signalled = Date.now()
    child.kill('SIGTERM')
    const result = await done
    const took = Date.now() - signalled
    assert.equal(result.signal, null, 'the first SIGTERM was not handled')
    assert.equal(result.code, 4, result.stderr)
    // Well under a second on an idle machine; the bound leaves room for a loaded one, and stays far
    // below the 15 s after which the process would be ended anyway (exit 130, not 4).
    assert.ok(took < 5000, `exited ${took} ms after SIGTERM`)
    // At most the three attempts of discovery, however long it ran.
    assert.ok(p.connections() <= 3, `${p.connections()} connections to the proxy`)
  })
})
