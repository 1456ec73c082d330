// Regression tests of the telemetry audit (issue 6): which answers dead-letter a batch, the token
// asked per batch, and an idle daemon loop that writes nothing to the card.
import assert from 'node:assert/strict'
import { type FSWatcher, watch, writeFileSync } from 'node:fs'
import { access, mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { isEdgeTokenError, UnavailableError } from '../../../src/errors.js'
import { createReceiver } from '../../../src/telemetry/receiver/receiver.js'
import { openSpool, type Spool } from '../../../src/telemetry/spool/spool.js'
import { readSpoolStatus } from '../../../src/telemetry/spool/spool-status.js'
import { type UploadEvent, Uploader, type UploaderOptions } from '../../../src/telemetry/upload/uploader.js'
import { startTestIdp, type TestIdp } from '../../support/idp.js'
import { closeServer, listen } from '../../support/net.js'

const recs = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ n: from + i }))

interface Api {
  url: string
  /** Statuses answered, in order. */
  statuses: number[]
  /** Bearer tokens presented, in order. */
  tokens: string[]
  /** Answer every request with this status (no receiver) while set. */
  fixedStatus: number | undefined
  /** Tokens answered 401 whatever the receiver thinks (a token replaced at the IdP). */
  revoked: Set<string>
  delivered(): number[]
}

describe('uploader: endpoint errors, token per batch, quiet idle loop', () => {
  let idp: TestIdp
  let api: Api
  let server: ReturnType<typeof createServer>
  before(async () => {
    idp = await startTestIdp()
    const receiver = createReceiver({ issuer: idp.issuer, audience: idp.audience })
    const state: Omit<Api, 'url'> = {
      statuses: [],
      tokens: [],
      fixedStatus: undefined,
      revoked: new Set(),
      delivered: () => receiver.batches.flatMap((b) => b.records.map((r) => (r as { n: number }).n)),
    }
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? ''
      state.tokens.push(token)
      res.on('finish', () => state.statuses.push(res.statusCode))
      const fixed = state.fixedStatus ?? (state.revoked.has(token) ? 401 : undefined)
      if (fixed !== undefined) {
        req.resume()
        res.writeHead(fixed, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: fixed === 401 ? 'invalid_token' : 'nope' }))
        return
      }
      receiver.handler(req, res)
    })
    const port = await listen(server)
    api = Object.assign(state, { url: `http://127.0.0.1:${port}/ingest` })
  })
  after(async () => {
    await closeServer(server)
    await idp.close()
  })

  async function setup(
    t: { after: (fn: () => Promise<void>) => void },
    extra: Partial<UploaderOptions> = {},
  ): Promise<{ spool: Spool; uploader: Uploader; sleeps: number[]; events: UploadEvent[]; dir: string }> {
    api.fixedStatus = undefined
    api.revoked.clear()
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-policy-'))
    const spool = await openSpool(dir)
    const sleeps: number[] = []
    const events: UploadEvent[] = []
    const uploader = new Uploader({
      spool,
      endpoint: api.url,
      deviceId: 'pi-9',
      getAccessToken: () => idp.signAccessToken(),
      batchMaxRecords: 10,
      random: () => 0.5,
      sleep: async (ms) => {
        sleeps.push(ms)
      },
      onEvent: (e) => events.push(e),
      ...extra,
    })
    t.after(async () => {
      await uploader.close()
      await spool.close()
      await rm(dir, { recursive: true, force: true })
    })
    return { spool, uploader, sleeps, events, dir }
  }

  for (const status of [403, 404, 405, 410, 415, 418]) {
    test(`${status}: the endpoint is wrong, not the batch: drain stops at once naming the status, nothing dead-lettered`, async (t) => {
      const { spool, uploader, sleeps, dir } = await setup(t)
      await spool.append(recs(0, 25))
      api.fixedStatus = status
      await assert.rejects(
        uploader.drain(),
        (err) => isEdgeTokenError(err, 'ERR_UNAVAILABLE') && err.message.includes(String(status)),
      )
      assert.equal(sleeps.length, 0, 'no retries: only a person can fix the endpoint')
      const st = await readSpoolStatus(dir)
      assert.equal(st.pending, 25)
      assert.equal(st.deadLettered, 0)
      assert.equal(st.lastUpload?.status, status)
      await assert.rejects(access(join(dir, 'spool', 'dead-letter.ndjson')))
      api.fixedStatus = undefined
      assert.equal((await uploader.drain()).delivered, 25)
    })
  }

  test('400 and 422 answer about the batch: it is dead-lettered and the spool moves on', async (t) => {
    for (const status of [400, 422]) {
      const { spool, uploader } = await setup(t)
      await spool.append(recs(0, 5))
      api.fixedStatus = status
      const result = await uploader.drain()
      assert.equal(result.deadLettered, 5, String(status))
      assert.equal((await spool.stats()).pending, 0)
    }
  })

  test('run(): a 404 endpoint backs off up to the long endpoint cap, reports the status, keeps the batch', async (t) => {
    const controller = new AbortController()
    const { spool, uploader, sleeps, events } = await setup(t, {
      lingerMs: 0,
      backoffBaseMs: 1000,
      backoffCapMs: 10_000,
      endpointBackoffCapMs: 3_600_000,
      sleep: async (ms) => {
        sleeps.push(ms)
        if (sleeps.length >= 14) controller.abort()
      },
    })
    await spool.append(recs(0, 5))
    api.fixedStatus = 404
    await uploader.run({ signal: controller.signal })
    assert.ok(Math.max(...sleeps) > 10_000, `delays ${sleeps.join(',')}`)
    assert.ok(Math.max(...sleeps) <= 3_600_000)
    const retry = events.find((e) => e.type === 'retry')
    assert.equal(retry?.type === 'retry' ? retry.status : 0, 404)
    assert.match(retry?.type === 'retry' ? retry.reason : '', /404/)
    assert.equal(events.filter((e) => e.type === 'dead-letter').length, 0)
    const st = await spool.stats()
    assert.equal(st.pending, 5)
    assert.equal(st.lastUpload?.status, 404)
  })

  test('issue 17: an IdP 503 with Retry-After holds for the batch too, never earlier, plus a spread (RFC 9110 §10.2.3); the back-off grows with the time spent failing', async (t) => {
    const controller = new AbortController()
    let clock = 1_800_000_000_000
    let asked = 0
    const { spool, uploader, sleeps } = await setup(t, {
      lingerMs: 0,
      backoffBaseMs: 1000,
      now: () => clock,
      // The IdP is down: 503 with `Retry-After: 10` twice, then 503 without.
      getAccessToken: async () => {
        asked += 1
        if (asked <= 3) {
          throw new UnavailableError('token request: the IdP answered 503', {
            status: 503,
            retryAfterSeconds: asked <= 2 ? 10 : undefined,
          })
        }
        return idp.signAccessToken()
      },
      sleep: async (ms) => {
        sleeps.push(ms)
        clock += ms
        if (sleeps.length >= 3) controller.abort()
      },
    })
    await spool.append(recs(0, 5))
    await uploader.run({ signal: controller.signal })
    // random 0.5: 10 s + 0.5 * max(5 s, 1 s); 10 s + 0.5 * 12.5 s (failing for 12.5 s); then no
    // Retry-After: 0.5 s + 0.5 * (28.75 s - 0.5 s), the step being the 28.75 s spent failing.
    assert.deepEqual(sleeps, [12_500, 16_250, 14_625])
    assert.equal((await spool.stats()).pending, 5)
  })

  test('drain: a Retry-After that fits the wait budget is waited out even when its spread would not fit (RFC 9110 §10.2.3)', async (t) => {
    let asked = 0
    const { spool, uploader, sleeps } = await setup(t, {
      // The largest spread: 25 s + 12.5 s would pass the 30 s budget.
      random: () => 0.999,
      getAccessToken: async () => {
        asked += 1
        if (asked === 1) {
          throw new UnavailableError('token request: the IdP answered 503', {
            status: 503,
            retryAfterSeconds: 25,
          })
        }
        return idp.signAccessToken()
      },
    })
    await spool.append(recs(0, 5))
    assert.equal((await uploader.drain({ maxWaitMs: 30_000 })).delivered, 5)
    assert.deepEqual(sleeps, [30_000], 'not before the Retry-After, not past the budget')
  })

  test('a token renewed elsewhere is used for the next batch: no 401 across a renewal', async (t) => {
    // The store: what the daemon's renewal timer keeps fresh. The uploader only reads it.
    let stored = await idp.signAccessToken()
    const asked: boolean[] = []
    const { spool, uploader } = await setup(t, {
      batchMaxRecords: 5,
      getAccessToken: async ({ forceRefresh }) => {
        asked.push(forceRefresh)
        return stored
      },
    })
    const mark = api.statuses.length
    await spool.append(recs(0, 5))
    assert.equal((await uploader.drain()).delivered, 5)
    // Renewal: a new token in the store; the old one is no longer accepted.
    api.revoked.add(stored)
    stored = await idp.signAccessToken()
    await spool.append(recs(5, 5))
    assert.equal((await uploader.drain()).delivered, 5)
    assert.deepEqual(api.statuses.slice(mark), [200, 200])
    assert.ok(!asked.includes(true), 'no forced refresh')
  })

  test('401: the current token is tried before a forced refresh; a forced refresh only when it is the same', async (t) => {
    const first = await idp.signAccessToken()
    const second = await idp.signAccessToken()
    const third = await idp.signAccessToken()
    const answers = [first, second]
    const asked: boolean[] = []
    const { spool, uploader } = await setup(t, {
      getAccessToken: async ({ forceRefresh }) => {
        asked.push(forceRefresh)
        if (forceRefresh) return third
        return answers.length > 1 ? (answers.shift() as string) : (answers[0] as string)
      },
    })
    await spool.append(recs(0, 3))
    // Renewed between the read and the POST: the store's token differs, so no refresh is forced.
    api.revoked.add(first)
    assert.equal((await uploader.drain()).delivered, 3)
    assert.deepEqual(asked, [false, false])
    // The store still holds a refused token: then, and only then, a refresh is forced.
    asked.length = 0
    api.revoked.add(second)
    await spool.append(recs(3, 3))
    assert.equal((await uploader.drain()).delivered, 3)
    assert.deepEqual(asked, [false, false, true])
  })

  test('run() stopped just before its idle wait returns at once, not after the idle period', async (t) => {
    const controller = new AbortController()
    // Only a wake-up ends this wait: were the stop missed, run() would never return.
    const sleep = (_ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        if (signal?.aborted) resolve()
        else signal?.addEventListener('abort', () => resolve(), { once: true })
      })
    const { spool, uploader } = await setup(t, { lingerMs: 0, sleep })
    // The stop arrives while the loop looks at the spool, after its `while (!aborted)` check.
    const pollPending = spool.pollPending.bind(spool)
    spool.pollPending = async () => {
      const pending = await pollPending()
      controller.abort()
      return pending
    }
    const running = uploader.run({ signal: controller.signal, idlePollMs: 60_000 })
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('run() did not return after the stop')), 5_000)
    })
    try {
      await Promise.race([running, late])
    } finally {
      clearTimeout(timer)
    }
  })

  test('idle run() takes no lock (no file created in the spool) and an append wakes it at once', async (t) => {
    const controller = new AbortController()
    let spoolDir = ''
    // From the 5th idle poll on, every file event in the spool directory is recorded; at the 30th
    // a marker file is written: inotify reports events in order, so once the marker is seen,
    // everything the polls in between did has been seen too.
    const seen: string[] = []
    let watcher: FSWatcher | undefined
    let markerSeen!: () => void
    const marker = new Promise<void>((resolve) => {
      markerSeen = resolve
    })
    let idlePolls = 0
    const sleep = (_ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        idlePolls++
        if (idlePolls === 5) {
          watcher = watch(spoolDir, (_event, name) => {
            if (name === 'marker') markerSeen()
            else if (name) seen.push(String(name))
          })
        }
        if (idlePolls === 30) writeFileSync(join(spoolDir, 'marker'), '')
        // Busy idle loop until the 30th poll; from then on only a wake-up ends the wait.
        if (idlePolls < 30 || signal?.aborted) {
          setImmediate(resolve)
          return
        }
        signal?.addEventListener('abort', () => resolve(), { once: true })
      })
    const { spool, uploader, dir } = await setup(t, { lingerMs: 0, sleep })
    spoolDir = join(dir, 'spool')
    t.after(async () => watcher?.close())
    const running = uploader.run({ signal: controller.signal, idlePollMs: 60_000 })
    await marker
    assert.deepEqual(seen, [], 'idle polls created or changed files in the spool directory')
    const mark = api.delivered().length
    await spool.append(recs(0, 3))
    for (let i = 0; i < 500 && api.delivered().length < mark + 3; i++) {
      await new Promise((r) => setTimeout(r, 10))
    }
    assert.equal(api.delivered().length, mark + 3, 'the append did not wake the idle loop')
    controller.abort()
    await running
  })
})
