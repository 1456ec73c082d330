import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { access, mkdir, mkdtemp, rm, utimes, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { resolveAuthority } from '../../src/oauth/authority.js'
import { pollDeviceAuthorization, startDeviceAuthorization } from '../../src/oauth/grants/device.js'
import { accountFromTokenSet } from '../../src/oauth/tokens.js'
import { saveSignIn } from '../../src/store/cache.js'
import { openTokenStore } from '../../src/store/token-store.js'
import { readSpoolStatus } from '../../src/telemetry/spool/spool-status.js'
import { startTestApi, type TestApi } from '../support/api.js'
import { approveDevice } from '../support/headless-user.js'
import { startTestIdp, type TestIdp } from '../support/idp.js'
import { closeServer, listen } from '../support/net.js'

const ROOT = new URL('../..', import.meta.url).pathname
const SCOPES = ['openid', 'offline_access', 'telemetry:write']

interface Result {
  code: number | null
  signal: NodeJS.Signals | null
  out: string
  err: string
}

function cli(
  args: string[],
  env: NodeJS.ProcessEnv,
  input?: string,
  keepStdinOpen = false,
): { child: ChildProcess; done: Promise<Result> } {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), ...args], {
    cwd: ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    err += d
  })
  child.stdin?.on('error', () => {})
  if (keepStdinOpen) child.stdin?.write(input ?? '')
  else child.stdin?.end(input ?? '')
  const done = new Promise<Result>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, out, err }))
  })
  return { child, done }
}

const lines = (device: string, from: number, n: number) =>
  Array.from({ length: n }, (_, i) => `${JSON.stringify({ d: device, n: from + i })}\n`).join('')

describe('send and upload (CLI, real IdP and API)', () => {
  let idp: TestIdp
  let api: TestApi
  let root: string
  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: 600 })
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
    root = await mkdtemp(join(tmpdir(), 'edgetoken-cli-'))
  })
  after(async () => {
    await api.close()
    await idp.close()
    await rm(root, { recursive: true, force: true })
  })

  let n = 0
  /** A signed-in device: its own state dir, key and device id. */
  async function device(): Promise<{ env: NodeJS.ProcessEnv; stateDir: string; deviceId: string }> {
    const home = join(root, `d${n++}`)
    const stateDir = join(home, 'state')
    await mkdir(stateDir, { recursive: true })
    const keyFile = join(home, 'key')
    await writeFile(keyFile, randomBytes(32), { mode: 0o600 })
    const deviceId = `dev-${n}`
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: home,
      XDG_CONFIG_HOME: join(home, 'config'),
      EDGETOKEN_STATE_DIR: stateDir,
      EDGETOKEN_KEY_FILE: keyFile,
      EDGETOKEN_AUTHORITY: idp.issuer,
      EDGETOKEN_CLIENT_ID: idp.publicClientId,
      EDGETOKEN_SCOPES: SCOPES.join(' '),
      EDGETOKEN_DEVICE_ID: deviceId,
      EDGETOKEN_TELEMETRY_ENDPOINT: api.url,
    }
    const server = await resolveAuthority(idp.issuer)
    const client = { clientId: idp.publicClientId }
    const flow = await startDeviceAuthorization(server, client, SCOPES)
    const polling = pollDeviceAuthorization(server, client, flow, {
      sleep: () => new Promise((r) => setTimeout(r, 20)),
    })
    await approveDevice(idp.issuer, flow.userCode)
    const tokenSet = await polling
    const store = await openTokenStore({ stateDir, env })
    await saveSignIn(store, {
      authority: idp.issuer,
      clientId: idp.publicClientId,
      account: accountFromTokenSet(server, idp.publicClientId, tokenSet),
      tokenSet,
      requestedScopes: SCOPES,
    })
    return { env, stateDir, deviceId }
  }

  const received = (deviceId: string) =>
    api.receiver.batches
      .filter((b) => b.deviceId === deviceId)
      .flatMap((b) => b.records.map((r) => (r as { n: number }).n))

  test('API down: send 1000, upload exits 5 with 1000 pending; API up: upload exits 0, 1000 delivered once, in order', async () => {
    const { env, stateDir, deviceId } = await device()
    await api.setMode('down')
    try {
      const sent = await cli(['send'], env, lines(deviceId, 0, 1000)).done
      assert.equal(sent.code, 0, sent.err)
      assert.equal((await readSpoolStatus(stateDir)).pending, 1000)
      const failed = await cli(['upload'], env).done
      assert.equal(failed.code, 5, failed.err)
      assert.match(failed.err, /unreachable|unavailable/)
      assert.equal((await readSpoolStatus(stateDir)).pending, 1000)
      assert.equal((await readSpoolStatus(stateDir)).lastUpload?.result, 'unavailable')
    } finally {
      await api.setMode('up')
    }
    const ok = await cli(['upload', '--json'], env).done
    assert.equal(ok.code, 0, ok.err)
    const last = JSON.parse(ok.out.trim().split('\n').at(-1) as string) as Record<string, unknown>
    assert.deepEqual(last, { event: 'uploaded', records: 1000, batches: 2, dead_lettered: 0, pending: 0 })
    assert.deepEqual(
      received(deviceId),
      Array.from({ length: 1000 }, (_, i) => i),
    )
    assert.equal((await readSpoolStatus(stateDir)).pending, 0)
  })

  test('send rejects invalid input by default (nothing spooled, exit 2, each bad line named)', async () => {
    const { env, stateDir } = await device()
    const input = '{"a":1}\nnot json\n[1,2]\n\n{"b":2}\n'
    const r = await cli(['send'], env, input).done
    assert.equal(r.code, 2)
    assert.match(r.err, /line 2: not valid JSON/)
    assert.match(r.err, /line 3: not a JSON object/)
    assert.equal((await readSpoolStatus(stateDir)).pending, 0)

    const skip = await cli(['send', '--on-invalid', 'skip', '--json'], env, input).done
    assert.equal(skip.code, 0, skip.err)
    assert.match(skip.err, /warning: line 2: not valid JSON \(skipped\)/)
    assert.deepEqual(JSON.parse(skip.out.trim().split('\n').at(-1) as string), {
      event: 'spooled',
      records: 2,
      skipped: 2,
    })
    assert.equal((await readSpoolStatus(stateDir)).pending, 2)

    const long = await cli(['send'], env, `{"x":"${'y'.repeat(70 * 1024)}"}\n`).done
    assert.equal(long.code, 2)
    assert.match(long.err, /line 1: longer than 65536 bytes/)
  })

  test('upload without a sign-in exits 3 and keeps the spool', async () => {
    const home = join(root, `nosignin${n++}`)
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: home,
      XDG_CONFIG_HOME: join(home, 'config'),
      EDGETOKEN_STATE_DIR: join(home, 'state'),
      EDGETOKEN_AUTHORITY: idp.issuer,
      EDGETOKEN_CLIENT_ID: idp.publicClientId,
      EDGETOKEN_TELEMETRY_ENDPOINT: api.url,
    }
    assert.equal((await cli(['send'], env, '{"a":1}\n').done).code, 0)
    const r = await cli(['upload'], env).done
    assert.equal(r.code, 3, r.err)
    assert.equal((await readSpoolStatus(join(home, 'state'))).pending, 1)
  })

  test('SIGTERM during upload: it stops within the bound and the spool keeps everything', async () => {
    const { env, stateDir, deviceId } = await device()
    assert.equal((await cli(['send'], env, lines(deviceId, 0, 50)).done).code, 0)
    // 25 s: within the uploader's 30 s wait budget, and longer than the 15 s after which a CLI
    // that ignores the signal is ended anyway (exit 130): exit 4 can only come from the signal.
    await api.setMode('unavailable', { retryAfterSeconds: 25 })
    try {
      const up = cli(['upload'], env)
      // Wait until it has met the 503 and is waiting out the Retry-After.
      const started = Date.now()
      let exited = false
      void up.done.then(() => {
        exited = true
      })
      const met503 = () => api.requests.some((r) => r.at >= started && r.status === 503)
      while (!met503() && !exited && Date.now() - started < 60_000) {
        await new Promise((r) => setTimeout(r, 20))
      }
      assert.ok(met503(), 'the upload never met the 503 it should be waiting out')
      assert.equal(exited, false, 'the upload ended before the signal')
      const sentAt = Date.now()
      up.child.kill('SIGTERM')
      const r = await up.done
      // Cancelled (README, exit codes: 4), not exit 5 after retrying, nor 130 from the forced exit.
      assert.equal(r.code, 4, r.err)
      assert.match(r.err, /stopped|cancel/)
      assert.equal(
        api.requests.filter((q) => q.at >= sentAt).length,
        0,
        'no request after the signal: the Retry-After was not waited out',
      )
    } finally {
      await api.setMode('up')
    }
    assert.equal((await readSpoolStatus(stateDir)).pending, 50)
  })

  // The lock at <spool>/lock: a directory holding `owner-<nonce>` (src/lib/fs/file-lock.ts), or a
  // plain file as earlier versions made it; a stale one of either form must not block send.
  async function plantLock(stateDir: string, form: 'file' | 'dir', text: string, ageMs = 0): Promise<void> {
    const path = join(stateDir, 'spool', 'lock')
    const file = form === 'file' ? path : join(path, 'owner-planted')
    if (form === 'dir') await mkdir(path)
    await writeFile(file, text)
    const at = new Date(Date.now() - ageMs)
    await utimes(file, at, at)
  }

  for (const form of ['dir', 'file'] as const) {
    test(`a spool lock (${form}) left empty by a writer killed between create and write does not block send`, async () => {
      const { env, stateDir, deviceId } = await device()
      assert.equal((await cli(['send'], env, lines(deviceId, 0, 1)).done).code, 0)
      await plantLock(stateDir, form, '', 10_000)
      const r = await cli(['send'], env, lines(deviceId, 1, 3)).done
      assert.equal(r.code, 0, r.err)
      assert.equal((await readSpoolStatus(stateDir)).pending, 4)
    })

    test(`a spool lock (${form}) from another boot whose pid is now a live process does not block send`, async () => {
      const { env, stateDir, deviceId } = await device()
      assert.equal((await cli(['send'], env, lines(deviceId, 0, 1)).done).code, 0)
      const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
      const otherBoot = boot.replace(/^./, (c) => (c === '0' ? '1' : '0'))
      // This test process is alive and is not the send process: a pid recycled after a reboot.
      await plantLock(
        stateDir,
        form,
        JSON.stringify({ pid: process.pid, at: Date.now(), nonce: 'planted', boot: otherBoot }),
      )
      const r = await cli(['send'], env, lines(deviceId, 1, 3)).done
      assert.equal(r.code, 0, r.err)
      assert.equal((await readSpoolStatus(stateDir)).pending, 4)
    })
  }

  for (const status of [403, 404]) {
    test(`upload to an endpoint answering ${status}: exit 5 naming the status, the spool intact, nothing dead-lettered`, async () => {
      const { env, stateDir, deviceId } = await device()
      const server = createServer((req, res) => {
        req.resume()
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: status === 403 ? 'insufficient_scope' : 'not_found' }))
      })
      const port = await listen(server)
      try {
        const wrong = { ...env, EDGETOKEN_TELEMETRY_ENDPOINT: `http://127.0.0.1:${port}/ingset` }
        assert.equal((await cli(['send'], wrong, lines(deviceId, 0, 30)).done).code, 0)
        const r = await cli(['upload'], wrong).done
        assert.equal(r.code, 5, r.err)
        assert.match(r.err, new RegExp(`\\b${status}\\b`))
        assert.equal(r.err.trim().split('\n').length, 1, r.err)
        const st = await readSpoolStatus(stateDir)
        assert.equal(st.pending, 30)
        assert.equal(st.deadLettered, 0)
        await assert.rejects(access(join(stateDir, 'spool', 'dead-letter.ndjson')))
      } finally {
        await closeServer(server)
      }
      // With the endpoint fixed, everything is delivered.
      assert.equal((await cli(['upload'], env).done).code, 0)
      assert.equal((await readSpoolStatus(stateDir)).pending, 0)
    })
  }

  test('send with a small spool bound cuts its appends by bytes: more input than half the bound is spooled', async () => {
    const { env, stateDir, deviceId } = await device()
    const small = { ...env, EDGETOKEN_TELEMETRY_SPOOL_MAX_BYTES: String(64 * 1024) }
    // About 100 KiB of records: more than the whole bound, so the oldest are dropped and counted.
    const r = await cli(['send', '--json'], small, lines(deviceId, 0, 3000)).done
    assert.equal(r.code, 0, r.err)
    assert.deepEqual(JSON.parse(r.out.trim().split('\n').at(-1) as string), {
      event: 'spooled',
      records: 3000,
      skipped: 0,
    })
    const st = await readSpoolStatus(stateDir)
    assert.equal(st.pending + st.dropped, 3000)
    assert.ok(st.dropped > 0, 'the oldest records were dropped and counted')
  })

  test('send that fails after earlier chunks are on disk says how many were spooled (not a config error)', async () => {
    const { env, stateDir, deviceId } = await device()
    const small = { ...env, EDGETOKEN_TELEMETRY_SPOOL_MAX_BYTES: String(64 * 1024) }
    // 200 small records, then one too large for this spool (over half its bound).
    const input = `${lines(deviceId, 0, 200)}${JSON.stringify({ d: deviceId, big: 'x'.repeat(40 * 1024) })}\n`
    const r = await cli(['send', '--json'], small, input).done
    assert.equal(r.code, 1, r.err)
    const events = r.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
    assert.deepEqual(events[0], { event: 'spooled', records: 200 })
    assert.equal(events[1]?.event, 'error')
    assert.equal(events[1]?.code, 'internal')
    assert.match(String(events[1]?.message), /first 200 records were spooled/)
    assert.equal((await readSpoolStatus(stateDir)).pending, 200)
    const human = await cli(['send'], small, input).done
    assert.equal(human.code, 1)
    assert.match(human.err, /first 200 records were spooled, the rest of the input was not/)
  })

  test('kill -9 during send and upload loops: nothing acknowledged is lost, no record delivered twice', async (t) => {
    const { env, stateDir, deviceId } = await device()
    const batchEnv = { ...env, EDGETOKEN_TELEMETRY_BATCH_MAX_RECORDS: '37' }
    const acknowledged = new Set<number>()
    let uploadsKilled = 0
    let next = 0
    for (let round = 0; round < 8; round++) {
      // Two writers at once (they share the spool lock). The second one spools as its input comes
      // (skip mode: an append per 2000 records) and its input never ends, so the kill always lands,
      // at a random moment of its appends.
      const a = cli(['send'], batchEnv, lines(deviceId, next, 2000))
      const b = cli(['send', '--on-invalid', 'skip'], batchEnv, '', true)
      const bFrom = next + 2000
      let fed = 0
      const feeding = setInterval(() => {
        b.child.stdin?.write(lines(deviceId, bFrom + fed, 50))
        fed += 50
      }, 10)
      const up = cli(['upload'], batchEnv)
      const batchesBefore = api.receiver.batches.length
      let upExited = false
      void up.done.then(() => {
        upExited = true
      })
      const killB = new Promise<void>((resolve) =>
        setTimeout(
          () => {
            clearInterval(feeding)
            b.child.kill('SIGKILL')
            resolve()
          },
          300 + Math.floor(Math.random() * 1000),
        ),
      )
      // Kill the upload once it is delivering (a batch arrived), at a random moment after that.
      const deadline = Date.now() + 60_000
      while (!upExited && api.receiver.batches.length === batchesBefore && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5))
      }
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 150)))
      if (!upExited) up.child.kill('SIGKILL')
      await killB
      const [ra, rb, ru] = await Promise.all([a.done, b.done, up.done])
      assert.equal(ra.code, 0, ra.err)
      for (let i = 0; i < 2000; i++) acknowledged.add(next + i)
      assert.equal(rb.signal, 'SIGKILL', `the writer was not killed: exit ${rb.code} ${rb.err}`)
      if (ru.signal === 'SIGKILL') uploadsKilled++
      else
        assert.ok(ru.code === 0 || ru.code === 5, `an upload not killed drains or finds the lock: ${ru.err}`)
      next = bFrom + fed
    }
    t.diagnostic(`uploads killed while delivering: ${uploadsKilled} of 8; records: ${next}`)
    assert.ok(uploadsKilled > 0, 'no upload was killed while delivering')
    const final = await cli(['upload'], batchEnv).done
    assert.equal(final.code, 0, final.err)
    assert.equal((await readSpoolStatus(stateDir)).pending, 0)
    const got = received(deviceId)
    assert.equal(new Set(got).size, got.length, 'a record reached the API in two different batches')
    const delivered = new Set(got)
    for (const i of acknowledged) assert.ok(delivered.has(i), `acknowledged record ${i} was lost`)
  })
})
