import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { EdgeTokenError, StoreError } from '../../src/errors.js'
import { acquireFileLock } from '../../src/store/lock.js'

const root = mkdtempSync(join(tmpdir(), 'edgetoken-lock-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const lockPath = () => join(root, `l${n++}.lock`)

function deadPid(): number {
  // A process that has exited: its pid is free (reuse within the test is vanishingly unlikely).
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

describe('store lock file', () => {
  test('excludes a second holder until released', async () => {
    const path = lockPath()
    const first = await acquireFileLock(path)
    let secondHeld = false
    const second = acquireFileLock(path).then((l) => {
      secondHeld = true
      return l
    })
    await new Promise((r) => setTimeout(r, 150))
    assert.equal(secondHeld, false)
    await first.release()
    const lock = await second
    assert.equal(secondHeld, true)
    await lock.release()
    assert.equal(existsSync(path), false)
  })

  test('a lock whose owner died is recovered at once', async () => {
    const path = lockPath()
    writeFileSync(path, JSON.stringify({ pid: deadPid(), at: Date.now(), nonce: 'dead' }))
    const started = Date.now()
    const lock = await acquireFileLock(path, { timeoutMs: 5000 })
    assert.ok(Date.now() - started < 2000)
    await lock.release()
  })

  test('a lock older than the bound is recovered even if its pid is alive', async () => {
    const path = lockPath()
    writeFileSync(path, JSON.stringify({ pid: process.pid, at: 0, nonce: 'old' }))
    const old = new Date(Date.now() - 120_000)
    utimesSync(path, old, old)
    const lock = await acquireFileLock(path, { staleMs: 60_000, timeoutMs: 5000 })
    await lock.release()
  })

  test('an unreadable (foreign) lock is recovered only by age', async () => {
    const path = lockPath()
    writeFileSync(path, '')
    await assert.rejects(
      acquireFileLock(path, { timeoutMs: 200 }),
      (err: unknown) => err instanceof StoreError,
    )
    const old = new Date(Date.now() - 120_000)
    utimesSync(path, old, old)
    const lock = await acquireFileLock(path, { timeoutMs: 2000 })
    await lock.release()
  })

  test('waiting for a live lock gives up with a store error, or stops on the signal', async () => {
    const path = lockPath()
    const held = await acquireFileLock(path)
    await assert.rejects(
      acquireFileLock(path, { timeoutMs: 200 }),
      (err: unknown) =>
        err instanceof StoreError && err.code === 'ERR_IO' && /locked by process/.test(err.message),
    )
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 100)
    await assert.rejects(
      acquireFileLock(path, { signal: controller.signal }),
      (err: unknown) => err instanceof EdgeTokenError && err.code === 'ERR_CANCELLED',
    )
    await held.release()
  })

  test('release does not remove a lock that is no longer ours', async () => {
    const path = lockPath()
    const lock = await acquireFileLock(path)
    writeFileSync(path, JSON.stringify({ pid: process.pid, at: Date.now(), nonce: 'someone-else' }))
    await lock.release()
    assert.equal(existsSync(path), true)
    rmSync(path)
  })

  test('leaves no temporary files behind', async () => {
    const path = lockPath()
    await Promise.all(
      Array.from({ length: 5 }, async () => {
        const l = await acquireFileLock(path)
        await new Promise((r) => setTimeout(r, 5))
        await l.release()
      }),
    )
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes('.tmp-')),
      [],
    )
  })
})
