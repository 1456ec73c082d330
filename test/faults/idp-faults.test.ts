/**
 * Issue 16: the IdP failing the way real networks fail, against real loopback servers (a
 * `node:net`/`node:tls` fault server, see test/support/fault-server.ts) and the CLI as a child
 * process: an IdP that never answers, one that resets the connection mid-body, a name that does
 * not resolve, and a certificate nobody trusts. Each ends in exit 5 with one line naming the host
 * and what to check, within the deadline, with the stored sign-in intact.
 *
 * Nothing leaves the machine: the DNS case resolves nothing at all (test/support/no-dns.mjs).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type CliResult, newTestDevice, runCli, seedCachedToken, type TestDevice } from '../support/cli.js'
import { type FaultServer, type FaultServerOptions, startFaultServer } from '../support/fault-server.js'
import { createTestPki } from '../support/tls.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-idp-faults-'))
after(() => rmSync(root, { recursive: true, force: true }))

const NO_DNS = fileURLToPath(new URL('../support/no-dns.mjs', import.meta.url))
const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const TOKEN_RESPONSE = {
  access_token: 'at-from-fault-server',
  token_type: 'Bearer',
  expires_in: 3600,
  refresh_token: 'rt-rotated',
}

/** A signed-in device whose authority is `issuer` (its access token already stale). */
async function deviceFor(issuer: string): Promise<TestDevice> {
  const device = newTestDevice(root, { issuer, scopes: SCOPES })
  await seedCachedToken(device, { lifetimeMs: 60_000, ageMs: 120_000 })
  return device
}

async function server(t: { after: (fn: () => unknown) => void }, options: FaultServerOptions) {
  const s = await startFaultServer(options)
  t.after(() => s.close())
  return s
}

/** One line on stderr, `edgetoken: …`, no stack trace, nothing secret. */
function assertOneLine(r: CliResult): string {
  const lines = r.stderr.trim().split('\n')
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`)
  const line = lines[0] ?? ''
  assert.doesNotMatch(line, /\n\s+at |Error:|rt-rotated|at-from-fault-server/)
  return line
}

async function stillSignedIn(device: TestDevice): Promise<void> {
  const r = await runCli(['status', '--json'], { env: device.env })
  assert.equal(r.code, 0, r.stderr)
  assert.equal(JSON.parse(r.stdout).signed_in, true, 'the refresh token is kept')
}

function tokenRequests(s: FaultServer): number {
  return s.requests.filter((r) => r.method === 'POST' && r.path === '/token').length
}

function discoveries(s: FaultServer): number {
  return s.requests.filter((r) => r.path === '/.well-known/openid-configuration').length
}

test('issue 16: an IdP that never answers: token gives up at the 10 s request deadline, exit 5, one line', async (t) => {
  const idp = await server(t, { route: (r) => (r.path === '/token' ? 'hang' : undefined) })
  const device = await deviceFor(idp.issuer)

  const r = await runCli(['token', '--force-refresh'], { env: device.env, timeoutMs: 28_000 })
  assert.equal(r.code, 5, r.stderr)
  assert.equal(r.stdout, '')
  const line = assertOneLine(r)
  assert.match(
    line,
    new RegExp(`the identity provider at 127\\.0\\.0\\.1:${idp.port} did not answer within 10 s`),
  )
  assert.match(line, /check `authority`/)
  // The deadline covers the whole request; process start-up on a loaded machine adds a few seconds.
  assert.ok(r.durationMs >= 10_000 && r.durationMs < 26_000, `took ${r.durationMs} ms`)
  assert.equal(tokenRequests(idp), 1, 'a refresh is sent once per run (a retry could spend a rotated token)')
  await stillSignedIn(device)
})

test('issue 16: an IdP that resets mid-body: discovery is retried 3 times (1 s, 2 s apart), then exit 5', async (t) => {
  const idp = await server(t, {
    route: (r) =>
      r.path === '/.well-known/openid-configuration'
        ? { status: 200, resetMidBody: { issuer: 'x'.repeat(400) } }
        : undefined,
  })
  const device = await deviceFor(idp.issuer)

  const r = await runCli(['token', '--force-refresh'], { env: device.env, timeoutMs: 25_000 })
  assert.equal(r.code, 5, r.stderr)
  const line = assertOneLine(r)
  assert.match(line, new RegExp(`the identity provider at 127\\.0\\.0\\.1:${idp.port} `))
  assert.match(line, /closed the connection before answering in full \(UND_ERR_[A-Z_]+\)/)
  assert.equal(discoveries(idp), 3, 'retried per policy: 3 attempts')
  const [a, b, c] = idp.requests.map((q) => q.at)
  assert.ok(a !== undefined && b !== undefined && c !== undefined)
  assert.ok(b - a >= 900 && c - b >= 1900, `waits ${b - a} ms and ${c - b} ms`)
  assert.equal(tokenRequests(idp), 0)
  await stillSignedIn(device)
})

test('issue 16: a token answer reset mid-body is a network failure: exit 5, the sign-in kept', async (t) => {
  const idp = await server(t, {
    route: (r) => (r.path === '/token' ? { status: 200, resetMidBody: TOKEN_RESPONSE } : undefined),
  })
  const device = await deviceFor(idp.issuer)

  const r = await runCli(['token', '--force-refresh', '--json'], { env: device.env, timeoutMs: 25_000 })
  assert.equal(r.code, 5, r.stderr)
  const event = JSON.parse(r.stdout)
  assert.equal(event.event, 'error')
  assert.equal(event.code, 'unavailable')
  assert.match(
    event.message,
    new RegExp(
      `^the identity provider at 127\\.0\\.0\\.1:${idp.port} closed the connection before answering in full \\(UND_ERR_RES_CONTENT_LENGTH_MISMATCH\\): check \`authority\``,
    ),
  )
  assert.equal(tokenRequests(idp), 1)
  await stillSignedIn(device)
})

test('issue 16: an authority whose name does not resolve (RFC 2606 .invalid): exit 5 naming the host, no traffic off the machine', async () => {
  const dnsLog = join(mkdtempSync(join(root, 'dns-')), 'lookups')
  const device = await deviceFor('https://idp.invalid')
  const env = { ...device.env, EDGETOKEN_TEST_DNS_LOG: dnsLog }

  for (const args of [
    ['token', '--force-refresh'],
    ['login', '--display', 'console'],
  ]) {
    const r = await runCli(args, { env, nodeArgs: ['--import', NO_DNS], timeoutMs: 25_000 })
    assert.equal(r.code, 5, `${args[0]}: ${r.stderr}`)
    const line = assertOneLine(r)
    assert.match(line, /the identity provider at idp\.invalid is unreachable \(ENOTFOUND\)/)
    assert.match(line, /check `authority` in the config, the network and DNS/)
  }
  // Three discovery attempts per command, each a lookup that the hook answered locally.
  const lookups = existsSync(dnsLog) ? readFileSync(dnsLog, 'utf8').trim().split('\n') : []
  assert.ok(lookups.length >= 6, `lookups: ${lookups.join(',')}`)
  assert.ok(lookups.every((h) => h === 'idp.invalid'))
})

test('issue 16: an IdP with a certificate from a private CA: exit 5 naming the host and NODE_EXTRA_CA_CERTS, which then fixes it', async (t) => {
  const pki = await createTestPki({ dir: mkdtempSync(join(root, 'pki-')) })
  const idp = await server(t, {
    tls: { cert: readFileSync(pki.serverCertFile), key: readFileSync(pki.serverKeyFile) },
    route: (r) => (r.path === '/token' ? { status: 200, json: TOKEN_RESPONSE } : undefined),
  })
  const device = await deviceFor(idp.issuer)

  const refused = await runCli(['token', '--force-refresh'], { env: device.env, timeoutMs: 25_000 })
  assert.equal(refused.code, 5, refused.stderr)
  const line = assertOneLine(refused)
  assert.match(
    line,
    new RegExp(`the identity provider at 127\\.0\\.0\\.1:${idp.port} presented a certificate`),
  )
  assert.match(line, /\(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/)
  assert.match(line, /to trust a private CA, set NODE_EXTRA_CA_CERTS to its PEM file/)
  assert.equal(idp.connections(), 1, 'a refused certificate is not retried')
  assert.equal(idp.requests.length, 0)

  const trusted = await runCli(['token', '--force-refresh'], {
    env: { ...device.env, NODE_EXTRA_CA_CERTS: pki.caFile },
    timeoutMs: 25_000,
  })
  assert.equal(trusted.code, 0, trusted.stderr)
  assert.equal(trusted.stdout.trim(), TOKEN_RESPONSE.access_token)
})

test('issue 16: a self-signed IdP certificate: exit 5 naming the host; trusting that certificate fixes it', async (t) => {
  const dir = mkdtempSync(join(root, 'self-signed-'))
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'].concat([
      '-keyout',
      'key.pem',
      '-out',
      'cert.pem',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]),
    { cwd: dir, stdio: 'ignore' },
  )
  const cert = readFileSync(join(dir, 'cert.pem'))
  const idp = await server(t, {
    tls: { cert, key: readFileSync(join(dir, 'key.pem')) },
    route: (r) => (r.path === '/token' ? { status: 200, json: TOKEN_RESPONSE } : undefined),
  })
  const device = await deviceFor(idp.issuer)

  const refused = await runCli(['login', '--display', 'console'], { env: device.env, timeoutMs: 25_000 })
  assert.equal(refused.code, 5, refused.stderr)
  const line = assertOneLine(refused)
  assert.match(
    line,
    new RegExp(
      `127\\.0\\.0\\.1:${idp.port} presented a certificate that was refused \\(DEPTH_ZERO_SELF_SIGNED_CERT\\)`,
    ),
  )
  assert.match(line, /NODE_EXTRA_CA_CERTS/)
  assert.equal(idp.connections(), 1, 'not retried')

  const trusted = await runCli(['token', '--force-refresh'], {
    env: { ...device.env, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') },
    timeoutMs: 25_000,
  })
  assert.equal(trusted.code, 0, trusted.stderr)
  assert.equal(cert.length > 0, true)
})
