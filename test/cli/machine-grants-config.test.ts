/**
 * Issue 12: the configuration of the machine grants: `config/schema.json` and the loader agree on
 * `grant`, `clientCredential` and `managedIdentity`; the merged checks (a grant needs its
 * credential or identity, a credential needs its grant); `AZURE_FEDERATED_TOKEN_FILE`; and the
 * systemd install script's Azure Arc drop-in.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import Ajv2020Module from 'ajv/dist/2020.js'
import { cachedTokenAnswer } from '../../src/cli/cached-token.js'
import { loadConfig, MANAGED_IDENTITY_AUTHORITY, requireIdentity } from '../../src/config/load.js'
import { fileLayer } from '../../src/config/rules.js'
import { ConfigError, EdgeTokenError } from '../../src/errors.js'
import { acquireTokenSilent, type MachineAcquisition, readAccountStatus } from '../../src/store/cache.js'
import { openTokenStore } from '../../src/store/token-store.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module

function loaderAccepts(data: unknown): boolean {
  try {
    fileLayer(data, tmpdir())
    return true
  } catch (err) {
    if (err instanceof ConfigError) return false
    throw err
  }
}

const env = (extra: Record<string, string>) => ({
  HOME: tmpdir(),
  XDG_CONFIG_HOME: join(tmpdir(), 'none'),
  ...extra,
})

describe('machine grant configuration (issue 12)', () => {
  test('issue 12: schema and loader accept and reject the same grant, clientCredential and managedIdentity files', async () => {
    const schema = JSON.parse(await readFile(join(root, 'config', 'schema.json'), 'utf8')) as Record<
      string,
      unknown
    >
    const validate = new Ajv2020({ allErrors: true, strict: true, strictRequired: false }).compile(schema)
    const valid: unknown[] = [
      { grant: 'client_credentials', clientCredential: { secretFile: '/run/secret' } },
      {
        grant: 'client_credentials',
        clientCredential: { certificateFile: 'c.pem', privateKeyFile: 'k.pem', sendCertificateChain: true },
      },
      { clientCredential: { privateKeyFile: 'k.pem', privateKeyPassphraseFile: 'p' } },
      { clientCredential: { assertionFile: '/var/run/secrets/tokens/azure-identity' } },
      { grant: 'managed_identity', managedIdentity: { resource: 'api://telemetry', clientId: 'c' } },
      { grant: 'device_code' },
    ]
    const invalid: unknown[] = [
      { grant: 'password' },
      { clientCredential: { secret: 'inline' } },
      { clientCredential: { secretFile: 's', privateKeyFile: 'k' } },
      { clientCredential: { secretFile: 's', assertionFile: 'a' } },
      { clientCredential: { certificateFile: 'c' } },
      { clientCredential: { privateKeyPassphraseFile: 'p' } },
      { clientCredential: { privateKeyFile: 'k', sendCertificateChain: true } },
      { clientCredential: { sendCertificateChain: 'yes', privateKeyFile: 'k', certificateFile: 'c' } },
      { managedIdentity: { resource: 'a\u0007b' } },
      { managedIdentity: { resource: 'r', objectId: 'x' } },
    ]
    for (const data of valid) {
      assert.equal(
        validate(data),
        true,
        `schema rejected ${JSON.stringify(data)}: ${JSON.stringify(validate.errors)}`,
      )
      assert.equal(loaderAccepts(data), true, `loader rejected ${JSON.stringify(data)}`)
    }
    for (const data of invalid) {
      assert.equal(validate(data), false, `schema accepted ${JSON.stringify(data)}`)
      assert.equal(loaderAccepts(data), false, `loader accepted ${JSON.stringify(data)}`)
    }
  })

  test('issue 12: scopes are sent as given under client_credentials (no offline_access); managed identity needs no authority', async () => {
    const cc = await loadConfig({
      options: {},
      env: env({
        EDGETOKEN_GRANT: 'client_credentials',
        EDGETOKEN_CLIENT_SECRET_FILE: '/run/s',
        EDGETOKEN_SCOPES: 'api://telemetry/.default',
      }),
    })
    assert.deepEqual(cc.scopes, ['api://telemetry/.default'])
    assert.deepEqual(cc.clientCredential?.secretFile, '/run/s')
    const mi = await loadConfig({
      options: {},
      env: env({
        EDGETOKEN_GRANT: 'managed_identity',
        EDGETOKEN_MANAGED_IDENTITY_RESOURCE: 'https://vault.azure.net',
      }),
    })
    assert.deepEqual(requireIdentity(mi), {
      authority: MANAGED_IDENTITY_AUTHORITY,
      clientId: 'system-assigned',
      scopes: ['https://vault.azure.net'],
    })
  })

  test('issue 12: AZURE_FEDERATED_TOKEN_FILE is the assertion when client_credentials has no credential', async () => {
    const config = await loadConfig({
      options: {},
      env: env({
        EDGETOKEN_GRANT: 'client_credentials',
        AZURE_FEDERATED_TOKEN_FILE: '/var/run/secrets/azure/tokens/azure-identity-token',
      }),
    })
    assert.equal(config.clientCredential?.assertionFile, '/var/run/secrets/azure/tokens/azure-identity-token')
    // An explicit credential wins; without the grant the variable is ignored.
    const explicit = await loadConfig({
      options: {},
      env: env({
        EDGETOKEN_GRANT: 'client_credentials',
        EDGETOKEN_CLIENT_SECRET_FILE: '/s',
        AZURE_FEDERATED_TOKEN_FILE: '/f',
      }),
    })
    assert.equal(explicit.clientCredential?.assertionFile, undefined)
    const device = await loadConfig({ options: {}, env: env({ AZURE_FEDERATED_TOKEN_FILE: '/f' }) })
    assert.equal(device.grant, 'device_code')
  })

  test('issue 12: install.sh gives the service the himds group (Arc challenge files) only where it exists', async () => {
    const script = await readFile(join(root, 'systemd', 'install.sh'), 'utf8')
    assert.match(script, /if getent group himds >\/dev\/null 2>&1; then/)
    assert.match(script, /SupplementaryGroups=himds/)
    assert.match(
      script,
      /Environment=IDENTITY_ENDPOINT=http:\/\/localhost:40342\/metadata\/identity\/oauth2\/token/,
    )
    const unit = await readFile(join(root, 'systemd', 'edgetoken.service'), 'utf8')
    // Not in the unit itself: a missing group would keep it from starting on every other machine.
    assert.doesNotMatch(unit, /^SupplementaryGroups=/m)
  })

  test('issue 12: the store: a machine acquires on first use, stays signed in without a refresh token, and a rejection marks it until the next success', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-machine-store-'))
    try {
      await writeFile(join(dir, 'key'), 'k'.repeat(40), { mode: 0o600 })
      const store = await openTokenStore({
        stateDir: join(dir, 'state'),
        env: { EDGETOKEN_KEY_FILE: join(dir, 'key') },
      })
      let clock = 1_800_000_000_000
      let reject = false
      let n = 0
      const machine: MachineAcquisition = {
        grant: 'client_credentials',
        acquire: async (scopes) => {
          if (reject) throw new EdgeTokenError('ERR_SIGNIN_REQUIRED', 'credential rejected')
          n += 1
          return {
            tokenSet: {
              accessToken: `at-${n}`,
              tokenType: 'bearer',
              expiresAt: clock + 60_000,
              scopes: [...scopes],
            },
            account: { id: 'svc', issuer: 'https://idp.example' },
          }
        },
      }
      const identity = { authority: 'https://idp.example', clientId: 'svc' }
      const options = { ...identity, scopes: ['api'], machine, now: () => clock }
      assert.equal((await acquireTokenSilent(store, options)).accessToken, 'at-1')
      // The token expired (the daemon was down): still signed in, since the credential renews it.
      clock += 120_000
      const status = await readAccountStatus(store, identity)
      assert.equal(status.signedIn, true)
      assert.equal(status.needsSignIn, false)
      assert.equal((await acquireTokenSilent(store, options)).accessToken, 'at-2')
      reject = true
      clock += 120_000
      await assert.rejects(acquireTokenSilent(store, options), /credential rejected/)
      assert.deepEqual(
        { ...(await readAccountStatus(store, identity)), accessTokenExpiresAt: null },
        {
          account: { id: 'svc', issuer: 'https://idp.example' },
          signedIn: false,
          needsSignIn: true,
          accessTokenExpiresAt: null,
        },
      )
      reject = false
      assert.equal((await acquireTokenSilent(store, options)).accessToken, 'at-3')
      assert.equal((await readAccountStatus(store, identity)).signedIn, true)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  test('issue 12: the cached answer under a machine grant with no store yet steps aside and creates nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-machine-cached-'))
    try {
      const stateDir = join(dir, 'state')
      const answer = await cachedTokenAnswer(
        ['token'],
        env({
          EDGETOKEN_GRANT: 'managed_identity',
          EDGETOKEN_MANAGED_IDENTITY_RESOURCE: 'api://telemetry',
          EDGETOKEN_STATE_DIR: stateDir,
        }),
      )
      assert.equal(answer, undefined)
      assert.equal(existsSync(stateDir), false, 'no state directory or generated key left behind')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
