/**
 * ManagedIdentityClient against a real node:http endpoint that behaves as Microsoft documents
 * (test/support/arc-imds.ts): the instance metadata service (pointed at loopback with
 * AZURE_POD_IDENTITY_AUTHORITY_HOST; 169.254.169.254 is never contacted) and the Azure Arc
 * challenge flow, with the checks on the challenge file (issue 12).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { ManagedIdentityClient } from '../../src/client/managed-identity-client.js'
import { ConfigError, EdgeTokenError, OAuthServerError } from '../../src/errors.js'
import { basicRealm, readArcChallengeFile } from '../../src/identity/managed-identity-arc.js'
import * as edgetoken from '../../src/index.js'
import { proxyFor } from '../../src/lib/http/http-agent.js'
import { type ArcImdsServer, startArcImds } from '../support/arc-imds.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-mi-'))
after(() => rmSync(root, { recursive: true, force: true }))
const noSleep = async () => {}

describe('ManagedIdentityClient: Azure instance metadata service', () => {
  let imds: ArcImdsServer
  before(async () => {
    imds = await startArcImds({ mode: 'imds', lifetimeSeconds: 7200 })
  })
  after(() => imds.close())
  const env = () => ({ AZURE_POD_IDENTITY_AUTHORITY_HOST: imds.baseUrl })

  test('issue 12: GET with Metadata: true, api-version, resource and client_id; expires_in/expires_on strings', async () => {
    const start = Date.now()
    const mi = new ManagedIdentityClient({ env: env(), clientId: 'user-assigned-1' })
    assert.equal(mi.source, 'imds')
    const tokens = await mi.acquireTokenForClient({ resource: 'https://management.azure.com/.default' })
    const req = imds.requests.at(-1)
    assert.equal(req?.metadata, 'true')
    assert.equal(req?.query.get('api-version'), '2018-02-01')
    assert.equal(req?.query.get('resource'), 'https://management.azure.com')
    assert.equal(req?.query.get('client_id'), 'user-assigned-1')
    assert.equal(tokens.accessToken, imds.issued.at(-1))
    assert.deepEqual(tokens.scopes, ['https://management.azure.com'])
    assert.ok(Math.abs(tokens.expiresAt - (start + 7200_000)) < 5000)
    // MSAL: a token of two hours or more is renewed at half its life.
    assert.equal(tokens.refreshInSeconds, 3600)
    // Cached per resource.
    const again = await mi.acquireTokenForClient({ resource: 'https://management.azure.com' })
    assert.equal(again, tokens)
    assert.equal(imds.requests.length, 1)
  })

  test("issue 12: 429 with Retry-After and 5xx are retried (the wait is the server's)", async () => {
    const waits: number[] = []
    const mi = new ManagedIdentityClient({
      env: env(),
      sleep: async (ms) => {
        waits.push(ms)
      },
    })
    imds.failNext(2, 429, 3)
    const tokens = await mi.acquireTokenForClient({ resource: 'api://telemetry' })
    assert.equal(tokens.accessToken, imds.issued.at(-1))
    assert.deepEqual(waits, [3000, 3000])
    imds.failNext(3, 503)
    await assert.rejects(
      mi.acquireTokenForClient({ resource: 'api://other', forceRefresh: true }),
      (err: unknown) => err instanceof EdgeTokenError && err.code === 'ERR_UNAVAILABLE',
    )
  })

  test("an unknown identity is a config error naming IMDS's answer; not retried", async () => {
    imds.setIdentityGone(true)
    const before = imds.requests.length
    try {
      const mi = new ManagedIdentityClient({ env: env(), sleep: noSleep })
      await assert.rejects(
        mi.acquireTokenForClient({ resource: 'api://telemetry' }),
        (err: unknown) =>
          err instanceof OAuthServerError &&
          err.code === 'ERR_CONFIG' &&
          /Identity not found/.test(err.message),
      )
      assert.equal(imds.requests.length, before + 1)
    } finally {
      imds.setIdentityGone(false)
    }
  })

  test('issue 12: ManagedIdentityClient is part of the library API', () => {
    assert.equal(edgetoken.ManagedIdentityClient, ManagedIdentityClient)
  })

  test('issue 12: IMDS (link-local) is never reached through a proxy (RFC 3927 §2.6.2)', () => {
    const settings = { http: new URL('http://proxy.example:3128'), https: undefined, noProxy: '' }
    assert.equal(
      proxyFor(new URL('http://169.254.169.254/metadata/identity/oauth2/token'), settings),
      undefined,
    )
    assert.equal(proxyFor(new URL('http://[fe80::1]/x'), settings), undefined)
    assert.equal(proxyFor(new URL('http://api.example.com/x'), settings)?.host, 'proxy.example:3128')
  })
})

describe('ManagedIdentityClient: Azure Arc', () => {
  let arc: ArcImdsServer
  const tokenDirectory = join(root, 'azcmagent-tokens')
  mkdirSync(tokenDirectory, { recursive: true })
  before(async () => {
    arc = await startArcImds({ mode: 'arc', tokenDirectory })
  })
  after(() => arc.close())
  const env = () => ({ IDENTITY_ENDPOINT: arc.tokenUrl, IMDS_ENDPOINT: 'http://127.0.0.1:1' })
  const client = () =>
    new ManagedIdentityClient({ env: env(), arcTokenDirectory: tokenDirectory, sleep: noSleep })
  const sentSecret = (secret: string) => arc.requests.some((r) => r.authorization?.includes(secret) === true)

  test('issue 12: the challenge flow: 401 Basic realm=<.key file>, read it, retry with Authorization: Basic', async () => {
    const mi = client()
    assert.equal(mi.source, 'azure_arc')
    const start = Date.now()
    const tokens = await mi.acquireTokenForClient({ resource: 'api://telemetry' })
    const [first, second] = arc.requests.slice(-2)
    assert.equal(first?.status, 401)
    assert.equal(first?.authorization, undefined)
    assert.equal(first?.query.get('api-version'), '2020-06-01')
    assert.equal(second?.metadata, 'true')
    assert.equal(second?.authorization, `Basic ${arc.secrets.at(-1)}`)
    assert.equal(tokens.accessToken, arc.issued.at(-1))
    // expires_on only, epoch seconds in a string.
    assert.ok(Math.abs(tokens.expiresAt - (start + 3600_000)) < 5000)
  })

  test('issue 12: a challenge file outside the directory, a symlink, not .key, or over 4096 bytes is refused and never read', async () => {
    const outside = join(root, 'outside.key')
    writeFileSync(outside, 'outside-secret-aaaa')
    const notKey = join(tokenDirectory, 'planted.txt')
    writeFileSync(notKey, 'txt-secret-bbbb')
    const link = join(tokenDirectory, 'link.key')
    symlinkSync(outside, link)
    const big = join(tokenDirectory, 'big.key')
    writeFileSync(big, `big-secret-cccc${'x'.repeat(4096)}`)
    const dotdot = join(tokenDirectory, '..', 'outside.key')
    const fifo = join(tokenDirectory, 'fifo.key')
    execFileSync('mkfifo', [fifo])
    const cases: Array<[string, string, RegExp]> = [
      [outside, 'outside-secret', /outside/],
      [`${tokenDirectory}/../outside.key`, 'outside-secret', /normal path/],
      [dotdot, 'outside-secret', /outside/],
      [notKey, 'txt-secret', /not a \.key file/],
      [link, 'outside-secret', /symbolic link/],
      [big, 'big-secret', /larger than 4096 bytes/],
      [fifo, 'never', /not a regular file/],
      ['relative/x.key', 'never', /absolute/],
    ]
    for (const [realm, secret, why] of cases) {
      arc.setRealm(() => realm)
      const before = arc.requests.length
      await assert.rejects(
        client().acquireTokenForClient({ resource: 'api://telemetry' }),
        (err: unknown) =>
          err instanceof EdgeTokenError &&
          err.code === 'ERR_UNAVAILABLE' &&
          why.test(err.message) &&
          /refused without reading it/.test(err.message),
        realm,
      )
      // Refused at once: no retry, and no second request carrying anything.
      assert.equal(arc.requests.length, before + 1, realm)
      assert.equal(sentSecret(secret), false, realm)
    }
    arc.setRealm(undefined)
  })

  test('the checks themselves: exactly 4096 bytes is read; a realm in quotes is parsed (RFC 7617 §2)', async () => {
    const exact = join(tokenDirectory, 'exact.key')
    writeFileSync(exact, 'k'.repeat(4096))
    assert.equal((await readArcChallengeFile(exact, tokenDirectory)).length, 4096)
    assert.equal(
      basicRealm('Basic realm="/var/opt/azcmagent/tokens/a.key"'),
      '/var/opt/azcmagent/tokens/a.key',
    )
    assert.equal(basicRealm('Basic realm=/var/opt/azcmagent/tokens/a.key'), '/var/opt/azcmagent/tokens/a.key')
    assert.equal(basicRealm('Bearer realm=x'), undefined)
    // The default directory is Microsoft's, whatever the environment says.
    await assert.rejects(readArcChallengeFile(exact), /outside \/var\/opt\/azcmagent\/tokens/)
  })

  test('issue 12: 429 with Retry-After before the challenge is retried; a user-assigned id on Arc is a config error', async () => {
    const waits: number[] = []
    arc.failNext(1, 429, 2)
    const mi = new ManagedIdentityClient({
      env: env(),
      arcTokenDirectory: tokenDirectory,
      sleep: async (ms) => {
        waits.push(ms)
      },
    })
    await mi.acquireTokenForClient({ resource: 'api://telemetry' })
    assert.deepEqual(waits, [2000])
    assert.throws(
      () => new ManagedIdentityClient({ env: env(), clientId: 'x' }),
      (err: unknown) => err instanceof ConfigError && /system-assigned/.test(err.message),
    )
  })

  test('IDENTITY_ENDPOINT must be https or loopback http (the challenge secret is sent to it)', async () => {
    const mi = new ManagedIdentityClient({
      env: { IDENTITY_ENDPOINT: 'http://identity.example.com/token', IMDS_ENDPOINT: 'x' },
      sleep: noSleep,
    })
    await assert.rejects(mi.acquireTokenForClient({ resource: 'api://x' }), /IDENTITY_ENDPOINT must be/)
  })
})
