/**
 * The shared setup of the machine-grant CLI tests (issue 12): an RSA certificate with an encrypted
 * key (openssl), a client secret, the test IdP with a `client_secret_basic` and a `private_key_jwt`
 * client for them, an IMDS endpoint minting tokens the reference API accepts, and helpers that
 * run the CLI and remember every output for the leak checks.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createPublicKey } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before } from 'node:test'
import { type ArcImdsServer, startArcImds } from '../support/arc-imds.js'
import { type CliResult, newTestDevice, runCli, type TestDevice } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

export const SECRET_CLIENT = 'edgetoken-secret-service'
export const CERT_CLIENT = 'edgetoken-cert-service'

/** Parses NDJSON stdout. */
export function events(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** Every file under a directory, as bytes. */
export function filesUnder(dir: string): Buffer[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => readFileSync(join(e.parentPath, e.name)))
}

/** What {@link machineFixture} provides once its `before` hook ran. */
export interface MachineFixture {
  root: string
  pki: string
  secret: string
  passphrase: string
  keyPem: string
  secretFile: string
  certFile: string
  encryptedKeyFile: string
  passphraseFile: string
  idp: TestIdp
  imds: ArcImdsServer
  results: CliResult[]
  cli(
    device: TestDevice,
    args: readonly string[],
    env?: Record<string, string | undefined>,
  ): Promise<CliResult>
  secretDevice(extra?: Record<string, string>): TestDevice
  certDevice(extra?: Record<string, string>): TestDevice
  /** Asserts that no credential reached any output, and no token reached stderr. */
  assertNoLeaks(): void
}

/**
 * Registers the before/after hooks and returns the fixture (filled in by `before`).
 *
 * @param options - the IdP's access token lifetime (default 300 s).
 * @returns the fixture.
 */
export function machineFixture(options: { accessTokenTtlSeconds?: number } = {}): MachineFixture {
  const root = mkdtempSync(join(tmpdir(), 'edgetoken-machine-'))
  const pki = join(root, 'pki')
  mkdirSync(pki)
  const f = {
    root,
    pki,
    secret: `s3cr3t-${Math.random().toString(36).slice(2)}:%&`,
    passphrase: `pass-${Math.random().toString(36).slice(2)}`,
    keyPem: '',
    secretFile: join(pki, 'secret'),
    certFile: join(pki, 'cert.pem'),
    encryptedKeyFile: join(pki, 'key.enc.pem'),
    passphraseFile: join(pki, 'passphrase'),
    results: [] as CliResult[],
  } as MachineFixture
  f.cli = async (device, args, env = {}) => {
    const result = await runCli(args, { env: { ...device.env, ...env }, timeoutMs: 60_000 })
    f.results.push(result)
    return result
  }
  f.secretDevice = (extra = {}) =>
    newTestDevice(root, {
      issuer: f.idp.issuer,
      clientId: SECRET_CLIENT,
      scopes: [f.idp.apiScope],
      extra: { EDGETOKEN_GRANT: 'client_credentials', EDGETOKEN_CLIENT_SECRET_FILE: f.secretFile, ...extra },
    })
  f.certDevice = (extra = {}) =>
    newTestDevice(root, {
      issuer: f.idp.issuer,
      clientId: CERT_CLIENT,
      scopes: [f.idp.apiScope],
      extra: {
        EDGETOKEN_GRANT: 'client_credentials',
        EDGETOKEN_CLIENT_CERTIFICATE_FILE: f.certFile,
        EDGETOKEN_CLIENT_PRIVATE_KEY_FILE: f.encryptedKeyFile,
        EDGETOKEN_CLIENT_PRIVATE_KEY_PASSPHRASE_FILE: f.passphraseFile,
        ...extra,
      },
    })
  f.assertNoLeaks = () => {
    const secrets = [f.secret, f.passphrase, f.keyPem.split('\n')[1] ?? 'x']
    for (const r of f.results) {
      for (const s of secrets) {
        assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s), 'a credential leaked into the output')
      }
      for (const t of f.idp.issued.accessTokens)
        assert.ok(!r.stderr.includes(t), 'a token leaked into stderr')
    }
  }

  before(async () => {
    const keyFile = join(pki, 'key.pem')
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        f.certFile,
        '-days',
        '2',
        '-subj',
        `/CN=${CERT_CLIENT}`,
      ],
      { stdio: 'ignore' },
    )
    execFileSync('openssl', [
      'pkcs8',
      '-topk8',
      '-v2',
      'aes-256-cbc',
      '-in',
      keyFile,
      '-out',
      f.encryptedKeyFile,
      '-passout',
      `pass:${f.passphrase}`,
    ])
    f.keyPem = readFileSync(keyFile, 'utf8')
    writeFileSync(f.secretFile, `${f.secret}\n`, { mode: 0o600 })
    writeFileSync(f.passphraseFile, `${f.passphrase}\n`, { mode: 0o600 })
    const publicJwk = createPublicKey(f.keyPem).export({ format: 'jwk' })
    f.idp = await startTestIdp({
      accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 300,
      clients: [
        {
          client_id: SECRET_CLIENT,
          client_secret: f.secret,
          token_endpoint_auth_method: 'client_secret_basic',
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
        },
        {
          client_id: CERT_CLIENT,
          token_endpoint_auth_method: 'private_key_jwt',
          jwks: { keys: [publicJwk] },
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
        },
      ],
    })
    f.imds = await startArcImds({
      mode: 'imds',
      lifetimeSeconds: options.accessTokenTtlSeconds ?? 3600,
      mint: (resource) => f.idp.signAccessToken({ aud: resource, sub: 'mi-object-id', oid: 'mi-object-id' }),
    })
  })
  after(async () => {
    await f.imds?.close()
    await f.idp?.close()
    rmSync(root, { recursive: true, force: true })
  })
  return f
}
