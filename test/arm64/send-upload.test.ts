/**
 * `send` and `upload` offline and under kill -9, through the test helpers (test/support/cli.ts), so
 * test/arm64.sh runs them with the built CLI on an emulated arm64 Node; natively they run with the
 * rest of the suite. The kill moments follow what the children do (the spool being written, a batch
 * reaching the API), not fixed delays, so they land mid-work on a Node 10-20 times slower too.
 */
import assert from 'node:assert/strict'
import { type FSWatcher, mkdirSync, mkdtempSync, rmSync, watch } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { readSpoolStatus } from '../../src/telemetry/spool/spool-status.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { collect, newTestDevice, type RunCliOptions, scaled, seedSignIn, spawnCli } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']

const lines = (device: string, from: number, n: number): string =>
  Array.from({ length: n }, (_, i) => `${JSON.stringify({ d: device, n: from + i })}\n`).join('')

describe('issue 19: send and upload on the gateway (CLI, real IdP and API)', {
  timeout: scaled(240_000),
}, () => {
  let idp: TestIdp
  let api: TestApi
  let root: string
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 600 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    root = mkdtempSync(join(tmpdir(), 'edgetoken-arm64-send-'))
  })
  after(async () => {
    await api?.close()
    await idp?.close()
    rmSync(root, { recursive: true, force: true })
  })

  async function device(extra: Record<string, string> = {}) {
    const d = newTestDevice(root, {
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      extra: { EDGETOKEN_TELEMETRY_ENDPOINT: api.url, ...extra },
    })
    await seedSignIn({
      issuer: idp.issuer,
      clientId: idp.publicClientId,
      scopes: SCOPES,
      stateDir: d.stateDir,
      env: d.env,
    })
    return { ...d, deviceId: d.env.EDGETOKEN_DEVICE_ID as string }
  }

  const received = (deviceId: string): number[] =>
    api.receiver.batches
      .filter((b) => b.deviceId === deviceId)
      .flatMap((b) => b.records.map((r) => (r as { n: number }).n))

  function run(args: readonly string[], env: Record<string, string>, stdin?: string) {
    const options: RunCliOptions = { env, timeoutMs: 120_000, ...(stdin === undefined ? {} : { stdin }) }
    const child = spawnCli(args, options)
    return { child, done: collect(child, options) }
  }

  test('issue 19: API down: send spools 300 records, upload exits 5 keeping them; API up: each delivered once, in order', async () => {
    const d = await device()
    await api.setMode('down')
    try {
      const sent = await run(['send'], d.env, lines(d.deviceId, 0, 300)).done
      assert.equal(sent.code, 0, sent.stderr)
      assert.equal((await readSpoolStatus(d.stateDir)).pending, 300)
      const failed = await run(['upload'], d.env).done
      assert.equal(failed.code, 5, failed.stderr)
      assert.match(failed.stderr, /unreachable|unavailable/)
      assert.equal((await readSpoolStatus(d.stateDir)).pending, 300)
    } finally {
      await api.setMode('up')
    }
    const ok = await run(['upload', '--json'], d.env).done
    assert.equal(ok.code, 0, ok.stderr)
    const last = JSON.parse(ok.stdout.trim().split('\n').at(-1) as string) as Record<string, unknown>
    assert.equal(last.event, 'uploaded')
    assert.equal(last.records, 300)
    assert.equal(last.pending, 0)
    assert.deepEqual(
      received(d.deviceId),
      Array.from({ length: 300 }, (_, i) => i),
    )
  })

  test('issue 19: kill -9 while the spool is written and while batches are uploaded: nothing acknowledged is lost, no record delivered twice', async (t) => {
    const d = await device({ EDGETOKEN_TELEMETRY_BATCH_MAX_RECORDS: '37' })
    mkdirSync(join(d.stateDir, 'spool'), { recursive: true, mode: 0o700 })
    const acknowledged = new Set<number>()
    let next = 0
    let writersKilled = 0
    let uploadsKilled = 0
    for (let round = 0; round < 4; round++) {
      // Something in the spool directory changes: a writer holds the lock and appends.
      let watcher: FSWatcher | undefined
      const written = new Promise<void>((resolve) => {
        watcher = watch(join(d.stateDir, 'spool'), () => resolve())
      })
      const a = run(['send'], d.env, lines(d.deviceId, next, 1000))
      const b = run(['send'], d.env, lines(d.deviceId, next + 1000, 1000))
      await Promise.race([written, b.done])
      watcher?.close()
      await sleep(Math.floor(Math.random() * 150))
      const bAlive = b.child.exitCode === null && b.child.signalCode === null
      b.child.kill('SIGKILL')

      const batchesBefore = api.receiver.batches.length
      const up = run(['upload'], d.env)
      const uploading = (async () => {
        while (api.receiver.batches.length === batchesBefore && up.child.exitCode === null) await sleep(5)
      })()
      await Promise.race([uploading, up.done])
      await sleep(Math.floor(Math.random() * 100))
      const upAlive = up.child.exitCode === null && up.child.signalCode === null
      up.child.kill('SIGKILL')

      const [ra, rb, ru] = await Promise.all([a.done, b.done, up.done])
      assert.equal(ra.code, 0, ra.stderr)
      for (let i = 0; i < 1000; i++) acknowledged.add(next + i)
      if (rb.code === 0) for (let i = 0; i < 1000; i++) acknowledged.add(next + 1000 + i)
      if (bAlive && rb.signal === 'SIGKILL') writersKilled += 1
      if (upAlive && ru.signal === 'SIGKILL') uploadsKilled += 1
      // An upload that finished before the kill drained the spool or found a writer's lock.
      if (ru.signal === null) assert.ok(ru.code === 0 || ru.code === 5, ru.stderr)
      next += 2000
    }
    const final = await run(['upload'], d.env).done
    assert.equal(final.code, 0, final.stderr)
    assert.equal((await readSpoolStatus(d.stateDir)).pending, 0)
    const got = received(d.deviceId)
    const delivered = new Set(got)
    t.diagnostic(
      `${writersKilled} writers and ${uploadsKilled} uploads killed mid-work, ${got.length} records delivered`,
    )
    assert.equal(delivered.size, got.length, 'a record reached the API in two different batches')
    for (const i of acknowledged) assert.ok(delivered.has(i), `acknowledged record ${i} was lost`)
    assert.ok(writersKilled + uploadsKilled >= 1, 'no child was killed while it worked')
  })
})
