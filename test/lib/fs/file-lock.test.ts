import assert from 'node:assert/strict'
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { EdgeTokenError, StoreError } from '../../../src/errors.js'
import {
  type AcquireFileLockOptions,
  acquireFileLock,
  currentBootId,
  currentPidNamespace,
  processStartTime,
  withFileLock,
} from '../../../src/lib/fs/file-lock.js'

const ROOT = fileURLToPath(new URL('../../..', import.meta.url))
const root = mkdtempSync(join(tmpdir(), 'edgetoken-lock-'))
after(() => rmSync(root, { recursive: true, force: true }))
let n = 0
const lockPath = () => join(root, `l${n++}.lock`)

// As the token store takes it: its errors are StoreErrors.
const store: AcquireFileLockOptions = {
  what: 'token store',
  ioError: (message, cause) => new StoreError(message, { code: 'ERR_IO', cause }),
}

/** Writes a lock as a holder would: the lock directory with its one owner file. */
function writeLock(
  path: string,
  content: { pid: number; at: number; nonce: string; boot?: string; start?: string; pidns?: string },
  mtime?: Date,
): string {
  mkdirSync(path)
  const owner = join(path, `owner-${content.nonce}`)
  writeFileSync(owner, JSON.stringify(content))
  if (mtime) utimesSync(owner, mtime, mtime)
  return owner
}

function ownerFile(path: string): string {
  const owner = readdirSync(path).find((e) => e.startsWith('owner-'))
  assert.ok(owner, 'the lock has an owner file')
  return join(path, owner)
}

function deadPid(): number {
  // A process that has exited: its pid is free (reuse within the test is vanishingly unlikely).
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

/** Our parent's boot id and start time (a live process that is not us), or undefined (skipped) without /proc. */
function parentIdentity(t: { skip: (message: string) => void }): { boot: string; start: string } | undefined {
  const boot = currentBootId()
  const start = processStartTime(process.ppid)
  if (boot === undefined || start === undefined) {
    t.skip('no /proc on this system')
    return undefined
  }
  return { boot, start }
}

/**
 * Another process that takes the lock (with its heartbeat every `staleMs / 6`) and holds it until
 * killed; `wrapper` runs it through another command (`unshare ...`).
 */
function spawnHolder(
  path: string,
  staleMs: number,
  wrapper: readonly string[] = [],
): { child: ChildProcess; held: Promise<void> } {
  const moduleUrl = new URL('../../../src/lib/fs/file-lock.ts', import.meta.url).href
  const argv = [
    process.execPath,
    '--import',
    'tsx',
    '--input-type=module',
    '-e',
    `const { acquireFileLock } = await import(${JSON.stringify(moduleUrl)})
await acquireFileLock(${JSON.stringify(path)}, { what: 'spool', staleMs: ${staleMs} })
process.stdout.write('held\\n')
setInterval(() => {}, 1000)`,
  ]
  const [command, ...args] = [...wrapper, ...argv] as [string, ...string[]]
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'ignore'], cwd: ROOT })
  const held = new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => d.toString().includes('held') && resolve())
    child.on('exit', () => reject(new Error('the holder exited')))
    child.on('error', reject)
  })
  return { child, held }
}

describe('lock file', () => {
  test('excludes a second holder until released', async () => {
    const path = lockPath()
    const first = await acquireFileLock(path, store)
    let secondHeld = false
    const second = acquireFileLock(path, store).then((l) => {
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
    writeLock(path, { pid: deadPid(), at: Date.now(), nonce: 'dead' })
    const lock = await acquireFileLock(path, { ...store, noWait: true })
    assert.equal(existsSync(join(path, 'owner-dead')), false)
    await lock.release()
    assert.equal(existsSync(path), false)
  })

  test('a lock file of an earlier version whose owner died is recovered at once', async () => {
    const path = lockPath()
    writeFileSync(path, JSON.stringify({ pid: deadPid(), at: Date.now(), nonce: 'dead' }))
    const lock = await acquireFileLock(path, { ...store, noWait: true })
    assert.ok(statSync(path).isDirectory())
    await lock.release()
  })

  test('a lock older than the bound is recovered when its live pid cannot be proven to be the holder', async () => {
    const path = lockPath()
    // Our parent: alive, and not us (our own pid would be judged recycled, see below).
    writeLock(path, { pid: process.ppid, at: 0, nonce: 'old' }, new Date(Date.now() - 120_000))
    const lock = await acquireFileLock(path, { ...store, staleMs: 60_000, noWait: true })
    await lock.release()
  })

  test('the lock records the start time of its holder, as /proc gives it', async (t) => {
    const mine = processStartTime(process.pid)
    if (mine === undefined) {
      t.skip('no /proc on this system')
      return
    }
    assert.match(mine, /^\d+$/)
    assert.equal(processStartTime(deadPid()), undefined)
    const path = lockPath()
    const lock = await acquireFileLock(path, { ...store, noWait: true })
    assert.equal((JSON.parse(readFileSync(ownerFile(path), 'utf8')) as { start?: string }).start, mine)
    await lock.release()
  })

  test('a lock whose holder is proven alive (pid and start time) is kept however old: a clock step breaks nothing', async (t) => {
    const parent = parentIdentity(t)
    if (!parent) return
    const { boot, start } = parent
    const path = lockPath()
    // Untouched for two minutes by the clock: what a forward NTP step does to a live holder's lock.
    writeLock(path, { pid: process.ppid, at: 0, nonce: 'live', boot, start }, new Date(Date.now() - 120_000))
    await assert.rejects(
      acquireFileLock(path, { ...store, staleMs: 60_000, noWait: true }),
      /locked by process/,
    )
    assert.ok(existsSync(ownerFile(path)))
  })

  test('issue 19: a live pid whose start time differs is "maybe recycled": kept while fresh, recovered once older than the bound', async (t) => {
    const parent = parentIdentity(t)
    if (!parent) return
    const { boot, start } = parent
    const path = lockPath()
    const owner = writeLock(path, {
      pid: process.ppid,
      at: Date.now(),
      nonce: 'recycled',
      boot,
      start: `${start}1`,
    })
    await assert.rejects(
      acquireFileLock(path, { ...store, staleMs: 60_000, noWait: true }),
      /locked by process/,
    )
    const old = new Date(Date.now() - 61_000)
    utimesSync(owner, old, old)
    const lock = await acquireFileLock(path, { ...store, staleMs: 60_000, noWait: true })
    await lock.release()
  })

  test('issue 19: a holder whose start time reads one tick off (qemu-user) keeps the lock while it touches it', async (t) => {
    const staleMs = 1000
    const path = lockPath()
    const holder = spawnHolder(path, staleMs)
    t.after(() => holder.child.kill('SIGKILL'))
    await holder.held
    const file = ownerFile(path)
    const record = JSON.parse(readFileSync(file, 'utf8')) as { start?: string; boot?: string }
    if (record.start === undefined || record.boot === undefined) {
      t.skip('no /proc on this system')
      return
    }
    // What a reader sees under qemu-user: the holder recorded its own start time one tick apart.
    writeFileSync(file, JSON.stringify({ ...record, start: String(BigInt(record.start) + 1n) }))
    // Twice the bound: the holder keeps touching its owner file (every staleMs / 6), so it is never broken.
    await assert.rejects(
      acquireFileLock(path, { what: 'spool', staleMs, timeoutMs: 2 * staleMs }),
      (err: unknown) => err instanceof EdgeTokenError && /gave up waiting/.test(err.message),
    )
    assert.ok(existsSync(file), 'the live holder still holds its lock')
    // A holder that stops touching (hung) is freed once its owner file is older than the bound.
    holder.child.kill('SIGSTOP')
    const stopped = Date.now()
    const lock = await acquireFileLock(path, { what: 'spool', staleMs, timeoutMs: 10 * staleMs })
    assert.ok(Date.now() - stopped >= staleMs / 2, 'not broken before its heartbeat went stale')
    await lock.release()
  })

  test('issue 11 #5: a lock taken in another pid namespace is judged by its heartbeat alone', async () => {
    const path = lockPath()
    const boot = currentBootId()
    const otherNs = currentPidNamespace() === 'pid:[1]' ? 'pid:[2]' : 'pid:[1]'
    // A pid that does not exist here, and one that is ours here: both mean nothing in our namespace.
    for (const pid of [deadPid(), process.pid]) {
      const owner = writeLock(path, {
        pid,
        at: Date.now(),
        nonce: `container-${pid}`,
        boot,
        start: '1',
        pidns: otherNs,
      })
      await assert.rejects(
        acquireFileLock(path, { ...store, staleMs: 60_000, noWait: true }),
        /locked by process/,
        'a fresh heartbeat keeps it',
      )
      const old = new Date(Date.now() - 61_000)
      utimesSync(owner, old, old)
      const lock = await acquireFileLock(path, { ...store, staleMs: 60_000, noWait: true })
      await lock.release()
      assert.equal(existsSync(path), false)
    }
  })

  test('issue 11 #5: a holder in another pid namespace (unshare --pid) is kept while alive and freed by age once killed', {
    skip: process.getuid?.() !== 0 || currentPidNamespace() === undefined ? 'needs root and /proc' : false,
  }, async (t) => {
    const staleMs = 1000
    const path = lockPath()
    const holder = spawnHolder(path, staleMs, ['unshare', '--pid', '--fork', '--kill-child'])
    t.after(() => holder.child.kill('SIGKILL'))
    try {
      await holder.held
    } catch {
      t.skip('unshare --pid is not permitted here')
      return
    }
    const record = JSON.parse(readFileSync(ownerFile(path), 'utf8')) as { pid: number; pidns?: string }
    // Pid 1 of its namespace; here pid 1 is another, live process.
    assert.equal(record.pid, 1)
    assert.notEqual(record.pidns, currentPidNamespace())
    await assert.rejects(
      acquireFileLock(path, { what: 'spool', staleMs, timeoutMs: 2 * staleMs }),
      /locked by process 1; gave up waiting/,
    )
    const exited = new Promise((r) => holder.child.once('exit', r))
    holder.child.kill('SIGKILL')
    await exited
    const lock = await acquireFileLock(path, { what: 'spool', staleMs, timeoutMs: 10 * staleMs })
    await lock.release()
  })

  test('the lock records the pid namespace of its holder', async (t) => {
    const mine = currentPidNamespace()
    if (mine === undefined) {
      t.skip('no /proc on this system')
      return
    }
    assert.match(mine, /^pid:\[\d+\]$/)
    const path = lockPath()
    const lock = await acquireFileLock(path, { ...store, noWait: true })
    assert.equal((JSON.parse(readFileSync(ownerFile(path), 'utf8')) as { pidns?: string }).pidns, mine)
    await lock.release()
  })

  test('a lock from another boot is recovered at once even if its pid is now a live process', async () => {
    const path = lockPath()
    const boot = currentBootId()
    const other = boot === undefined ? 'other' : boot.replace(/^./, (c) => (c === '0' ? '1' : '0'))
    writeLock(path, { pid: process.ppid, at: Date.now(), nonce: 'before-reboot', boot: other })
    const lock = await acquireFileLock(path, { ...store, noWait: true })
    await lock.release()
  })

  test('a lock whose owner file lost its content is recovered after a few seconds', async () => {
    const path = lockPath()
    mkdirSync(path)
    writeFileSync(join(path, 'owner-lost'), '')
    await assert.rejects(acquireFileLock(path, { ...store, noWait: true }), StoreError)
    const old = new Date(Date.now() - 10_000)
    utimesSync(join(path, 'owner-lost'), old, old)
    const lock = await acquireFileLock(path, { ...store, noWait: true })
    await lock.release()
  })

  test('a directory at the lock path that is not a lock is an error, not broken', async () => {
    const path = lockPath()
    mkdirSync(path)
    writeFileSync(join(path, 'something'), 'x')
    await assert.rejects(
      acquireFileLock(path, { ...store, noWait: true }),
      (err: unknown) => err instanceof StoreError && err.code === 'ERR_IO' && /not a lock/.test(err.message),
    )
    assert.equal(existsSync(join(path, 'something')), true)
  })

  test('the busy error can differ from the I/O error', async () => {
    const path = lockPath()
    const held = await acquireFileLock(path, store)
    await assert.rejects(
      acquireFileLock(path, {
        ...store,
        noWait: true,
        busyError: (message) => new StoreError(message, { code: 'ERR_UNAVAILABLE' }),
      }),
      (err: unknown) => err instanceof StoreError && err.code === 'ERR_UNAVAILABLE',
    )
    await held.release()
  })

  test('an unreadable (foreign) lock is recovered only by age', async () => {
    const path = lockPath()
    writeFileSync(path, '')
    await assert.rejects(
      acquireFileLock(path, { ...store, timeoutMs: 200 }),
      (err: unknown) => err instanceof StoreError,
    )
    const old = new Date(Date.now() - 120_000)
    utimesSync(path, old, old)
    const lock = await acquireFileLock(path, { ...store, timeoutMs: 2000 })
    await lock.release()
  })

  test('waiting for a live lock gives up with a store error, or stops on the signal', async () => {
    const path = lockPath()
    const held = await acquireFileLock(path, store)
    await assert.rejects(
      acquireFileLock(path, { ...store, timeoutMs: 200 }),
      (err: unknown) =>
        err instanceof StoreError && err.code === 'ERR_IO' && /locked by process/.test(err.message),
    )
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 100)
    await assert.rejects(
      acquireFileLock(path, { ...store, signal: controller.signal }),
      (err: unknown) => err instanceof EdgeTokenError && err.code === 'ERR_CANCELLED',
    )
    await held.release()
  })

  test('release does not remove a lock that is no longer ours', async () => {
    const path = lockPath()
    const lock = await acquireFileLock(path, store)
    // Another process judged ours stale (say we were stopped for minutes), broke it and took it.
    rmSync(path, { recursive: true })
    const owner = writeLock(path, { pid: process.ppid, at: Date.now(), nonce: 'someone-else' })
    await lock.release()
    assert.equal(existsSync(owner), true)
    rmSync(path, { recursive: true })
  })

  test('leaves no temporary files behind', async () => {
    const path = lockPath()
    await Promise.all(
      Array.from({ length: 5 }, async () => {
        const l = await acquireFileLock(path, store)
        await new Promise((r) => setTimeout(r, 5))
        await l.release()
      }),
    )
    assert.deepEqual(
      readdirSync(root).filter((f) => f.includes('.tmp-')),
      [],
    )
  })

  test('a fresh lock with our own pid that this process does not hold (pid recycled after a reboot) is recovered at once', async () => {
    const path = lockPath()
    writeFileSync(path, JSON.stringify({ pid: process.pid, at: Date.now(), nonce: 'earlier-boot' }))
    const started = Date.now()
    const lock = await acquireFileLock(path, { what: 'spool', timeoutMs: 5000 })
    assert.ok(Date.now() - started < 2000)
    await lock.release()
    assert.equal(existsSync(path), false)
  })

  test('a lock held for long by this process is not mistaken for a recycled pid, and is kept fresh', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] })
    const path = lockPath()
    const uploader = await acquireFileLock(path, { what: 'spool uploader' })
    const old = new Date(Date.now() - 30_000)
    utimesSync(ownerFile(path), old, old)
    t.mock.timers.tick(10_000)
    await new Promise((r) => setTimeout(r, 50))
    assert.ok(Date.now() - statSync(ownerFile(path)).mtimeMs < 5_000, 'the holder touches its lock')
    await assert.rejects(
      acquireFileLock(path, { what: 'spool uploader', staleMs: 20_000, noWait: true }),
      (err: unknown) =>
        err instanceof EdgeTokenError &&
        !(err instanceof StoreError) &&
        err.code === 'ERR_IO' &&
        err.message === `spool uploader is locked by process ${process.pid}`,
    )
    await uploader.release()
  })

  test('noWait fails at once while a live process holds the lock', async () => {
    const path = lockPath()
    writeFileSync(path, JSON.stringify({ pid: process.ppid, at: Date.now(), nonce: 'parent' }))
    const started = Date.now()
    await assert.rejects(
      acquireFileLock(path, { what: 'spool', noWait: true }),
      (err: unknown) =>
        err instanceof EdgeTokenError && err.code === 'ERR_IO' && /locked by process/.test(err.message),
    )
    assert.ok(Date.now() - started < 1000)
    rmSync(path)
  })

  test('a file-system failure is an ERR_IO error naming what is locked', async () => {
    const path = join(root, 'missing-dir', 'x.lock')
    await assert.rejects(
      acquireFileLock(path, store),
      (err: unknown) =>
        err instanceof StoreError &&
        err.code === 'ERR_IO' &&
        err.message === 'token store cannot be locked (ENOENT)',
    )
  })

  test("sweeps what killed lock takers left, but not a live taker's temporary or a fresh break-aside", async () => {
    const dir = join(root, `sweep${n++}`)
    mkdirSync(dir)
    const path = join(dir, 'spool.lock')
    const dead = deadPid()
    writeLock(`${path}.tmp-${dead}-aa`, { pid: dead, at: 0, nonce: 'aa' })
    // Alive but untouched for longer than the bound: abandoned (a waiting taker touches it).
    writeLock(`${path}.tmp-${process.ppid}-bb`, { pid: process.ppid, at: 0, nonce: 'bb' }, new Date(0))
    writeLock(`${path}.tmp-${process.ppid}-cc`, { pid: process.ppid, at: 0, nonce: 'cc' })
    mkdirSync(`${path}.tmp-gone-dd`)
    writeFileSync(`${path}.tmp-0123456789abcdef01234567`, '{}')
    writeFileSync(`${path}.tmp-break-aabbccddeeff`, '{}')
    const lock = await acquireFileLock(path, { what: 'spool' })
    await lock.release()
    assert.deepEqual(readdirSync(dir).sort(), [
      `spool.lock.tmp-${process.ppid}-cc`,
      'spool.lock.tmp-break-aabbccddeeff',
    ])
  })

  test('withFileLock runs the callers of one process one at a time', async () => {
    const path = lockPath()
    let inside = 0
    let most = 0
    const order: number[] = []
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        withFileLock(path, { what: 'spool' }, async () => {
          inside += 1
          most = Math.max(most, inside)
          await new Promise((r) => setTimeout(r, 5))
          order.push(i)
          inside -= 1
        }),
      ),
    )
    assert.equal(most, 1)
    assert.deepEqual(order, [0, 1, 2, 3, 4, 5])
    assert.equal(existsSync(path), false)
    await assert.rejects(
      withFileLock(path, { what: 'spool' }, async () => {
        throw new Error('boom')
      }),
      /boom/,
    )
    assert.equal(existsSync(path), false, 'released when the critical section throws')
  })

  test('excludes another process, and recovers at once from one killed while holding it', async () => {
    const path = lockPath()
    const moduleUrl = new URL('../../../src/lib/fs/file-lock.ts', import.meta.url).href
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `const { acquireFileLock } = await import(${JSON.stringify(moduleUrl)})
await acquireFileLock(${JSON.stringify(path)}, { what: 'spool' })
process.stdout.write('held\\n')
setInterval(() => {}, 1000)`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => d.toString().includes('held') && resolve())
      child.on('exit', () => reject(new Error('child exited')))
    })
    await assert.rejects(
      acquireFileLock(path, { what: 'spool', timeoutMs: 200 }),
      (err: unknown) =>
        err instanceof EdgeTokenError &&
        err.message === `spool is locked by process ${child.pid}; gave up waiting`,
    )
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGKILL')
    await exited
    const started = Date.now()
    const lock = await acquireFileLock(path, { what: 'spool', timeoutMs: 5000 })
    assert.ok(Date.now() - started < 2000)
    await lock.release()
  })
})
