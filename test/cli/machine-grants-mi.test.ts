/**
 * Issue 12: `grant` `managed_identity` from the CLI: the instance metadata service (pointed at
 * loopback; 169.254.169.254 is never contacted) and Azure Arc with Microsoft's challenge
 * directory; and the configuration errors of the machine grants.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { startArcImds } from '../support/arc-imds.js'
import { newTestDevice } from '../support/cli.js'
import { events, machineFixture } from './machine-grants-fixture.js'

const ARC_DIRECTORY = '/var/opt/azcmagent/tokens'

describe('edgetoken under managed_identity (issue 12)', () => {
  const f = machineFixture()

  test('issue 12: managed_identity (IMDS): no authority or clientId; login, token, status; account = the oid', async () => {
    const device = newTestDevice(f.root, {
      issuer: f.idp.issuer,
      extra: {
        EDGETOKEN_GRANT: 'managed_identity',
        EDGETOKEN_MANAGED_IDENTITY_RESOURCE: f.idp.audience,
        AZURE_POD_IDENTITY_AUTHORITY_HOST: f.imds.baseUrl,
      },
    })
    const env = {
      EDGETOKEN_AUTHORITY: undefined,
      EDGETOKEN_CLIENT_ID: undefined,
      EDGETOKEN_SCOPES: undefined,
    }
    const login = await f.cli(device, ['login', '--json'], env)
    assert.equal(login.code, 0, login.stderr)
    assert.deepEqual(events(login.stdout), [{ event: 'signed_in', account: { id: 'mi-object-id' } }])
    const token = await f.cli(device, ['token', '--json'], env)
    assert.equal(token.code, 0, token.stderr)
    const out = JSON.parse(token.stdout) as Record<string, string>
    assert.equal(out.access_token, f.imds.issued.at(-1))
    assert.equal(out.scope, f.idp.audience)
    assert.equal(f.imds.requests.at(-1)?.metadata, 'true')
    const status = await f.cli(device, ['status', '--json'], env)
    assert.equal(status.code, 0, status.stderr)
    // A config without the resource is refused, naming the key.
    const bad = await f.cli(device, ['token'], { ...env, EDGETOKEN_MANAGED_IDENTITY_RESOURCE: undefined })
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /managedIdentity\.resource is not set/)
  })

  test('issue 12: Azure Arc from the CLI: the challenge file in /var/opt/azcmagent/tokens; a file elsewhere is exit 5, unread', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to create /var/opt/azcmagent/tokens')
    if (existsSync('/var/opt/azcmagent'))
      return t.skip('an Azure Arc agent directory exists here: not touched')
    mkdirSync(ARC_DIRECTORY, { recursive: true, mode: 0o750 })
    const arc = await startArcImds({ mode: 'arc', tokenDirectory: ARC_DIRECTORY })
    try {
      const device = newTestDevice(f.root, {
        issuer: f.idp.issuer,
        extra: {
          EDGETOKEN_GRANT: 'managed_identity',
          EDGETOKEN_MANAGED_IDENTITY_RESOURCE: 'api://telemetry',
          IDENTITY_ENDPOINT: arc.tokenUrl,
          IMDS_ENDPOINT: 'http://127.0.0.1:1',
        },
      })
      const token = await f.cli(device, ['token'])
      assert.equal(token.code, 0, token.stderr)
      assert.equal(token.stdout.trim(), arc.issued.at(-1))
      const outside = join(f.root, 'stolen.key')
      writeFileSync(outside, 'root-only-secret-zzzz')
      arc.setRealm(() => outside)
      const refused = await f.cli(device, ['token', '--force-refresh', '--json'])
      assert.equal(refused.code, 5, refused.stderr)
      assert.match(refused.stderr, /outside \/var\/opt\/azcmagent\/tokens\/: refused without reading it/)
      assert.ok(!arc.requests.some((r) => r.authorization?.includes('root-only-secret')))
    } finally {
      await arc.close()
      rmSync('/var/opt/azcmagent', { recursive: true, force: true })
    }
  })

  test('issue 12: config: a grant without its credential, or two credentials, is exit 2 naming the key', async () => {
    const none = f.secretDevice({ EDGETOKEN_CLIENT_SECRET_FILE: '' })
    const r1 = await f.cli(none, ['token'])
    assert.equal(r1.code, 2)
    assert.match(r1.stderr, /client_credentials but no clientCredential is set/)
    const both = f.secretDevice({ EDGETOKEN_CLIENT_ASSERTION_FILE: join(f.pki, 'jwt') })
    const r2 = await f.cli(both, ['token'])
    assert.equal(r2.code, 2)
    assert.match(r2.stderr, /keep one credential/)
    const stray = newTestDevice(f.root, {
      issuer: f.idp.issuer,
      extra: { EDGETOKEN_CLIENT_SECRET_FILE: f.secretFile },
    })
    const r3 = await f.cli(stray, ['token'])
    assert.equal(r3.code, 2)
    assert.match(r3.stderr, /EDGETOKEN_CLIENT_SECRET_FILE is set, but grant is not client_credentials/)
  })

  test("issue 12: no secret, private key, passphrase or token in any stdout/stderr but token's stdout", () => {
    f.assertNoLeaks()
  })
})
