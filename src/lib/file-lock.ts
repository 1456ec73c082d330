/**
 * A cross-process lock file with stale-lock recovery, shared by the token store (only one process
 * at a time refreshes, and so rotates, a refresh token) and the telemetry spool (`send` may run
 * while `upload` or `run` reads the same spool; one uploader at a time).
 *
 * The lock is created whole: its content (pid, time, a random nonce) is written to a private file
 * that is then `link()`ed to the lock name, which fails with EEXIST while someone holds it, so a
 * process killed at any instant never leaves an empty lock of unknown owner. A lock is stale when
 * - its owner pid is gone;
 * - its owner pid is ours but this process does not hold it (a pid recycled after a reboot: the
 *   lock was left by an earlier boot's process that happened to have our pid);
 * - it was not touched for `staleMs` (every holder touches its lock while it holds it, however
 *   long: a lock whose pid was recycled by an unrelated process is freed this way).
 * A stale lock is broken by renaming it aside and checking that what was moved is the lock judged
 * stale; a live lock moved by mistake is put back.
 *
 * Unlike MSAL's lock files, a lock left by a killed process is recovered (msal-js #7148).
 *
 * @internal
 */
import { randomBytes } from 'node:crypto'
import { readdirSync, statSync, unlinkSync } from 'node:fs'
import { link, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { EdgeTokenError } from '../errors.js'
import { isFiniteNumber, isObject, parseJson } from './validate.js'

/** Options of {@link acquireFileLock}. */
export interface AcquireFileLockOptions {
  /** What is locked, for messages (`token store`, `spool`): "token store is locked by process 42". */
  what: string
  /** A lock not touched for this long is stale. Default 60 000. */
  staleMs?: number | undefined
  /** Give up waiting after this long. Default 90 000 (longer than `staleMs`, so a stale lock is always outlived). */
  timeoutMs?: number | undefined
  /** Fail at once when a live process holds the lock, instead of waiting. */
  noWait?: boolean | undefined
  /** Stops waiting. */
  signal?: AbortSignal | undefined
  /**
   * Makes the `ERR_IO` error (held past the timeout, or a file-system failure) from its one-line
   * message, so a module can throw its own error class. Default: an {@link EdgeTokenError}.
   */
  ioError?: ((message: string, cause?: unknown) => EdgeTokenError) | undefined
}

/** A held lock. */
export interface FileLock {
  /** Releases the lock (idempotent; removes the file only if it is still ours). */
  release(): Promise<void>
}

interface LockContent {
  pid: number
  at: number
  nonce: string
}

const HEARTBEAT_MS = 10_000
const MAX_PAUSE_MS = 50
/** A break-aside file this old is a leftover of a process killed while breaking a stale lock. */
const LEFTOVER_ASIDE_MS = 60_000

/** The nonce of each lock file this process holds, to tell a recycled pid apart from ourselves. */
const heldHere = new Map<string, string>()
/** Lock files whose creation leftovers this process has swept. */
const swept = new Set<string>()

function parseLock(text: string): LockContent | undefined {
  const value = parseJson(text)
  if (
    isObject(value) &&
    isFiniteNumber(value.pid) &&
    isFiniteNumber(value.at) &&
    typeof value.nonce === 'string'
  ) {
    return { pid: value.pid, at: value.at, nonce: value.nonce }
  }
  return undefined
}

function ownerAlive(path: string, owner: LockContent): boolean {
  const { pid } = owner
  if (!Number.isInteger(pid) || pid <= 0) return false
  if (pid === process.pid) return heldHere.get(path) === owner.nonce
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

async function readLock(
  path: string,
): Promise<{ content: LockContent | undefined; mtimeMs: number } | undefined> {
  try {
    const [text, stats] = await Promise.all([readFile(path, 'utf8'), stat(path)])
    return { content: parseLock(text), mtimeMs: stats.mtimeMs }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

async function tryCreate(path: string, content: LockContent): Promise<boolean> {
  const temp = `${path}.tmp-${content.nonce}`
  await writeFile(temp, JSON.stringify(content), { mode: 0o600, flag: 'wx' })
  try {
    await link(temp, path)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // ENOENT: a lock holder swept our temporary file; just try again.
    if (code === 'EEXIST' || code === 'ENOENT') return false
    throw err
  } finally {
    await unlink(temp).catch(() => {})
  }
}

/** Breaks a lock judged stale; returns when the caller should try to create again. */
async function breakStale(path: string, judged: LockContent | undefined): Promise<void> {
  const aside = `${path}.tmp-break-${randomBytes(6).toString('hex')}`
  try {
    await rename(path, aside)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return // someone else broke it
    throw err
  }
  const moved = parseLock(await readFile(aside, 'utf8').catch(() => ''))
  if (judged !== undefined && moved?.nonce !== judged.nonce) {
    // Between judging and renaming, the stale lock was replaced by a live one: put it back.
    await link(aside, path).catch(() => {})
  }
  await unlink(aside).catch(() => {})
}

/**
 * Removes what processes killed while taking or breaking this lock left (once per process). A
 * creation temporary is removed even when fresh (its creator just tries again); a break-aside only
 * when old, since a fresh one may be a live lock about to be put back. The rename that made it
 * updated its ctime.
 */
function sweepLeftovers(path: string): void {
  if (swept.has(path)) return
  swept.add(path)
  const dir = dirname(path)
  const prefix = `${basename(path)}.tmp-`
  let entries: string[]
  try {
    entries = readdirSync(dir)
  } catch {
    return
  }
  for (const entry of entries) {
    if (!entry.startsWith(prefix)) continue
    try {
      const file = join(dir, entry)
      if (entry.startsWith(`${prefix}break-`) && Date.now() - statSync(file).ctimeMs < LEFTOVER_ASIDE_MS)
        continue
      unlinkSync(file)
    } catch {
      // Already gone: someone else cleaned up.
    }
  }
}

function defaultIoError(message: string, cause?: unknown): EdgeTokenError {
  return new EdgeTokenError('ERR_IO', message, cause === undefined ? undefined : { cause })
}

/**
 * Takes the lock, waiting (polling with growing, jittered pauses) while another live holder has it.
 *
 * @param path - the lock file.
 * @param options - what is locked, staleness bound, timeout, no-wait, signal, error class.
 * @returns the held lock; it is touched every 10 s until released.
 * @throws EdgeTokenError `ERR_CANCELLED` when the signal fires; `ERR_IO` (from `options.ioError`)
 *   when a live holder keeps it past the timeout (at once with `noWait`), naming the holder's pid,
 *   or when the lock file cannot be created or read.
 * @example
 * ```ts
 * const lock = await acquireFileLock(join(stateDir, 'tokens.lock'), { what: 'token store' })
 * try { await work() } finally { await lock.release() }
 * ```
 */
export async function acquireFileLock(path: string, options: AcquireFileLockOptions): Promise<FileLock> {
  const makeIoError = options.ioError ?? defaultIoError
  const staleMs = options.staleMs ?? 60_000
  const deadline = Date.now() + (options.timeoutMs ?? 90_000)
  const content: LockContent = { pid: process.pid, at: Date.now(), nonce: randomBytes(12).toString('hex') }
  let pauseMs = 1
  for (;;) {
    if (options.signal?.aborted)
      throw new EdgeTokenError('ERR_CANCELLED', `cancelled while waiting for the ${options.what} lock`)
    let current: Awaited<ReturnType<typeof readLock>>
    try {
      content.at = Date.now()
      if (await tryCreate(path, content)) return held(path, content)
      current = await readLock(path)
      if (current === undefined) continue
      const age = Date.now() - current.mtimeMs
      // A lock without readable content was not written by this code; only age can free it.
      const stale = age > staleMs || (current.content !== undefined && !ownerAlive(path, current.content))
      if (stale) {
        await breakStale(path, current.content)
        continue
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error'
      throw makeIoError(`${options.what} cannot be locked (${code})`, err)
    }
    if (options.noWait || Date.now() > deadline) {
      const by = `${options.what} is locked by process ${current.content?.pid ?? '?'}`
      throw makeIoError(options.noWait ? by : `${by}; gave up waiting`)
    }
    await sleep(pauseMs + Math.floor(Math.random() * pauseMs), undefined, { signal: options.signal }).catch(
      () => {},
    )
    pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MS)
  }
}

function held(path: string, content: LockContent): FileLock {
  heldHere.set(path, content.nonce)
  sweepLeftovers(path)
  // Touch the lock while holding it, so long work is not mistaken for a dead holder.
  const heartbeat = setInterval(() => {
    const now = new Date()
    utimes(path, now, now).catch(() => {})
  }, HEARTBEAT_MS)
  heartbeat.unref()
  let released = false
  return {
    async release() {
      if (released) return
      released = true
      clearInterval(heartbeat)
      if (heldHere.get(path) === content.nonce) heldHere.delete(path)
      const current = await readLock(path).catch(() => undefined)
      if (current?.content?.nonce === content.nonce) await unlink(path).catch(() => {})
    },
  }
}

// Callers in one process queue here before taking the file lock, so our own promises do not
// contend for (and poll) the lock file.
const queues = new Map<string, Promise<void>>()

/**
 * Runs `fn` after the previous callers of this process queued on `key` have finished.
 *
 * @param key - what the callers queue for (a lock file path).
 * @param fn - the work.
 * @returns what `fn` returns.
 */
async function inProcessQueue<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const previous = queues.get(key) ?? Promise.resolve()
  let done!: () => void
  const mine = new Promise<void>((resolve) => {
    done = resolve
  })
  const tail = previous.then(() => mine)
  queues.set(key, tail)
  await previous
  try {
    return await fn()
  } finally {
    done()
    if (queues.get(key) === tail) queues.delete(key)
  }
}

/**
 * Runs `fn` holding the lock at `path`: first in this process (callers queue), then across
 * processes ({@link acquireFileLock}).
 *
 * @param path - the lock file.
 * @param options - as for {@link acquireFileLock}.
 * @param fn - the critical section.
 * @returns what `fn` returns.
 * @throws as {@link acquireFileLock}, or what `fn` throws.
 */
export function withFileLock<T>(
  path: string,
  options: AcquireFileLockOptions,
  fn: () => Promise<T>,
): Promise<T> {
  return inProcessQueue(path, async () => {
    const lock = await acquireFileLock(path, options)
    try {
      return await fn()
    } finally {
      await lock.release()
    }
  })
}
