/**
 * `edgetoken doctor` (issue 15) against the real test IdP (oidc-provider), Debian mosquitto
 * (plain, and TLS with a password) and the reference API, each also down or misconfigured: the
 * right check fails with the right fix, and nothing else does.
 */
import assert from 'node:assert/strict'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { BUILD_TIME_MS } from '../../src/agent/clock.js'
import { checkClockAgainst, noProxyMatches } from '../../src/cli/doctor/local.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { newTestDevice, runMain } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { freePort, startBroker, type TestBroker } from '../support/mosquitto.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-doctor-'))
after(() => rmSync(root, { recursive: true, force: true }))

interface Check {
  event: string
  check: string
  status: 'ok' | 'warn' | 'fail'
  message: string
  fix?: string
}

async function doctor(
  env: Record<string, string>,
): Promise<{ code: number; checks: Map<string, Check>; out: string; err: string }> {
  const r = await runMain(['doctor', '--json'], env)
  const checks = new Map<string, Check>()
  for (const line of r.out.split('\n').filter((l) => l.length > 0)) {
    const c = JSON.parse(line) as Check
    assert.equal(c.event, 'check')
    checks.set(c.check, c)
  }
  return { ...r, checks }
}

/** Asserts that exactly the named checks failed. */
function onlyFailed(checks: Map<string, Check>, names: string[]): void {
  const failed = [...checks.values()].filter((c) => c.status === 'fail').map((c) => c.check)
  assert.deepEqual(failed.sort(), [...names].sort(), JSON.stringify([...checks.values()], null, 1))
}

describe('edgetoken doctor', () => {
  let idp: TestIdp
  let api: TestApi
  let plain: TestBroker
  let secure: TestBroker
  let closedPort: number
  before(async () => {
    idp = await startTestIdp()
    ;[api, plain, secure, closedPort] = await Promise.all([
      startTestApi({ issuer: idp.issuer, audience: idp.audience }),
      startBroker(),
      startBroker({ tls: true, username: 'gw', password: 'correct-horse-battery' }),
      freePort(),
    ])
  })
  after(async () => {
    await Promise.all([api?.close(), plain?.close(), secure?.close()])
    await idp?.close()
  })

  function env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      ...newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId }).env,
      EDGETOKEN_TELEMETRY_ENDPOINT: api.url,
      EDGETOKEN_MQTT_URL: plain.url,
      ...extra,
    }
  }

  function tlsEnv(password: string, extra: Record<string, string> = {}): Record<string, string> {
    const passwordFile = join(mkdtempSync(join(root, 'pw-')), 'mqtt-password')
    writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 })
    return env({
      EDGETOKEN_MQTT_URL: secure.url,
      EDGETOKEN_MQTT_CA_FILE: secure.tls?.caFile ?? '',
      EDGETOKEN_MQTT_USERNAME: 'gw',
      EDGETOKEN_MQTT_PASSWORD_FILE: passwordFile,
      ...extra,
    })
  }

  test('issue 15: everything up: every check ok, exit 0, in the documented order', async () => {
    const r = await doctor(env())
    assert.equal(r.code, 0, r.out)
    assert.deepEqual(
      [...r.checks.keys()],
      ['config', 'clock', 'key', 'state_dir', 'idp', 'broker', 'telemetry', 'proxy'],
    )
    onlyFailed(r.checks, [])
    assert.match(
      r.checks.get('idp')?.message ?? '',
      /device authorization endpoint answer \(grant device_code\)/,
    )
    assert.match(
      r.checks.get('broker')?.message ?? '',
      /accepted the connection \(MQTT 5, no TLS, anonymous\)/,
    )
    assert.match(r.checks.get('telemetry')?.message ?? '', /asks for a bearer token \(401\)/)
    assert.match(r.checks.get('clock')?.message ?? '', /within \d+ s of the servers/)
    // No token was asked for, and the API saw no Authorization header.
    assert.equal(idp.issued.accessTokens.length, 0)
    assert.ok(api.requests.length > 0 && api.requests.every((q) => !q.authorization))
    const text = await runMain(['doctor'], env())
    assert.equal(text.code, 0)
    assert.match(text.out, /^ok {4}config {5}/m)
  })

  test('issue 15: mosquitto with TLS and a password: ok with the CA and the right password', async () => {
    const r = await doctor(tlsEnv('correct-horse-battery'))
    assert.equal(r.code, 0, r.out)
    assert.match(r.checks.get('broker')?.message ?? '', /TLS verified, with the configured credentials/)
    assert.ok(!r.out.includes('correct-horse-battery') && !r.err.includes('correct-horse-battery'))
  })

  test('issue 15: a wrong broker password fails the broker check with the credentials fix', async () => {
    const r = await doctor(tlsEnv('wrong-password'))
    assert.equal(r.code, 5)
    onlyFailed(r.checks, ['broker'])
    const broker = r.checks.get('broker')
    assert.match(
      broker?.message ?? '',
      /refused the (user name or password|connection: not authorized) \(CONNACK (4|5|134|135)\)/,
    )
    assert.match(broker?.fix ?? '', /mqtt\.passwordFile/)
    assert.ok(!r.out.includes('wrong-password'))
  })

  test('issue 15: a TLS broker whose CA is not configured fails with the mqtt.caFile fix', async () => {
    const e = tlsEnv('correct-horse-battery')
    delete e.EDGETOKEN_MQTT_CA_FILE
    const r = await doctor(e)
    onlyFailed(r.checks, ['broker'])
    assert.match(r.checks.get('broker')?.message ?? '', /certificate is not trusted/)
    assert.match(r.checks.get('broker')?.fix ?? '', /edgetoken config set mqtt\.caFile/)
  })

  test('issue 15: a broker that is down fails with the start-the-broker fix', async () => {
    const r = await doctor(env({ EDGETOKEN_MQTT_URL: `mqtt://127.0.0.1:${closedPort}` }))
    assert.equal(r.code, 5)
    onlyFailed(r.checks, ['broker'])
    assert.match(r.checks.get('broker')?.message ?? '', /nothing listens .* \(ECONNREFUSED\)/)
    assert.match(r.checks.get('broker')?.fix ?? '', /start the broker/)
  })

  test('issue 15: an IdP that is down, or an authority that is not the issuer, fails the idp check', async () => {
    const down = await doctor(env({ EDGETOKEN_AUTHORITY: `http://127.0.0.1:${closedPort}` }))
    assert.equal(down.code, 5)
    onlyFailed(down.checks, ['idp'])
    assert.match(
      down.checks.get('idp')?.message ?? '',
      /identity provider at 127\.0\.0\.1:\d+ is unreachable \(ECONNREFUSED\)/,
    )
    assert.match(down.checks.get('idp')?.fix ?? '', /IdP is up and reachable/)

    const wrong = await doctor(env({ EDGETOKEN_AUTHORITY: `${idp.issuer}/tenant-b` }))
    onlyFailed(wrong.checks, ['idp'])
    assert.match(wrong.checks.get('idp')?.message ?? '', /discovery at .* answered 404/)
    assert.match(wrong.checks.get('idp')?.fix ?? '', /authority is the issuer URL/)
  })

  test('issue 15: the API down, at a wrong path, or behind a captive portal fails the telemetry check', async () => {
    const wrongPath = await doctor(env({ EDGETOKEN_TELEMETRY_ENDPOINT: api.url.replace('/ingest', '/nope') }))
    onlyFailed(wrongPath.checks, ['telemetry'])
    assert.match(wrongPath.checks.get('telemetry')?.message ?? '', /answered 404: no ingest route/)
    assert.match(wrongPath.checks.get('telemetry')?.fix ?? '', /config set telemetry\.endpoint/)

    await api.setMode('captive-portal')
    try {
      const portal = await doctor(env())
      onlyFailed(portal.checks, ['telemetry'])
      assert.match(portal.checks.get('telemetry')?.message ?? '', /HTML page .*captive portal/)
    } finally {
      await api.setMode('up')
    }
    await api.setMode('down')
    try {
      const down = await doctor(env())
      assert.equal(down.code, 5)
      onlyFailed(down.checks, ['telemetry'])
      assert.match(down.checks.get('telemetry')?.message ?? '', /telemetry API at .* is unreachable/)
    } finally {
      await api.setMode('up')
    }
  })

  test("issue 15: an invalid config fails the config check in the loader's words, exit 2", async () => {
    const r = await doctor(env({ EDGETOKEN_MQTT_URL: 'http://broker' }))
    assert.equal(r.code, 2)
    assert.deepEqual([...r.checks.keys()], ['config', 'clock'])
    assert.equal(
      r.checks.get('config')?.message,
      'config: EDGETOKEN_MQTT_URL must be an mqtt:// or mqtts:// URL',
    )
    assert.match(r.checks.get('config')?.fix ?? '', /edgetoken config set/)
  })

  test('issue 15: a key file open to others, and a shared state dir, fail the local checks with chmod fixes (exit 2)', async () => {
    const e = env()
    chmodSync(e.EDGETOKEN_KEY_FILE as string, 0o644)
    const shared = mkdtempSync(join(root, 'shared-'))
    chmodSync(shared, 0o777)
    e.EDGETOKEN_STATE_DIR = shared
    const r = await doctor(e)
    assert.equal(r.code, 2)
    onlyFailed(r.checks, ['key', 'state_dir'])
    assert.equal(r.checks.get('key')?.fix, `chmod 600 ${e.EDGETOKEN_KEY_FILE}`)
    assert.equal(r.checks.get('state_dir')?.fix, `chmod 700 ${shared}`)
    const missing = await doctor(env({ EDGETOKEN_KEY_FILE: join(root, 'no-such-key') }))
    onlyFailed(missing.checks, ['key'])
    assert.match(missing.checks.get('key')?.message ?? '', /cannot be used \(ENOENT\)/)
  })

  test('issue 15: client_credentials: the credential files are checked, and the IdP is asked for no device endpoint', async () => {
    const secretFile = join(mkdtempSync(join(root, 'cc-')), 'secret')
    writeFileSync(secretFile, 'not-sent-anywhere\n', { mode: 0o644 })
    const r = await doctor(
      env({ EDGETOKEN_GRANT: 'client_credentials', EDGETOKEN_CLIENT_SECRET_FILE: secretFile }),
    )
    assert.equal(r.code, 0, r.out)
    assert.equal(r.checks.get('credential')?.status, 'warn')
    assert.equal(r.checks.get('credential')?.fix, `chmod 600 ${secretFile}`)
    assert.match(
      r.checks.get('idp')?.message ?? '',
      /discovery, token endpoint answer \(grant client_credentials\)/,
    )
    assert.ok(!r.out.includes('not-sent-anywhere'))
  })

  test('issue 15: the clock check fails before the build date and beyond 300 s of the servers (RFC 9110 §6.6.1 Date)', () => {
    assert.equal(checkClockAgainst([], BUILD_TIME_MS - 1).status, 'fail')
    const now = Date.parse('2027-03-01T12:00:00Z')
    assert.equal(checkClockAgainst(['Mon, 01 Mar 2027 12:00:03 GMT'], now).status, 'ok')
    assert.equal(checkClockAgainst(['Mon, 01 Mar 2027 11:58:00 GMT'], now).status, 'warn')
    const far = checkClockAgainst(['Mon, 01 Mar 2027 11:50:00 GMT'], now)
    assert.equal(far.status, 'fail')
    assert.match(far.message, /600 s ahead of the servers/)
    // One server with a wrong clock does not blame ours.
    assert.equal(
      checkClockAgainst(['Mon, 01 Mar 2027 11:00:00 GMT', 'Mon, 01 Mar 2027 12:00:01 GMT'], now).status,
      'ok',
    )
  })

  test('issue 15: proxy settings in effect: NO_PROXY entries as undici reads them, never the credentials', async () => {
    assert.ok(noProxyMatches('example.com', new URL('https://idp.example.com/')))
    assert.ok(noProxyMatches('.example.com:443', new URL('https://idp.example.com/')))
    assert.ok(!noProxyMatches('example.com:8443', new URL('https://idp.example.com/')))
    assert.ok(noProxyMatches('*', new URL('https://x.test/')))
    assert.ok(!noProxyMatches('ample.com', new URL('https://example.com/')))
    const r = await doctor(env({ HTTPS_PROXY: 'http://user:pa55@proxy.invalid:3128' }))
    assert.match(r.checks.get('proxy')?.message ?? '', /IdP 127\.0\.0\.1:\d+ direct \(loopback\)/)
    assert.ok(!r.out.includes('pa55'))
  })
})
