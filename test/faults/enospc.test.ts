/**
 * Issue 16: ENOSPC at each write site, on a real full file system: a small tmpfs holds the state
 * directory (and, for `config set`, the config file) and is filled up with a filler file. The CLI
 * runs as a child against the real test IdP and API. At every site: a non-zero exit with one line,
 * nothing acknowledged that is not on disk, nothing spent (refresh token, batch), the earlier data
 * intact; and once the filler is removed, everything is delivered once.
 *
 * Sites: the token store (a refresh), the spool append (`send`), the spool's reader state (after
 * an upload), the dead-letter file (a batch the API rejects for good), the config file.
 */
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { createReceiver } from '../../src/telemetry/receiver/receiver.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { type CliResult, newTestDevice, runCli, seedCachedToken, seedSignIn } from '../support/cli.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { mountSupport, mountTmpfs, type TestMount } from '../support/mounts.js'
import { closeServer, listen } from '../support/net.js'

const SCOPES = ['openid', 'offline_access', 'telemetry:write']
const root = mkdtempSync(join(tmpdir(), 'edgetoken-enospc-'))
after(() => rmSync(root, { recursive: true, force: true }))

function oneLine(r: CliResult, what: string): string {
  const lines = r.stderr.trim().split('\n')
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`)
  assert.doesNotMatch(r.stderr, /\n\s+at |eyJ/, `${what}: no stack, no token`)
  return lines[0] ?? ''
}

const records = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => `${JSON.stringify({ n: from + i, pad: 'x'.repeat(40) })}\n`).join('')
const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i)

async function pending(env: Record<string, string>): Promise<number> {
  const r = await runCli(['status', '--json'], { env })
  return JSON.parse(r.stdout).spool.pending
}

const skip = mountSupport() === true ? false : String(mountSupport())

describe('issue 16: ENOSPC at each write site', { skip }, () => {
  let idp: TestIdp
  let api: TestApi
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 600 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
  })
  after(async () => {
    await api?.close()
    await idp?.close()
  })

  /** A signed-in device whose state directory is on a fresh 1 MiB tmpfs. */
  async function deviceOnTmpfs(t: { after: (fn: () => unknown) => void }, endpoint = api.url) {
    const mount = mountTmpfs(t, 1024)
    const device = newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
    const stateDir = join(mount.dir, 'state')
    const env = { ...device.env, EDGETOKEN_STATE_DIR: stateDir, EDGETOKEN_TELEMETRY_ENDPOINT: endpoint }
    await seedSignIn({ issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES, stateDir, env })
    return { mount, stateDir, env }
  }

  const delivered = (deviceId: string | undefined) =>
    api.receiver.batches
      .filter((b) => b.deviceId === deviceId)
      .flatMap((b) => b.records.map((r) => (r as { n: number }).n))

  test('token store: a refresh is not sent when the store has no room; the refresh token works once space is back', async (t) => {
    const { mount, stateDir, env } = await deviceOnTmpfs(t)
    const store = readFileSync(join(stateDir, 'tokens.store'))
    const filler = mount.fill(4096)
    const refreshes = idp.refreshes

    const r = await runCli(['token', '--force-refresh'], { env })
    assert.equal(r.code, 1, r.stderr)
    assert.equal(r.stdout, '')
    assert.match(
      oneLine(r, 'token'),
      /no room for a refreshed token \(ENOSPC\): no refresh was sent and the refresh token is kept/,
    )
    assert.equal(idp.refreshes, refreshes, 'no refresh grant reached the IdP')
    assert.deepEqual(readFileSync(join(stateDir, 'tokens.store')), store, 'the store is unchanged')

    rmSync(filler)
    const again = await runCli(['token', '--force-refresh'], { env })
    assert.equal(again.code, 0, again.stderr)
    assert.equal(idp.refreshes, refreshes + 1)
  })

  test('spool append: send exits 1 and acknowledges nothing; the earlier records are intact and delivered once', async (t) => {
    const { mount, stateDir, env } = await deviceOnTmpfs(t)
    const first = await runCli(['send'], { env, stdin: records(0, 20) })
    assert.equal(first.code, 0, first.stderr)
    const filler = mount.fill(4096)

    const full = await runCli(['send', '--json'], { env, stdin: records(20, 200) })
    assert.equal(full.code, 1, full.stderr)
    assert.doesNotMatch(full.stdout, /"event":"spooled"/, 'no record acknowledged')
    assert.match(oneLine(full, 'send'), /ENOSPC/)
    assert.equal(await pending(env), 20, 'the 20 earlier records, nothing of the failed input')
    assert.deepEqual(
      readdirSync(join(stateDir, 'spool')).filter((f) => f.includes('.tmp')),
      [],
      'no temporary file left',
    )

    rmSync(filler)
    const up = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(up.code, 0, up.stderr)
    assert.deepEqual(delivered((env as Record<string, string>).EDGETOKEN_DEVICE_ID), range(0, 20))
  })

  test('spool state: the disk fills while a batch is in flight: upload fails, and the batch is sent again under the same batch id, kept once', async (t) => {
    // The real receiver behind a server that fills the disk when a batch arrives: the upload
    // has locked and read the spool, and only its progress is left to write.
    let mount: TestMount | undefined
    let filler: string | undefined
    const receiver = createReceiver({ issuer: idp.issuer, audience: idp.audience })
    const keys: (string | undefined)[] = []
    const hooked = createServer((req, res) => {
      keys.push(req.headers['idempotency-key'] as string | undefined)
      if (mount !== undefined && filler === undefined) filler = mount.fill(4096)
      receiver.handler(req, res)
    })
    const port = await listen(hooked)
    t.after(() => closeServer(hooked))
    const device = await deviceOnTmpfs(t, `http://127.0.0.1:${port}/ingest`)
    const { env } = device
    const sent = await runCli(['send'], { env, stdin: records(0, 30) })
    assert.equal(sent.code, 0, sent.stderr)
    mount = device.mount

    const full = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(full.code, 1, `an upload whose progress is not on disk is not a success: ${full.stderr}`)
    assert.match(oneLine(full, 'upload'), /saving the spool state failed: disk full \(ENOSPC\)/)
    assert.equal(receiver.batches.length, 1, 'the batch reached the API')
    assert.ok(filler !== undefined)
    rmSync(filler)
    assert.equal(await pending(env), 30, 'not counted as delivered')

    const up = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(up.code, 0, up.stderr)
    assert.equal(await pending(env), 0)
    assert.equal(keys.length, 2, 'sent twice')
    assert.equal(keys[0], keys[1], 'under the same Idempotency-Key (batch id)')
    assert.equal(receiver.batches.length, 1, 'kept once by the API')
    assert.deepEqual(
      receiver.batches.flatMap((b) => b.records.map((r) => (r as { n: number }).n)),
      range(0, 30),
    )
  })

  test('dead letters: a batch the API rejects for good stays in the spool while the dead-letter file has no room', async (t) => {
    // A loopback API that rejects every batch with 422 (the batch itself is wrong) until told
    // otherwise, then accepts and records; the token is not checked here.
    let reject = true
    let mount: TestMount | undefined
    let filler: string | undefined
    const seen: { batchId: string; records: number[] }[] = []
    const rejecting = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          batch_id: string
          records: { n: number }[]
        }
        if (reject) {
          if (mount !== undefined && filler === undefined) filler = mount.fill()
          res.writeHead(422, { 'content-type': 'application/json' }).end('{"error":"invalid_records"}')
          return
        }
        if (!seen.some((b) => b.batchId === body.batch_id))
          seen.push({ batchId: body.batch_id, records: body.records.map((r) => r.n) })
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"accepted":true}')
      })
    })
    const port = await listen(rejecting)
    t.after(() => closeServer(rejecting))
    const tmpfs = mountTmpfs(t, 1024)
    const device = newTestDevice(root, { issuer: idp.issuer, clientId: idp.publicClientId, scopes: SCOPES })
    const env = {
      ...device.env,
      EDGETOKEN_STATE_DIR: join(tmpfs.dir, 'state'),
      EDGETOKEN_TELEMETRY_ENDPOINT: `http://127.0.0.1:${port}/ingest`,
    }
    await seedCachedToken({ ...device, stateDir: env.EDGETOKEN_STATE_DIR, env })
    const sent = await runCli(['send'], { env, stdin: records(0, 15) })
    assert.equal(sent.code, 0, sent.stderr)
    mount = tmpfs

    const full = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(full.code, 1, full.stderr)
    assert.match(oneLine(full, 'upload'), /dead-letter.*disk full \(ENOSPC\)/)
    assert.ok(filler !== undefined, 'the API saw the batch')
    rmSync(filler)
    assert.equal(await pending(env), 15, 'not dropped: the dead-letter copy was never written')
    const deadLetters = join(env.EDGETOKEN_STATE_DIR, 'spool', 'dead-letter.ndjson')
    assert.equal(
      existsSync(deadLetters) ? readFileSync(deadLetters, 'utf8') : '',
      '',
      'no torn dead-letter line',
    )

    reject = false
    const up = await runCli(['upload'], { env, timeoutMs: 20_000 })
    assert.equal(up.code, 0, up.stderr)
    assert.deepEqual(
      seen.flatMap((b) => b.records),
      range(0, 15),
    )
  })

  test('config set: exit 1 with one line, the file byte-identical, no temporary file left', async (t) => {
    const mount = mountTmpfs(t, 256)
    const dir = join(mount.dir, 'etc')
    mkdirSync(dir)
    const file = join(dir, 'config.json')
    const original = `${JSON.stringify({ authority: idp.issuer, clientId: idp.publicClientId, deviceId: `d-${randomUUID()}` }, null, 2)}\n`
    writeFileSync(file, original)
    mount.fill(4096)

    const r = await runCli(['config', 'set', 'scopes', '["openid","telemetry:write"]'], {
      env: { EDGETOKEN_CONFIG: file, HOME: join(root, 'home'), XDG_CONFIG_HOME: join(root, 'xdg') },
    })
    assert.equal(r.code, 1, r.stderr)
    assert.match(oneLine(r, 'config set'), /ENOSPC/)
    assert.equal(readFileSync(file, 'utf8'), original)
    assert.deepEqual(
      readdirSync(dir).filter((f) => f !== 'config.json' && !f.endsWith('.lock')),
      [],
    )
  })
})
