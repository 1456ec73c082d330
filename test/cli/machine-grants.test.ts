/**
 * Issue 12: machines with no user, from the CLI: `login`, `token` and `status` under `grant`
 * `client_credentials` with a secret and with an RSA certificate (encrypted key) against the real
 * test IdP (oidc-provider, JWT access tokens for the reference API), and the cached path.
 */
import assert from 'node:assert/strict'
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { decodeJwt } from 'jose'
import { runCli } from '../support/cli.js'
import { CERT_CLIENT, events, filesUnder, machineFixture, SECRET_CLIENT } from './machine-grants-fixture.js'

describe('edgetoken under client_credentials (issue 12)', () => {
  const f = machineFixture()

  test('issue 12: client_credentials with a secret: login proves it (signed_in, account id); token and status follow', async () => {
    const device = f.secretDevice()
    const login = await f.cli(device, ['login', '--json'])
    assert.equal(login.code, 0, login.stderr)
    assert.deepEqual(events(login.stdout), [{ event: 'signed_in', account: { id: SECRET_CLIENT } }])
    const token = await f.cli(device, ['token'])
    assert.equal(token.code, 0, token.stderr)
    const accessToken = token.stdout.trim()
    // The token login acquired, from the store: one acquisition only.
    assert.equal(f.idp.issued.accessTokens.filter((t) => t === accessToken).length, 1)
    const claims = decodeJwt(accessToken)
    assert.equal(claims.aud, f.idp.audience)
    assert.equal(claims.scope, f.idp.apiScope)
    assert.equal(claims.client_id, SECRET_CLIENT)
    const status = await f.cli(device, ['status', '--json'])
    assert.equal(status.code, 0, status.stderr)
    const shown = JSON.parse(status.stdout) as Record<string, unknown>
    assert.equal(shown.signed_in, true)
    assert.deepEqual(shown.account, { id: SECRET_CLIENT })
    // `--force-refresh` acquires again (there is no refresh token).
    const forced = await f.cli(device, ['token', '--force-refresh', '--json'])
    assert.equal(forced.code, 0, forced.stderr)
    assert.notEqual((JSON.parse(forced.stdout) as { access_token: string }).access_token, accessToken)
    for (const bytes of filesUnder(device.stateDir))
      assert.ok(!bytes.includes(f.secret), 'the secret is not stored')
  })

  test('issue 12: a certificate with an encrypted key: private_key_jwt (RS256) on first use, no login needed', async () => {
    const device = f.certDevice()
    const token = await f.cli(device, ['token', '--json'])
    assert.equal(token.code, 0, token.stderr)
    const { access_token: accessToken, scope } = JSON.parse(token.stdout) as Record<string, string>
    assert.equal(scope, f.idp.apiScope)
    assert.equal(decodeJwt(accessToken ?? '').client_id, CERT_CLIENT)
    const status = await f.cli(device, ['status', '--json'])
    assert.equal(status.code, 0, status.stderr)
    assert.deepEqual((JSON.parse(status.stdout) as { account: unknown }).account, { id: CERT_CLIENT })
    for (const bytes of filesUnder(device.stateDir)) {
      assert.ok(
        !bytes.includes(f.passphrase) && !bytes.includes(f.keyPem.split('\n')[1] ?? 'x'),
        'no key material stored',
      )
    }
    // The wrong passphrase is a config error that names the problem, never the key.
    writeFileSync(join(f.pki, 'wrong'), 'nope\n')
    const wrong = await f.cli(device, ['token', '--force-refresh'], {
      EDGETOKEN_CLIENT_PRIVATE_KEY_PASSPHRASE_FILE: join(f.pki, 'wrong'),
    })
    assert.equal(wrong.code, 2, wrong.stderr)
    assert.match(wrong.stderr, /cannot be decrypted with the passphrase/)
  })

  test('issue 12: a cached token under client_credentials reads no credential file and loads no jose or undici', async () => {
    const device = f.certDevice()
    const first = await f.cli(device, ['token'])
    assert.equal(first.code, 0, first.stderr)
    const hooks = join(f.root, 'import-log-hooks.mjs')
    const register = join(f.root, 'import-log-register.mjs')
    writeFileSync(
      hooks,
      `import { appendFileSync } from 'node:fs'
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context)
  appendFileSync(process.env.EDGETOKEN_TEST_IMPORT_LOG, result.url + '\\n')
  return result
}
`,
    )
    writeFileSync(
      register,
      `import { register } from 'node:module'\nregister(${JSON.stringify(`file://${hooks}`)})\n`,
    )
    // The key and certificate are gone: a cached answer cannot have read them.
    const moved = join(f.pki, 'moved')
    mkdirSync(moved, { recursive: true })
    renameSync(f.encryptedKeyFile, join(moved, 'key'))
    renameSync(f.certFile, join(moved, 'cert'))
    try {
      const log = join(f.root, 'imports-machine.log')
      writeFileSync(log, '')
      const cached = await runCli(['token'], {
        env: { ...device.env, EDGETOKEN_TEST_IMPORT_LOG: log },
        nodeArgs: ['--import', register],
        timeoutMs: 60_000,
      })
      assert.equal(cached.code, 0, cached.stderr)
      assert.equal(cached.stdout, first.stdout)
      const loaded = readFileSync(log, 'utf8')
      assert.match(loaded, /src\/store\/envelope\.ts/, 'the import log works')
      assert.doesNotMatch(loaded, /\/node_modules\/(undici|jose|mqtt|qrcode-terminal|conf|ajv)\//)
      assert.doesNotMatch(loaded, /src\/identity\/|confidential-client/)
      // Control: acquiring needs the key, which is gone: a config error naming the file.
      const forced = await f.cli(device, ['token', '--force-refresh'])
      assert.equal(forced.code, 2)
      // Both files are gone: whichever is read first is named.
      assert.match(
        forced.stderr,
        /cannot read clientCredential\.(privateKeyFile|certificateFile) .* \(not found\)/,
      )
    } finally {
      renameSync(join(moved, 'key'), f.encryptedKeyFile)
      renameSync(join(moved, 'cert'), f.certFile)
    }
  })

  test("issue 12: no secret, private key, passphrase or token in any stdout/stderr but token's stdout", () => {
    f.assertNoLeaks()
  })
})
