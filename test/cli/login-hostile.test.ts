/**
 * `edgetoken login --json` against a hostile or broken device authorization endpoint: the CLI as a
 * child process, a small loopback `node:http` IdP (discovery + device endpoint) answering one bad
 * response per test. Every case must end with the contract's exit code and NDJSON `error` event,
 * no `device_code` event, and the device_code the server planted never printed anywhere.
 *
 * @see ../shared/CONTRACT.md "Exit codes"
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { type CliResult, newTestDevice, runCli } from '../support/cli.js'
import { closeServer, listen } from '../support/net.js'

const PLANTED = 'PLANTED-device-code-4f1c9e7a0b2d'
const JSON_TYPE = { 'content-type': 'application/json' }

/** What the device authorization endpoint answers in one test. */
type Answer = (res: ServerResponse) => void

const good = (extra: Record<string, unknown> = {}) => ({
  device_code: PLANTED,
  user_code: 'WDJB-MJHT',
  verification_uri: 'https://idp.example/device',
  expires_in: 600,
  interval: 5,
  ...extra,
})

const json =
  (status: number, body: unknown): Answer =>
  (res) =>
    res.writeHead(status, JSON_TYPE).end(JSON.stringify(body))

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-hostile-'))
after(() => rmSync(root, { recursive: true, force: true }))

function deviceEnv(issuer: string): Record<string, string> {
  return newTestDevice(root, { issuer }).env
}

function ndjson(result: CliResult): Record<string, unknown>[] {
  return result.stdout
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>
      } catch {
        throw new Error(`stdout line is not JSON: ${line}\nstderr: ${result.stderr}`)
      }
    })
}

describe('edgetoken login --json: hostile device authorization responses', () => {
  let issuer = ''
  let answer: Answer = json(200, good())
  let deviceRequests = 0
  let tokenRequests = 0
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    req.resume()
    if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
      return json(200, {
        issuer,
        token_endpoint: `${issuer}/token`,
        device_authorization_endpoint: `${issuer}/device/auth`,
        jwks_uri: `${issuer}/jwks`,
      })(res)
    }
    if (req.method === 'POST' && path === '/device/auth') {
      deviceRequests += 1
      return answer(res)
    }
    if (path === '/token') tokenRequests += 1
    res.writeHead(404, JSON_TYPE).end('{"error":"not_found"}')
  })
  before(async () => {
    issuer = `http://127.0.0.1:${await listen(server)}`
  })
  after(() => closeServer(server))

  const cases: [name: string, answer: Answer, exit: number, code: string][] = [
    [
      'RFC 8628 §3.2 interval 0 (busy polling) is refused',
      json(200, good({ interval: 0 })),
      5,
      'unavailable',
    ],
    [
      'RFC 8628 §3.2 a missing user_code is refused',
      json(200, good({ user_code: undefined })),
      5,
      'unavailable',
    ],
    [
      'a javascript: verification_uri is refused',
      json(200, good({ verification_uri: 'javascript:alert(1)' })),
      5,
      'unavailable',
    ],
    [
      'a 10 MB body is cut at the size cap',
      (res) => {
        res.writeHead(200, JSON_TYPE)
        res.write(JSON.stringify(good()).slice(0, -1))
        res.write(`,"pad":"${' '.repeat(10 * 1024 * 1024)}`)
        res.end('"}')
      },
      5,
      'unavailable',
    ],
    [
      'an HTML page (captive portal) is refused as such',
      (res) =>
        res
          .writeHead(200, { 'content-type': 'text/html' })
          .end(`<!doctype html><html><body>Hotel Wi-Fi ${PLANTED}</body></html>`),
      5,
      'unavailable',
    ],
    [
      'RFC 6749 §5.2 invalid_client is a configuration error',
      json(401, { error: 'invalid_client', error_description: 'unknown client', device_code: PLANTED }),
      2,
      'config',
    ],
  ]

  for (const [name, reply, exit, code] of cases) {
    test(`${name}: exit ${exit}, error ${code}, no device_code event, planted code never printed`, async () => {
      answer = reply
      const requestsBefore = deviceRequests
      const tokensBefore = tokenRequests
      const result = await runCli(['login', '--json', '--display', 'console,qr'], {
        env: deviceEnv(issuer),
        timeoutMs: 60_000,
      })
      assert.equal(result.code, exit, result.stderr)
      const events = ndjson(result)
      assert.deepEqual(
        events.map((e) => e.event),
        ['error'],
      )
      assert.equal(events[0]?.code, code)
      assert.equal(typeof events[0]?.message, 'string')
      assert.ok(!result.stdout.includes(PLANTED), 'the planted device_code is not on stdout')
      assert.ok(!result.stderr.includes(PLANTED), 'the planted device_code is not on stderr')
      // One request, not retried (none of these is "unavailable"), and never a poll.
      assert.equal(deviceRequests - requestsBefore, 1)
      assert.equal(tokenRequests - tokensBefore, 0)
    })
  }

  test('invalid_client keeps the server error in the one-line message', async () => {
    answer = json(401, { error: 'invalid_client', error_description: 'AADSTS700016: application not found' })
    const result = await runCli(['login', '--json'], { env: deviceEnv(issuer), timeoutMs: 60_000 })
    assert.equal(result.code, 2, result.stderr)
    const [event] = ndjson(result)
    assert.equal(event?.code, 'config')
    assert.match(String(event?.message), /invalid_client: AADSTS700016: application not found/)
  })
})
