import assert from 'node:assert/strict'
import { appendFile, mkdtemp, open, readdir, readFile, rm, stat, truncate } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { isEdgeTokenError } from '../../../src/errors.js'
import { openSpool, type SpoolIo } from '../../../src/telemetry/spool/spool.js'
import { readSpoolStatus } from '../../../src/telemetry/spool/spool-status.js'

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'edgetoken-spool-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

const recs = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ n: from + i, v: 'x'.repeat(20) }))
const nums = (records: readonly string[]) => records.map((r) => (JSON.parse(r) as { n: number }).n)

async function segments(stateDir: string): Promise<string[]> {
  return (await readdir(join(stateDir, 'spool'))).filter((n) => n.endsWith('.seg')).sort()
}

describe('spool', () => {
  test('appends, reads batches in order, acknowledges, and counts pending', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir)
    t.after(() => spool.close())
    await spool.append(recs(0, 25))
    assert.equal((await spool.stats()).pending, 25)
    const seen: number[] = []
    const seqs: number[] = []
    for (;;) {
      const batch = await spool.readBatch({ maxRecords: 10 })
      if (!batch) break
      seen.push(...nums(batch.records))
      seqs.push(batch.seq)
      await spool.ack(batch)
    }
    assert.deepEqual(
      seen,
      Array.from({ length: 25 }, (_, i) => i),
    )
    assert.deepEqual(seqs, [0, 1, 2])
    assert.equal((await spool.stats()).pending, 0)
    assert.equal((await readSpoolStatus(dir)).pending, 0)
  })

  test('rejects non-objects without writing anything of the call', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir)
    t.after(() => spool.close())
    await assert.rejects(spool.append([{ a: 1 }, [1, 2]]), (err) =>
      isEdgeTokenError(err, 'ERR_INVALID_INPUT'),
    )
    assert.equal((await spool.stats()).pending, 0)
  })

  test('a batch read but not acknowledged comes back with the same id and seq after a restart', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 7))
    const first = await spool.readBatch({ maxRecords: 5 })
    assert.ok(first)
    await spool.close()
    spool = await openSpool(dir)
    t.after(() => spool.close())
    // More records arrive before the restart's first read: the declared batch must not grow.
    await spool.append(recs(7, 10))
    const again = await spool.readBatch({ maxRecords: 50 })
    assert.ok(again)
    assert.equal(again.key, first.key)
    assert.equal(again.seq, first.seq)
    assert.deepEqual(again.records, first.records)
    await spool.ack(again)
    // Until the spool has caught up (the first incomplete batch), batches are cut with the limits
    // in force before the restart: a batch sent just before a crash must come out the same.
    const next = await spool.readBatch({ maxRecords: 50 })
    assert.ok(next)
    assert.equal(next.seq, first.seq + 1)
    assert.deepEqual(nums(next.records), [5, 6, 7, 8, 9])
    assert.notEqual(next.key, first.key)
    await spool.ack(next)
    const third = await spool.readBatch({ maxRecords: 50 })
    assert.deepEqual(nums(third?.records ?? []), [10, 11, 12, 13, 14])
    await spool.ack(third as NonNullable<typeof third>)
    const partial = await spool.readBatch({ maxRecords: 50 })
    assert.deepEqual(nums(partial?.records ?? []), [15, 16])
    await spool.ack(partial as NonNullable<typeof partial>)
    await spool.append(recs(17, 20))
    const fresh = await spool.readBatch({ maxRecords: 50 })
    assert.equal(fresh?.count, 20, 'the new limits apply once the spool has caught up')
  })

  test('the acknowledged position survives a restart', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir, { segmentBytes: 256 })
    await spool.append(recs(0, 40))
    for (let i = 0; i < 3; i++) {
      const b = await spool.readBatch({ maxRecords: 4 })
      assert.ok(b)
      await spool.ack(b)
    }
    await spool.close()
    spool = await openSpool(dir)
    t.after(() => spool.close())
    assert.equal((await spool.stats()).pending, 40 - 12)
    const b = await spool.readBatch({ maxRecords: 4 })
    assert.ok(b)
    assert.equal(nums(b.records)[0], 12)
    assert.equal(b.seq, 3)
  })

  test('concurrent appends share fsyncs (group commit), and every written group is fsynced', async (t) => {
    const dir = await tempDir(t)
    let writes = 0
    let syncs = 0
    const io: SpoolIo = {
      async write(handle, data, position) {
        writes++
        await handle.write(data, 0, data.length, position)
      },
      async sync(handle) {
        syncs++
        await handle.datasync()
      },
    }
    const spool = await openSpool(dir, { io })
    t.after(() => spool.close())
    await Promise.all(Array.from({ length: 200 }, (_, i) => spool.append(recs(i, 1))))
    assert.equal((await spool.stats()).pending, 200)
    assert.ok(writes >= 1, 'the records were written')
    assert.ok(syncs >= writes, `${writes} groups written but only ${syncs} fsyncs`)
    assert.ok(syncs < 20, `expected shared fsyncs, got ${syncs}`)
  })

  test('issue 20: no append is acknowledged before the fsync of its group completes', async (t) => {
    const dir = await tempDir(t)
    let release: () => void = () => {}
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    let syncStarted = false
    let syncDone = false
    const io: SpoolIo = {
      async write(handle, data, position) {
        await handle.write(data, 0, data.length, position)
      },
      async sync(handle) {
        syncStarted = true
        await held // a slow SD card
        await handle.datasync()
        syncDone = true
      },
    }
    const spool = await openSpool(dir, { io })
    t.after(() => spool.close())
    const ackedBeforeSync: number[] = []
    let acked = 0
    const appends = Array.from({ length: 5 }, (_, i) =>
      spool.append(recs(i, 1)).then(() => {
        acked++
        if (!syncDone) ackedBeforeSync.push(i)
      }),
    )
    const deadline = Date.now() + 5000
    while (!syncStarted && acked === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
    assert.ok(syncStarted, 'the written records were never fsynced')
    // Long enough for any acknowledgement that does not wait for the fsync to show.
    await new Promise((r) => setTimeout(r, 50))
    assert.equal(acked, 0, 'an append was acknowledged while its fsync was still running')
    release()
    await Promise.all(appends)
    assert.equal(acked, 5)
    assert.deepEqual(ackedBeforeSync, [], 'acknowledged before the fsync completed')
  })

  test('issue 20: a failed fsync (EIO) fails the append with ERR_IO and takes its records back', async (t) => {
    const dir = await tempDir(t)
    let failing = false
    const io: SpoolIo = {
      async write(handle, data, position) {
        await handle.write(data, 0, data.length, position)
      },
      async sync(handle) {
        if (failing) throw Object.assign(new Error('i/o error'), { code: 'EIO' })
        await handle.datasync()
      },
    }
    const spool = await openSpool(dir, { io })
    t.after(() => spool.close())
    await spool.append(recs(0, 2))
    failing = true
    await assert.rejects(
      spool.append(recs(2, 3)),
      (err) => isEdgeTokenError(err, 'ERR_IO') && /EIO/.test(err.message),
    )
    assert.equal((await readSpoolStatus(dir)).pending, 2, 'records whose fsync failed are not kept')
    failing = false
    await spool.append(recs(5, 1))
    const b = await spool.readBatch({ maxRecords: 100 })
    assert.deepEqual(nums(b?.records ?? []), [0, 1, 5])
  })

  test('a torn tail is cut at open and the rest stays intact', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 10))
    await spool.close()
    const [seg] = await segments(dir)
    assert.ok(seg)
    const path = join(dir, 'spool', seg)
    const size = (await stat(path)).size
    await truncate(path, size - 5) // the last record loses its end
    assert.equal((await readSpoolStatus(dir)).pending, 9)
    spool = await openSpool(dir)
    t.after(() => spool.close())
    assert.equal((await stat(path)).size < size - 5, true)
    await spool.append(recs(10, 1))
    const b = await spool.readBatch({ maxRecords: 100 })
    assert.ok(b)
    assert.deepEqual(nums(b.records), [0, 1, 2, 3, 4, 5, 6, 7, 8, 10])
  })

  test('garbage after the last record (zeros after power loss) is cut, not read as records', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 3))
    await spool.close()
    const [seg] = await segments(dir)
    await appendFile(join(dir, 'spool', seg as string), Buffer.alloc(100))
    spool = await openSpool(dir)
    t.after(() => spool.close())
    await spool.append(recs(3, 2))
    const b = await spool.readBatch({ maxRecords: 100 })
    assert.deepEqual(nums(b?.records ?? []), [0, 1, 2, 3, 4])
  })

  test('a damaged record inside an older segment: the rest of that segment is skipped and counted, no stall', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir, { segmentBytes: 256 })
    for (let i = 0; i < 10; i++) await spool.append(recs(i * 4, 4))
    await spool.close()
    const segs = await segments(dir)
    assert.ok(segs.length > 3)
    const firstSeg = segs[0] as string
    const secondStart = Number((segs[1] as string).slice(0, 20))
    // Flip one byte in the second record of the first segment (bit rot).
    const handle = await open(join(dir, 'spool', firstSeg), 'r+')
    const frame = 8 + Buffer.byteLength(JSON.stringify(recs(0, 1)[0]))
    await handle.write(Buffer.from('#'), 0, 1, frame + 12)
    await handle.close()
    spool = await openSpool(dir)
    t.after(() => spool.close())
    const seen: number[] = []
    for (;;) {
      const b = await spool.readBatch({ maxRecords: 3 })
      if (!b) break
      seen.push(...nums(b.records))
      await spool.ack(b)
    }
    const expected = [0, ...Array.from({ length: 40 - secondStart }, (_, i) => secondStart + i)]
    assert.deepEqual(seen, expected)
    const stats = await spool.stats()
    assert.equal(stats.dropped, secondStart - 1)
    assert.equal(stats.pending, 0)
  })

  test('an acknowledged position beyond the data (lost files) never reuses a batch id', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir, { segmentBytes: 256 })
    for (let i = 0; i < 5; i++) await spool.append(recs(i * 4, 4))
    const keys = new Set<string>()
    for (;;) {
      const b = await spool.readBatch({ maxRecords: 4 })
      if (!b) break
      keys.add(b.key)
      await spool.ack(b)
    }
    await spool.close()
    // The card loses the newest segments; the state file still says 20 records were delivered.
    const segs = await segments(dir)
    for (const seg of segs.slice(1)) await rm(join(dir, 'spool', seg))
    spool = await openSpool(dir)
    t.after(() => spool.close())
    await spool.append(recs(100, 4))
    const again = await spool.readBatch({ maxRecords: 4 })
    assert.ok(again)
    assert.deepEqual(nums(again.records), [100, 101, 102, 103])
    assert.ok(!keys.has(again.key), `batch id ${again.key} was used before`)
    assert.ok(again.start >= 20, 'new records took indexes the API has already seen')
  })

  test('when full, the oldest records are dropped and counted', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir, { maxBytes: 64 * 1024, segmentBytes: 4096 })
    t.after(() => spool.close())
    for (let i = 0; i < 40; i++) await spool.append(recs(i * 100, 100))
    const stats = await spool.stats()
    assert.ok(stats.bytes <= 64 * 1024, `bytes ${stats.bytes}`)
    assert.ok(stats.dropped > 0)
    assert.equal(stats.pending + stats.dropped, 4000)
    const status = await readSpoolStatus(dir)
    assert.equal(status.dropped, stats.dropped)
    assert.equal(status.pending, stats.pending)
    const b = await spool.readBatch({ maxRecords: 1 })
    assert.deepEqual(nums(b?.records ?? []), [stats.dropped])
  })

  test('disk full: the append fails with ERR_IO, nothing of it stays on disk, the spool recovers', async (t) => {
    const dir = await tempDir(t)
    let failing = false
    const io: SpoolIo = {
      async write(handle, data, position) {
        if (failing) {
          // Half of the data reaches the file, then the disk is full.
          await handle.write(data, 0, Math.floor(data.length / 2), position)
          throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })
        }
        await handle.write(data, 0, data.length, position)
      },
      sync: (handle) => handle.datasync(),
    }
    const spool = await openSpool(dir, { io })
    t.after(() => spool.close())
    await spool.append(recs(0, 5))
    failing = true
    await assert.rejects(
      spool.append(recs(5, 5)),
      (err) => isEdgeTokenError(err, 'ERR_IO') && /disk full/.test(err.message),
    )
    assert.equal((await readSpoolStatus(dir)).pending, 5)
    failing = false
    await spool.append(recs(10, 1))
    const b = await spool.readBatch({ maxRecords: 100 })
    assert.deepEqual(nums(b?.records ?? []), [0, 1, 2, 3, 4, 10])
  })

  test('dead-lettered batches are kept with the reason and counted', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir)
    t.after(() => spool.close())
    await spool.append(recs(0, 3))
    const b = await spool.readBatch()
    assert.ok(b)
    await spool.deadLetter(b, { status: 400, message: 'invalid_request: records must be objects' })
    const status = await readSpoolStatus(dir)
    assert.equal(status.deadLettered, 3)
    assert.equal(status.pending, 0)
    const line = JSON.parse(
      (await readFile(join(dir, 'spool', 'dead-letter.ndjson'), 'utf8')).trim(),
    ) as Record<string, unknown>
    assert.equal(line.status, 400)
    assert.equal(line.batch_id, b.key)
    assert.equal((line.records as unknown[]).length, 3)
  })

  test('dead-letter rotation counts the records of the generation it deletes as dropped', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir)
    t.after(() => spool.close())
    const file = join(dir, 'spool', 'dead-letter.ndjson')
    // An older generation holding 7 records, and a current file past the 8 MiB rotation size.
    const entry = (n: number) => `${JSON.stringify({ status: 400, records: recs(0, n) })}\n`
    await appendFile(`${file}.1`, entry(4) + entry(3))
    await appendFile(
      file,
      `${JSON.stringify({ status: 400, records: [{ pad: 'x'.repeat(8 * 1024 * 1024) }] })}\n`,
    )
    await spool.append(recs(0, 2))
    const b = await spool.readBatch()
    assert.ok(b)
    await spool.deadLetter(b, { status: 422, message: 'invalid' })
    const status = await readSpoolStatus(dir)
    assert.equal(status.dropped, 7, 'records rotated away are counted, not silently lost')
    assert.equal((await spool.stats()).dropped, 7)
  })

  test('an append over half the bound is a capacity error (ERR_IO), not invalid input', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir, { maxBytes: 64 * 1024 })
    t.after(() => spool.close())
    assert.equal(spool.maxAppendBytes, 16 * 1024)
    await assert.rejects(
      spool.append([{ big: 'x'.repeat(40 * 1024) }]),
      (err) => isEdgeTokenError(err, 'ERR_IO') && err.category !== 'config',
    )
  })

  test('only one uploader at a time', async (t) => {
    const dir = await tempDir(t)
    const a = await openSpool(dir)
    const b = await openSpool(dir)
    t.after(() => Promise.all([a.close(), b.close()]).then(() => {}))
    await a.append(recs(0, 1))
    assert.ok(await a.readBatch())
    await assert.rejects(b.readBatch(), (err) => isEdgeTokenError(err, 'ERR_BUSY'))
    await b.append(recs(1, 1))
    assert.equal((await a.stats()).pending, 2)
  })

  test('a released upload lock passes to another uploader, and the first one then resumes where it left off', async (t) => {
    const dir = await tempDir(t)
    const daemon = await openSpool(dir)
    const cli = await openSpool(dir, { uploadLockWaitMs: 5_000 })
    t.after(() => Promise.all([daemon.close(), cli.close()]).then(() => {}))
    await daemon.append(recs(0, 3))
    const first = await daemon.readBatch({ maxRecords: 2 })
    assert.deepEqual(nums(first?.records ?? []), [0, 1])
    // The CLI waits for the lock: the daemon acknowledges, then releases it.
    const waiting = cli.readBatch({ maxRecords: 2 })
    await daemon.ack(first as NonNullable<typeof first>)
    await daemon.releaseReader()
    const second = await waiting
    assert.deepEqual(nums(second?.records ?? []), [2])
    assert.equal(second?.seq, (first?.seq ?? 0) + 1)
    // The daemon cannot read while the CLI holds the lock...
    await assert.rejects(daemon.readBatch(), (err) => isEdgeTokenError(err, 'ERR_BUSY'))
    await cli.ack(second as NonNullable<typeof second>)
    await cli.releaseReader()
    // ...and afterwards starts from the CLI's position: nothing is read twice.
    await daemon.append(recs(3, 1))
    const third = await daemon.readBatch()
    assert.deepEqual(nums(third?.records ?? []), [3])
    assert.equal(third?.seq, (second?.seq ?? 0) + 1)
    assert.equal((await daemon.stats()).pending, 1)
  })

  test('waiting for the upload lock ends with ERR_BUSY after the bound, or ERR_CANCELLED on the signal', async (t) => {
    const dir = await tempDir(t)
    const holder = await openSpool(dir)
    await holder.append(recs(0, 1))
    assert.ok(await holder.readBatch())
    const bounded = await openSpool(dir, { uploadLockWaitMs: 200 })
    const controller = new AbortController()
    const cancelled = await openSpool(dir, { uploadLockWaitMs: 60_000, signal: controller.signal })
    t.after(() => Promise.all([holder.close(), bounded.close(), cancelled.close()]).then(() => {}))
    await assert.rejects(bounded.readBatch(), (err) => isEdgeTokenError(err, 'ERR_BUSY'))
    const waiting = cancelled.readBatch()
    setTimeout(() => controller.abort(), 100)
    await assert.rejects(waiting, (err) => isEdgeTokenError(err, 'ERR_CANCELLED'))
  })

  test('fully delivered segments are deleted', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir, { segmentBytes: 512 })
    t.after(() => spool.close())
    for (let i = 0; i < 10; i++) await spool.append(recs(i * 5, 5))
    assert.ok((await segments(dir)).length > 3)
    for (;;) {
      const b = await spool.readBatch({ maxRecords: 7 })
      if (!b) break
      await spool.ack(b)
    }
    assert.equal((await segments(dir)).length, 1)
    assert.equal((await spool.stats()).pending, 0)
  })
})
