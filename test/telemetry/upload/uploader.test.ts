import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { isEdgeTokenError } from '../../../src/errors.js'
import { openSpool, type Spool } from '../../../src/telemetry/spool/spool.js'
import { readSpoolStatus } from '../../../src/telemetry/spool/spool-status.js'
import { type UploadEvent, Uploader, type UploaderOptions } from '../../../src/telemetry/upload/uploader.js'
import { startTestApi, type TestApi } from '../../support/api.js'
import { startTestIdp, type TestIdp } from '../../support/idp.js'
import { closeServer, listen } from '../../support/net.js'

const recs = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ n: from + i, t: 'reading' }))

/** A request as the uploader sent it, seen on the wire by {@link startWireRecorder}. */
interface WireRequest {
  idempotencyKey: string | undefined
  body: { device_id: string; batch_id: string; seq: number; records: { n: number }[] }
  /** The API's status, or 'lost' when the recorder dropped the answer. */
  status: number | 'lost'
}

/**
 * A pass-through in front of the test API that records each request body the uploader sends; with
 * `loseFirstAnswer`, the first request reaches the API (which stores the batch) but its answer is
 * cut off, as when the gateway dies or the link drops before the acknowledgement.
 */
async function startWireRecorder(
  target: string,
  options: { loseFirstAnswer?: boolean } = {},
): Promise<{ url: string; sent: WireRequest[]; close(): Promise<void> }> {
  const sent: WireRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      void (async () => {
        const text = Buffer.concat(chunks).toString('utf8')
        const key = req.headers['idempotency-key']
        const headers: Record<string, string> = {}
        for (const name of ['authorization', 'content-type', 'idempotency-key']) {
          const value = req.headers[name]
          if (typeof value === 'string') headers[name] = value
        }
        const upstream = await fetch(target, { method: 'POST', headers, body: text })
        const answer = await upstream.text()
        const lose = options.loseFirstAnswer === true && sent.length === 0
        sent.push({
          idempotencyKey: typeof key === 'string' ? key : undefined,
          body: JSON.parse(text) as WireRequest['body'],
          status: lose ? 'lost' : upstream.status,
        })
        if (lose) {
          req.socket.destroy()
          return
        }
        const out: Record<string, string> = {}
        for (const name of ['content-type', 'retry-after', 'www-authenticate']) {
          const value = upstream.headers.get(name)
          if (value !== null) out[name] = value
        }
        res.writeHead(upstream.status, out).end(answer)
      })()
    })
  })
  const port = await listen(server)
  return { url: `http://127.0.0.1:${port}/ingest`, sent, close: () => closeServer(server) }
}

describe('uploader against the reference API', () => {
  let idp: TestIdp
  let api: TestApi
  before(async () => {
    idp = await startTestIdp()
    api = await startTestApi({ issuer: idp.issuer, audience: idp.audience })
  })
  after(async () => {
    await api.close()
    await idp.close()
  })

  async function setup(
    t: { after: (fn: () => Promise<void>) => void },
    extra: Partial<UploaderOptions> = {},
  ): Promise<{
    spool: Spool
    uploader: Uploader
    sleeps: number[]
    tokens: boolean[]
    events: UploadEvent[]
    dir: string
  }> {
    await api.setMode('up')
    const dir = await mkdtemp(join(tmpdir(), 'edgetoken-up-'))
    const spool = await openSpool(dir)
    const sleeps: number[] = []
    const tokens: boolean[] = []
    const events: UploadEvent[] = []
    const uploader = new Uploader({
      spool,
      endpoint: api.url,
      deviceId: 'pi-7',
      getAccessToken: async ({ forceRefresh }) => {
        tokens.push(forceRefresh)
        return idp.signAccessToken()
      },
      batchMaxRecords: 100,
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
    return { spool, uploader, sleeps, tokens, events, dir }
  }

  const deliveredFor = (deviceId: string, from: number) =>
    api.receiver.batches.slice(from).filter((b) => b.deviceId === deviceId)

  test('API down: drain fails with ERR_UNAVAILABLE and keeps everything; API up: all delivered once, in order', async (t) => {
    const { spool, uploader, sleeps } = await setup(t)
    await spool.append(recs(0, 1000))
    const mark = api.receiver.batches.length
    await api.setMode('down')
    await assert.rejects(uploader.drain(), (err) => isEdgeTokenError(err, 'ERR_UNAVAILABLE'))
    assert.equal((await spool.stats()).pending, 1000)
    assert.equal(sleeps.length, 3, 'three back-off waits before giving up')
    assert.ok((sleeps[1] as number) > (sleeps[0] as number), 'back-off grows')
    assert.equal((await spool.stats()).lastUpload?.result, 'unavailable')

    await api.setMode('up')
    const result = await uploader.drain()
    assert.equal(result.delivered, 1000)
    assert.equal((await spool.stats()).pending, 0)
    const batches = deliveredFor('pi-7', mark)
    const numbers = batches.flatMap((b) => b.records.map((r) => (r as { n: number }).n))
    assert.deepEqual(
      numbers,
      Array.from({ length: 1000 }, (_, i) => i),
    )
    const seqs = batches.map((b) => b.seq)
    assert.deepEqual(
      seqs,
      seqs.map((_, i) => (seqs[0] as number) + i),
    )
    for (const b of batches) assert.match(b.batchId, /^pi-7\./)
    assert.equal((await spool.stats()).lastUpload?.result, 'ok')
  })

  test('401 once: retried with the token source current token (another one here), then delivered', async (t) => {
    const { spool, uploader, tokens } = await setup(t)
    await spool.append(recs(0, 5))
    await api.setMode('unauthorized-once')
    const result = await uploader.drain()
    assert.equal(result.delivered, 5)
    // The getter hands out a new token on every call, so no refresh has to be forced.
    assert.deepEqual(tokens, [false, false])
  })

  test('401 twice: stops with ERR_SIGNIN_REQUIRED and the spool intact', async (t) => {
    const { spool, uploader, tokens } = await setup(t, {
      // A token for another API: the receiver answers 401 every time.
      getAccessToken: async ({ forceRefresh }) => {
        tokens.push(forceRefresh)
        return idp.signAccessToken({ aud: idp.otherAudience })
      },
    })
    await spool.append(recs(0, 5))
    await assert.rejects(uploader.drain(), (err) => isEdgeTokenError(err, 'ERR_SIGNIN_REQUIRED'))
    // The current token, another current one after the 401, then one forced refresh.
    assert.deepEqual(tokens, [false, false, true])
    assert.equal((await spool.stats()).pending, 5)
    assert.equal((await spool.stats()).lastUpload?.result, 'signin_required')
  })

  test('503 with Retry-After: waits at least that long, then delivers', async (t) => {
    const { spool, uploader, sleeps } = await setup(t, {
      sleep: async (ms) => {
        sleeps.push(ms)
        await api.setMode('up')
      },
    })
    await spool.append(recs(0, 3))
    await api.setMode('unavailable', { retryAfterSeconds: 7 })
    const result = await uploader.drain()
    assert.equal(result.delivered, 3)
    assert.equal(sleeps.length, 1)
    assert.ok((sleeps[0] as number) >= 7000, `waited ${sleeps[0]} ms`)
  })

  test('a Retry-After beyond the wait budget stops the one-shot drain at once', async (t) => {
    const { spool, uploader, sleeps } = await setup(t)
    await spool.append(recs(0, 3))
    await api.setMode('unavailable', { retryAfterSeconds: 600 })
    await assert.rejects(uploader.drain({ maxWaitMs: 30_000 }), (err) =>
      isEdgeTokenError(err, 'ERR_UNAVAILABLE'),
    )
    assert.equal(sleeps.length, 0)
    assert.equal((await spool.stats()).pending, 3)
  })

  test('captive portal (200 text/html): the batch is kept and the error reported', async (t) => {
    const { spool, uploader } = await setup(t)
    await spool.append(recs(0, 4))
    const mark = api.receiver.batches.length
    await api.setMode('captive-portal')
    await assert.rejects(uploader.drain(), (err) => isEdgeTokenError(err, 'ERR_INVALID_RESPONSE'))
    assert.equal((await spool.stats()).pending, 4)
    assert.equal(api.receiver.batches.length, mark)
    assert.equal((await spool.stats()).lastUpload?.result, 'captive_portal')
    await api.setMode('up')
    assert.equal((await uploader.drain()).delivered, 4)
  })

  test('a batch the API refuses for good (413) goes to the dead-letter file, the rest is delivered', async (t) => {
    const { spool, uploader, events, dir } = await setup(t, {
      batchMaxBytes: 4 * 1024 * 1024,
      batchMaxRecords: 2,
    })
    const big = 'x'.repeat(700 * 1024)
    await spool.append([
      { n: 0, big },
      { n: 1, big },
    ])
    await spool.append(recs(2, 2))
    const result = await uploader.drain()
    assert.equal(result.deadLettered, 2)
    assert.equal(result.delivered, 2)
    assert.equal((await readSpoolStatus(dir)).deadLettered, 2)
    const dead = events.find((e) => e.type === 'dead-letter')
    assert.equal(dead?.type === 'dead-letter' ? dead.status : 0, 413)
    const line = JSON.parse((await readFile(join(dir, 'spool', 'dead-letter.ndjson'), 'utf8')).trim()) as {
      status: number
      records: { n: number }[]
    }
    assert.equal(line.status, 413)
    assert.deepEqual(
      line.records.map((r) => r.n),
      [0, 1],
    )
  })

  test('stop signal: the drain ends promptly, nothing is lost; a re-run repeats the stopped batch with the same batch_id and seq, and nothing else', async (t) => {
    const wire = await startWireRecorder(api.url)
    t.after(() => wire.close())
    const controller = new AbortController()
    const { spool, uploader } = await setup(t, {
      endpoint: wire.url,
      deviceId: 'pi-6',
      batchMaxRecords: 4,
      sleep: async (_ms, signal) => {
        controller.abort()
        assert.ok(signal?.aborted)
      },
    })
    await spool.append(recs(0, 10))
    const mark = api.receiver.batches.length
    await api.setMode('unavailable', { retryAfterSeconds: 1 })
    await assert.rejects(uploader.drain({ signal: controller.signal }), (err) =>
      isEdgeTokenError(err, 'ERR_CANCELLED'),
    )
    assert.equal((await spool.stats()).pending, 10)
    assert.equal(wire.sent.length, 1, 'one attempt before the stop')
    const stopped = wire.sent[0] as WireRequest
    assert.equal(stopped.status, 503)
    assert.deepEqual(
      stopped.body.records.map((r) => r.n),
      [0, 1, 2, 3],
    )

    // The re-run: another uploader over the same spool, the API back up.
    await api.setMode('up')
    const rerun = new Uploader({
      spool,
      endpoint: wire.url,
      deviceId: 'pi-6',
      getAccessToken: () => idp.signAccessToken(),
      batchMaxRecords: 4,
    })
    t.after(() => rerun.close())
    assert.equal((await rerun.drain()).delivered, 10)
    const [again, ...rest] = wire.sent.slice(1)
    assert.ok(again)
    assert.equal(again.status, 200)
    assert.equal(again.idempotencyKey, stopped.idempotencyKey)
    assert.deepEqual(again.body, stopped.body, 'the same batch: batch_id, seq and records')
    assert.equal(rest.length, 2)
    for (const [i, r] of rest.entries()) {
      assert.equal(r.status, 200)
      assert.notEqual(r.body.batch_id, stopped.body.batch_id)
      assert.equal(r.idempotencyKey, r.body.batch_id)
      assert.equal(r.body.seq, stopped.body.seq + 1 + i)
    }
    assert.equal(new Set(wire.sent.map((r) => r.body.batch_id)).size, 3, 'only the stopped batch repeats')
    assert.deepEqual(
      deliveredFor('pi-6', mark).flatMap((b) => b.records.map((r) => (r as { n: number }).n)),
      Array.from({ length: 10 }, (_, i) => i),
      'every record delivered once',
    )
  })

  test('run(): the daemon loop delivers what arrives, backs off exponentially to the cap while the API is down, honours Retry-After plus a spread (RFC 9110 §10.2.3), starts over after a success, stops on the signal', async (t) => {
    const controller = new AbortController()
    // Every wait the loop asks for; it really waits at most 20 ms, so the loop keeps moving.
    const requested: number[] = []
    const { spool, uploader } = await setup(t, {
      lingerMs: 0,
      backoffBaseMs: 1000,
      backoffCapMs: 4000,
      sleep: (ms, signal) => {
        requested.push(ms)
        return new Promise((resolve) => {
          const timer = setTimeout(resolve, Math.min(ms, 20))
          signal?.addEventListener('abort', () => {
            clearTimeout(timer)
            resolve()
          })
        })
      },
    })
    // Idle polls ask for 10 ms; back-off waits for 750 ms or more.
    const backoff = () => requested.filter((ms) => ms >= 500)
    const mark = api.receiver.batches.length
    const running = uploader.run({ signal: controller.signal, idlePollMs: 10 })
    // A failed assertion must still stop the loop, or the file never ends.
    t.after(() => controller.abort())
    await spool.append(recs(0, 150))
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 500 && !pred(); i++) await new Promise((r) => setTimeout(r, 10))
      assert.ok(pred())
    }
    const mine = () => api.receiver.batches.slice(mark).filter((b) => b.deviceId === 'pi-7')
    const delivered = () => mine().reduce((n, b) => n + b.records.length, 0)
    await until(() => delivered() === 150)
    assert.deepEqual(backoff(), [], 'no back-off while the API answers')

    // Down (503, Retry-After: 0): full jitter above base / 2; with random 0.5 each wait is
    // base / 4 + step / 2, the step min(cap, base * 2^n).
    await api.setMode('unavailable', { retryAfterSeconds: 0 })
    await spool.append(recs(150, 10))
    await until(() => backoff().length >= 5)
    assert.deepEqual(backoff().slice(0, 5), [750, 1250, 2250, 2250, 2250])
    assert.equal((await spool.stats()).pending, 10)

    // Retry-After, never earlier, plus a spread of up to the step (cap 4 s): 5 s + 0.5 * 4 s.
    await api.setMode('unavailable', { retryAfterSeconds: 5 })
    await until(() => backoff().includes(7000))
    const beforeRetryAfter = backoff().slice(0, backoff().indexOf(7000))
    assert.ok(
      beforeRetryAfter.slice(2).every((ms) => ms === 2250),
      String(beforeRetryAfter),
    )

    await api.setMode('up')
    await until(() => delivered() === 160)

    // Down again after a success: the back-off starts again from its first step.
    const seen = backoff().length
    await api.setMode('unavailable', { retryAfterSeconds: 0 })
    await spool.append(recs(160, 5))
    await until(() => backoff().length >= seen + 2)
    assert.deepEqual(backoff().slice(seen, seen + 2), [750, 1250])
    await api.setMode('up')
    await until(() => delivered() === 165)

    controller.abort()
    await running
    const numbers = mine().flatMap((b) => b.records.map((r) => (r as { n: number }).n))
    assert.deepEqual(
      numbers,
      Array.from({ length: 165 }, (_, i) => i),
    )
  })

  test('run(): idle, it gives up the upload lock so `upload` can drain; while another uploads, it waits', async (t) => {
    const controller = new AbortController()
    const shortSleep = (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(ms, 20))
        signal?.addEventListener('abort', () => {
          clearTimeout(timer)
          resolve()
        })
      })
    const { spool, uploader, dir } = await setup(t, { lingerMs: 0, sleep: shortSleep, deviceId: 'pi-8' })
    const mark = api.receiver.batches.length
    const mine = () =>
      api.receiver.batches
        .slice(mark)
        .filter((b) => b.deviceId === 'pi-8')
        .flatMap((b) => b.records.map((r) => (r as { n: number }).n))
    const until = async (pred: () => boolean) => {
      for (let i = 0; i < 500 && !pred(); i++) await new Promise((r) => setTimeout(r, 10))
      assert.ok(pred())
    }
    const running = uploader.run({ signal: controller.signal, idlePollMs: 10 })
    await spool.append(recs(0, 5))
    await until(() => mine().length === 5)

    // `edgetoken upload` in another process: it gets the lock from the idle daemon.
    const other = await openSpool(dir, { uploadLockWaitMs: 5_000 })
    const cli = new Uploader({
      spool: other,
      endpoint: api.url,
      deviceId: 'pi-8',
      getAccessToken: () => idp.signAccessToken(),
    })
    t.after(async () => {
      await cli.close()
      await other.close()
    })
    await other.append(recs(5, 5))
    await cli.drain()
    await until(() => mine().length === 10)

    // The other process holds the lock (a batch read, not yet acknowledged): the daemon waits.
    await other.append(recs(10, 1))
    const held = await other.readBatch()
    assert.ok(held)
    await spool.append(recs(11, 2))
    await new Promise((r) => setTimeout(r, 200))
    assert.equal(mine().length, 10, 'nothing was sent while the other process held the lock')
    // It lets go (its upload failed, say): the daemon delivers everything, once, in order.
    await other.releaseReader()
    await until(() => mine().length === 13)
    controller.abort()
    await running
    assert.deepEqual(
      mine(),
      Array.from({ length: 13 }, (_, i) => i),
    )
  })

  test('the batch whose acknowledgement was lost is re-sent after a restart with the same Idempotency-Key, batch_id, seq and records, and stored once', async (t) => {
    const { spool, dir } = await setup(t)
    await spool.append(recs(0, 3))
    // First process: its uploader sends the batch, the API stores it, the answer never arrives.
    const wire = await startWireRecorder(api.url, { loseFirstAnswer: true })
    t.after(() => wire.close())
    const mark = api.receiver.batches.length
    const first = new Uploader({
      spool,
      endpoint: wire.url,
      deviceId: 'pi-9',
      getAccessToken: () => idp.signAccessToken(),
    })
    await assert.rejects(first.drain({ maxRetries: 0 }), (err) => isEdgeTokenError(err, 'ERR_UNAVAILABLE'))
    await first.close()
    assert.equal(api.receiver.batches.length - mark, 1, 'the API stored the batch')
    assert.equal((await spool.stats()).pending, 3, 'not acknowledged, so kept')
    await spool.close()

    // Second process: same spool, new uploader; more records arrived meanwhile.
    const again = await openSpool(dir)
    t.after(() => again.close())
    await again.append(recs(3, 2))
    const uploader = new Uploader({
      spool: again,
      endpoint: wire.url,
      deviceId: 'pi-9',
      getAccessToken: () => idp.signAccessToken(),
    })
    t.after(() => uploader.close())
    assert.equal((await uploader.drain()).delivered, 5)

    assert.equal(wire.sent.length, 3)
    const [lost, replay, next] = wire.sent as [WireRequest, WireRequest, WireRequest]
    assert.equal(lost.status, 'lost')
    assert.deepEqual(
      lost.body.records.map((r) => r.n),
      [0, 1, 2],
    )
    assert.equal(lost.idempotencyKey, lost.body.batch_id)
    assert.equal(replay.status, 200)
    assert.equal(replay.idempotencyKey, lost.idempotencyKey)
    assert.deepEqual(replay.body, lost.body, 'the same batch_id, seq and records')
    assert.equal(next.status, 200)
    assert.notEqual(next.body.batch_id, lost.body.batch_id)
    assert.equal(next.body.seq, lost.body.seq + 1)
    assert.deepEqual(
      next.body.records.map((r) => r.n),
      [3, 4],
    )
    const stored = deliveredFor('pi-9', mark)
    assert.deepEqual(
      stored.flatMap((b) => b.records.map((r) => (r as { n: number }).n)),
      [0, 1, 2, 3, 4],
      'the replayed batch was deduplicated by the API',
    )
  })
})
