/**
 * `edgetoken login` against a Microsoft Entra ID tenant that blocks the device code flow by
 * Conditional Access (issue 11 #3): the CLI's one line, its exit code, and the next step it names.
 * Runs `main()` in this process so the Entra ID hosts reach the loopback dialect server
 * (test/support/entra.ts) through its origin-rewriting dispatcher.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { newTestDevice, runMain } from '../support/cli.js'
import { type EntraDialectServer, routeEntraHosts, startEntraDialect } from '../support/entra.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-login-entra-'))
after(() => rmSync(root, { recursive: true, force: true }))

describe('edgetoken login, Entra ID tenant that blocks the device code flow', () => {
  let entra: EntraDialectServer
  let unroute: () => Promise<void>
  before(async () => {
    entra = await startEntraDialect()
    unroute = routeEntraHosts(entra)
  })
  after(async () => {
    await unroute()
    await entra.close()
  })

  test('issue 11 #3: AADSTS53003 is one line that says so and names the alternatives; exit 2, code config', async () => {
    entra.setDeviceCodeOutcome('conditional_access_blocked')
    const d = newTestDevice(root, {
      issuer: 'https://login.microsoftonline.com/organizations',
      clientId: '04b07795-8ddb-461a-bbee-02f9e1bf7b46',
    })
    const stateDir = join(d.stateDir, 'the state')
    const r = await runMain(['login', '--json', '--display', 'none', '--state-dir', stateDir], d.env)
    assert.equal(r.code, 2, r.err)
    const message = `the tenant blocks the device code flow by Conditional Access (AADSTS53003): sign in with a client certificate or managed identity (config grant), or run: edgetoken --state-dir '${stateDir}' login --browser`
    assert.equal(r.err, `edgetoken: ${message}\n`)
    assert.deepEqual(JSON.parse(r.out), { event: 'error', code: 'config', message })
  })
})
