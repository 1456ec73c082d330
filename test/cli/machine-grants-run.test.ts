/**
 * Issue 12: `edgetoken run` under `grant` `client_credentials`: a whole day compressed (5-second
 * tokens for about 20 seconds: the 60 s tokens over 5 minutes, scaled down), tokens
 * re-acquired ahead of expiry (there is no refresh token), every record uploaded to the reference
 * API; then the secret is revoked: `signin_required`, spooling goes on, and the records wait.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { startTestApi, type TestApi } from '../support/api.js'
import { filesUnder, machineFixture, SECRET_CLIENT } from './machine-grants-fixture.js'
import { feedSpool, startDaemon } from './machine-grants-run-fixture.js'

describe('edgetoken run under client_credentials (issue 12)', () => {
  const f = machineFixture({ accessTokenTtlSeconds: 5 })
  let api: TestApi
  before(async () => {
    api = await startTestApi({ issuer: f.idp.issuer, audience: f.idp.audience })
  })
  after(() => api?.close())

  test('issue 12: 5 s tokens re-acquired for 20 s while uploading; a revoked secret is signin_required and spooling goes on', async () => {
    const device = f.secretDevice()
    const daemon = await startDaemon(device, api.url)
    try {
      const fed = await feedSpool(device.stateDir, 20, 'cc')
      await daemon.waitFor(() => api.receiver.batches.flatMap((b) => b.records).length >= fed, 20_000)
      const renewed = daemon.events.filter((e) => e.event === 'renewed').length
      // One acquisition about every 2.5 s (half of a 5 s lifetime), jitter aside.
      assert.ok(renewed >= 4, `renewals: ${renewed}`)
      const uploaded = api.receiver.batches.flatMap((b) => b.records) as Array<{
        sensor: string
        seq: number
      }>
      assert.deepEqual(
        uploaded.filter((r) => r.sensor === 'cc').map((r) => r.seq),
        Array.from({ length: fed }, (_, i) => i),
      )
      assert.ok(api.receiver.batches.every((b) => b.subject === SECRET_CLIENT))
      assert.equal(
        daemon.events.some((e) => e.event === 'signin_required'),
        false,
      )

      // The secret is revoked at the IdP: the next acquisition is refused.
      f.idp.revokeClient(SECRET_CLIENT)
      await daemon.waitFor((e) => e.event === 'signin_required', 20_000)
      const before = api.receiver.batches.length
      const more = await feedSpool(device.stateDir, 3, 'after')
      const status = await f.cli(device, ['status', '--json'])
      assert.equal(status.code, 3)
      const shown = JSON.parse(status.stdout) as { spool: { pending: number } }
      assert.ok(shown.spool.pending >= more, `pending: ${shown.spool.pending}`)
      // Nothing of those was uploaded with a stale token once the credential was refused.
      const late = api.receiver.batches.slice(before).flatMap((b) => b.records) as Array<{ sensor: string }>
      assert.equal(late.filter((r) => r.sensor === 'after').length, 0)
    } finally {
      f.idp.revokeClient(SECRET_CLIENT, false)
      const result = await daemon.stop()
      f.results.push(result)
      assert.equal(result.code, 0, result.stderr)
    }
    for (const bytes of filesUnder(device.stateDir))
      assert.ok(!bytes.includes(f.secret), 'the secret is not stored')
    f.assertNoLeaks()
  })
})
