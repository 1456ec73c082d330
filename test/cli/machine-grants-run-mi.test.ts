/**
 * Issue 12: `edgetoken run` under `grant` `managed_identity` (the instance metadata service on
 * loopback): 5-second tokens re-acquired for about 20 seconds while every record is uploaded to
 * the reference API (the day of 60 s tokens over 5 minutes, scaled down).
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { startTestApi, type TestApi } from '../support/api.js'
import { newTestDevice } from '../support/cli.js'
import { machineFixture } from './machine-grants-fixture.js'
import { feedSpool, startDaemon } from './machine-grants-run-fixture.js'

describe('edgetoken run under managed_identity (issue 12)', () => {
  const f = machineFixture({ accessTokenTtlSeconds: 5 })
  let api: TestApi
  before(async () => {
    api = await startTestApi({ issuer: f.idp.issuer, audience: f.idp.audience })
  })
  after(() => api?.close())

  test('issue 12: 5 s managed identity tokens re-acquired for 20 s; every record uploaded', async () => {
    const device = newTestDevice(f.root, {
      issuer: f.idp.issuer,
      extra: {
        EDGETOKEN_GRANT: 'managed_identity',
        EDGETOKEN_MANAGED_IDENTITY_RESOURCE: f.idp.audience,
        AZURE_POD_IDENTITY_AUTHORITY_HOST: f.imds.baseUrl,
      },
    })
    const daemon = await startDaemon(device, api.url, {
      EDGETOKEN_AUTHORITY: undefined,
      EDGETOKEN_CLIENT_ID: undefined,
      EDGETOKEN_SCOPES: undefined,
    })
    try {
      const fed = await feedSpool(device.stateDir, 20, 'mi')
      await daemon.waitFor(() => api.receiver.batches.flatMap((b) => b.records).length >= fed, 20_000)
      const renewed = daemon.events.filter((e) => e.event === 'renewed').length
      assert.ok(renewed >= 4, `renewals: ${renewed}`)
      assert.ok(f.imds.requests.length >= 5)
      assert.ok(f.imds.requests.every((r) => r.metadata === 'true'))
      const uploaded = api.receiver.batches.flatMap((b) => b.records) as Array<{ seq: number }>
      assert.deepEqual(
        uploaded.map((r) => r.seq),
        Array.from({ length: fed }, (_, i) => i),
      )
      assert.equal(
        daemon.events.some((e) => e.event === 'signin_required'),
        false,
      )
    } finally {
      const result = await daemon.stop()
      f.results.push(result)
      assert.equal(result.code, 0, result.stderr)
    }
    f.assertNoLeaks()
  })
})
