import assert from 'node:assert/strict'
import {
  chmod,
  lchown,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  truncate,
  writeFile,
} from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { isEdgeTokenError } from '../../../src/errors.js'
import { openSpool, type Spool } from '../../../src/telemetry/spool/spool.js'
import { readSpoolStatus } from '../../../src/telemetry/spool/spool-status.js'

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'edgetoken-spool-integrity-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Records of equal size, so frame offsets are easy to compute. */
const recs = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => ({ n: from + i, v: 'x'.repeat(20) }))
const nums = (records: readonly string[]) => records.map((r) => (JSON.parse(r) as { n: number }).n)
/** Bytes of one frame of `recs` with a one-digit `n`: 8-byte header + JSON. */
const FRAME = 8 + Buffer.byteLength(JSON.stringify(recs(0, 1)[0]))

async function segments(stateDir: string): Promise<string[]> {
  return (await readdir(join(stateDir, 'spool'))).filter((n) => n.endsWith('.seg')).sort()
}

async function flipBit(path: string, offset: number): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    const b = Buffer.alloc(1)
    await handle.read(b, 0, 1, offset)
    b[0] = (b[0] as number) ^ 0x04
    await handle.write(b, 0, 1, offset)
  } finally {
    await handle.close()
  }
}

async function drain(spool: Spool): Promise<number[]> {
  const seen: number[] = []
  for (;;) {
    const b = await spool.readBatch({ maxRecords: 3 })
    if (!b) break
    seen.push(...nums(b.records))
    await spool.ack(b)
  }
  await spool.flush()
  return seen
}

describe('spool integrity (issue 11)', () => {
  test('issue 11 #6: one flipped bit in the newest segment loses that record only; the segment is moved aside, not cut', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 8))
    await spool.close()
    const [seg] = await segments(dir)
    assert.ok(seg)
    const path = join(dir, 'spool', seg)
    // Record 3's payload: one bit of its JSON text.
    await flipBit(path, 3 * FRAME + 8 + 5)
    const damaged = await readFile(path)

    const warnings: string[] = []
    spool = await openSpool(dir, { onWarning: (line) => warnings.push(line) })
    t.after(() => spool.close())
    assert.equal(warnings.length, 1, 'one line says what happened')
    assert.match(warnings[0] as string, /damaged at byte \d+: 1 record lost .*4 after the damage kept/)
    const aside = await readdir(join(dir, 'spool', 'corrupt'))
    assert.equal(aside.length, 1)
    assert.deepEqual(await readFile(join(dir, 'spool', 'corrupt', aside[0] as string)), damaged)
    assert.equal((await stat(path)).size, 3 * FRAME, 'the records before the damage stay in place')

    await spool.append(recs(8, 2))
    assert.deepEqual(await drain(spool), [0, 1, 2, 4, 5, 6, 7, 8, 9])
    const stats = await spool.stats()
    assert.equal(stats.dropped, 1, 'the lost record is counted')
    assert.equal(stats.pending, 0)
    assert.equal((await readSpoolStatus(dir)).dropped, 1)
  })

  test('issue 11 #6: a damaged length field resynchronises on the next valid frame', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 6))
    await spool.close()
    const [seg] = await segments(dir)
    // The high byte of record 2's length: the frame now claims more than 1 MiB.
    await flipBit(join(dir, 'spool', seg as string), 2 * FRAME + 3)
    spool = await openSpool(dir, { onWarning: () => {} })
    t.after(() => spool.close())
    assert.deepEqual(await drain(spool), [0, 1, 3, 4, 5])
    assert.equal((await spool.stats()).dropped, 1)
  })

  test('issue 11 #6: two damaged places: each loses its record, every run between them is kept', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 8))
    await spool.close()
    const [seg] = await segments(dir)
    await flipBit(join(dir, 'spool', seg as string), 2 * FRAME + 8 + 5)
    await flipBit(join(dir, 'spool', seg as string), 5 * FRAME + 8 + 5)
    spool = await openSpool(dir, { onWarning: () => {} })
    t.after(() => spool.close())
    // The runs after the damage keep their record numbers in their segment names.
    assert.deepEqual(await segments(dir), [seg, '00000000000000000003.seg', '00000000000000000006.seg'])
    assert.deepEqual(await drain(spool), [0, 1, 3, 4, 6, 7])
    assert.equal((await spool.stats()).dropped, 2)
  })

  test('issue 11 #6: damage in records already delivered costs nothing and keeps the reader in place', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 8))
    const first = await spool.readBatch({ maxRecords: 5 })
    assert.deepEqual(nums(first?.records ?? []), [0, 1, 2, 3, 4])
    await spool.ack(first as NonNullable<typeof first>)
    await spool.close()
    const [seg] = await segments(dir)
    await flipBit(join(dir, 'spool', seg as string), 1 * FRAME + 8 + 5)
    spool = await openSpool(dir, { onWarning: () => {} })
    t.after(() => spool.close())
    await spool.append(recs(8, 1))
    assert.deepEqual(await drain(spool), [5, 6, 7, 8], 'nothing re-sent, nothing skipped')
    assert.equal((await spool.stats()).dropped, 0, 'the damaged record had been delivered')
  })

  test('issue 11 #6: a torn tail (partial frame, partial header) is still cut silently', async (t) => {
    for (const cut of [FRAME - 5, 3]) {
      const dir = await tempDir(t)
      let spool = await openSpool(dir)
      await spool.append(recs(0, 4))
      await spool.close()
      const [seg] = await segments(dir)
      const path = join(dir, 'spool', seg as string)
      await truncate(path, 3 * FRAME + cut)
      const warnings: string[] = []
      spool = await openSpool(dir, { onWarning: (line) => warnings.push(line) })
      assert.deepEqual(warnings, [])
      assert.equal((await stat(path)).size, 3 * FRAME)
      await assert.rejects(stat(join(dir, 'spool', 'corrupt')), { code: 'ENOENT' })
      await spool.append(recs(4, 1))
      assert.deepEqual(await drain(spool), [0, 1, 2, 4])
      assert.equal((await spool.stats()).dropped, 0)
      await spool.close()
    }
  })

  test('issue 11 #6: a bad last frame with nothing valid after it is a torn tail', async (t) => {
    const dir = await tempDir(t)
    let spool = await openSpool(dir)
    await spool.append(recs(0, 4))
    await spool.close()
    const [seg] = await segments(dir)
    await flipBit(join(dir, 'spool', seg as string), 3 * FRAME + 8 + 5)
    const warnings: string[] = []
    spool = await openSpool(dir, { onWarning: (line) => warnings.push(line) })
    t.after(() => spool.close())
    assert.deepEqual(warnings, [])
    assert.deepEqual(await drain(spool), [0, 1, 2])
  })

  test('issue 11 #8: a record nested deeper than 64 levels is invalid input, not a stack overflow', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir)
    t.after(() => spool.close())
    const nest = (depth: number) => {
      let o: Record<string, unknown> = { leaf: 1 }
      for (let i = 1; i < depth; i++) o = { a: o }
      return o
    }
    for (const depth of [65, 100_000]) {
      await assert.rejects(
        spool.append([{ ok: 1 }, nest(depth)]),
        (err) =>
          isEdgeTokenError(err, 'ERR_INVALID_INPUT') && /record 2 is nested deeper than 64/.test(err.message),
      )
    }
    await spool.append([nest(64)])
    assert.equal((await spool.stats()).pending, 1)
  })

  test('issue 11 #3: a dead-letter file symlinked elsewhere is refused (exit 6), its target untouched', async (t) => {
    const dir = await tempDir(t)
    const spool = await openSpool(dir)
    t.after(() => spool.close())
    const victim = join(dir, 'victim')
    await writeFile(victim, 'root-owned bytes\n')
    await symlink(victim, join(dir, 'spool', 'dead-letter.ndjson'))
    await spool.append(recs(0, 2))
    const b = await spool.readBatch()
    assert.ok(b)
    await assert.rejects(
      spool.deadLetter(b, { status: 400, message: 'invalid_request' }),
      (err) => isEdgeTokenError(err, 'ERR_STORE_UNREADABLE') && /symbolic link.*\(ELOOP\)$/.test(err.message),
    )
    assert.equal(await readFile(victim, 'utf8'), 'root-owned bytes\n')
  })

  test('issue 11 #3: a spool directory that is a symbolic link, or writable by others, is refused (exit 2)', async (t) => {
    const dir = await tempDir(t)
    const elsewhere = join(dir, 'elsewhere')
    await mkdir(elsewhere, { mode: 0o700 })
    const state = join(dir, 'state')
    await mkdir(state, { mode: 0o700 })
    await symlink(elsewhere, join(state, 'spool'))
    // Made by another user (nobody): only a link root made is followed, and these tests run as root.
    if (process.getuid?.() === 0) await lchown(join(state, 'spool'), 65534, 65534)
    await assert.rejects(
      openSpool(state),
      (err) =>
        isEdgeTokenError(err, 'ERR_CONFIG') && /spool directory .* is a symbolic link/.test(err.message),
    )
    assert.deepEqual(await readdir(elsewhere), [], 'nothing was written through the link')
    await assert.rejects(readSpoolStatus(state), (err) => isEdgeTokenError(err, 'ERR_STORE_UNREADABLE'))

    const shared = join(dir, 'shared')
    await mkdir(join(shared, 'spool'), { recursive: true, mode: 0o700 })
    await chmod(join(shared, 'spool'), 0o777)
    await assert.rejects(
      openSpool(shared),
      (err) => isEdgeTokenError(err, 'ERR_CONFIG') && /writable by others/.test(err.message),
    )
  })
})
