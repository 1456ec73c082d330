/**
 * Issue 12: a revoked client secret or certificate is reported like a dead refresh token (exit 3,
 * `signin_required`), and a working credential ends that without a login.
 */
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { CERT_CLIENT, events, machineFixture } from './machine-grants-fixture.js'

describe('edgetoken: a revoked machine credential (issue 12)', () => {
  const f = machineFixture()

  test('issue 12: a revoked secret or certificate is exit 3 (signin_required); a working one again ends it', async () => {
    // The secret's revocation is covered by machine-grants-run.test.ts (the daemon's view).
    for (const [device, clientId] of [[f.certDevice(), CERT_CLIENT]] as const) {
      assert.equal((await f.cli(device, ['login'])).code, 0)
      f.idp.revokeClient(clientId)
      try {
        const token = await f.cli(device, ['token', '--force-refresh', '--json'])
        assert.equal(token.code, 3, token.stderr)
        assert.equal(events(token.stdout).at(-1)?.code, 'signin_required')
        assert.match(token.stderr, /client credential was rejected \(invalid_client\)/)
        const status = await f.cli(device, ['status', '--json'])
        assert.equal(status.code, 3)
        assert.equal((JSON.parse(status.stdout) as { needs_sign_in: boolean }).needs_sign_in, true)
      } finally {
        f.idp.revokeClient(clientId, false)
      }
      // The credential works again (replaced at the IdP): the next acquisition succeeds, no login needed.
      const token = await f.cli(device, ['token', '--force-refresh'])
      assert.equal(token.code, 0, token.stderr)
      assert.equal((await f.cli(device, ['status'])).code, 0)
    }
  })

  test("issue 12: no secret, private key, passphrase or token in any stdout/stderr but token's stdout", () => {
    f.assertNoLeaks()
  })
})
