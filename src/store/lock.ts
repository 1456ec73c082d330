/**
 * A cross-process lock file with stale-lock recovery, so only one process at a time refreshes (and
 * so rotates) a refresh token.
 *
 * The lock is created whole: its content (pid, time, a random nonce) is written to a private file
 * that is then `link()`ed to the lock name, which fails with EEXIST while someone holds it — so a
 * process killed at any instant never leaves an empty lock of unknown owner. A lock is stale when
 * its owner pid is gone, or when it was not refreshed for `staleMs` (the holder touches it while it
 * works). A stale lock is broken by renaming it aside and checking that what was moved is the lock
 * judged stale; a live lock moved by mistake is put back.
 *
 * Unlike MSAL's lock files, a lock left by a killed process is recovered (msal-js #7148).
 */
import { randomBytes } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { EdgeTokenError, StoreError } from '../errors.js'
import { isFiniteNumber, isObject, parseJson } from '../lib/validate.js'

/** Options of {@link acquireFileLock}. */
export interface AcquireFileLockOptions {
  /** A lock not touched for this long is stale. Default 60 000. */
  staleMs?: number
  /** Give up waiting after this long. Default 90 000 (longer than `staleMs`, so a stale lock is always outlived). */
  timeoutMs?: number
  /** Stops waiting. */
  signal?: AbortSignal | undefined
}

/** A held lock. */
export interface FileLock {
  /** Releases the lock (only if it is still ours). */
  release(): Promise<void>
}

interface LockContent {
  pid: number
  at: number
  nonce: string
}

const HEARTBEAT_MS = 10_000

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

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false
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
    const [text, stats] = await Promise.all([fs.readFile(path, 'utf8'), fs.stat(path)])
    return { content: parseLock(text), mtimeMs: stats.mtimeMs }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

async function tryCreate(path: string, content: LockContent): Promise<boolean> {
  const temp = `${path}.tmp-${content.nonce}`
  await fs.writeFile(temp, JSON.stringify(content), { mode: 0o600, flag: 'wx' })
  try {
    await fs.link(temp, path)
    return true
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // ENOENT: a lock holder swept our temporary file; just try again.
    if (code === 'EEXIST' || code === 'ENOENT') return false
    throw err
  } finally {
    await fs.unlink(temp).catch(() => {})
  }
}

/** Breaks a lock judged stale; returns when the caller should try to create again. */
async function breakStale(path: string, judged: LockContent | undefined): Promise<void> {
  const aside = `${path}.tmp-break-${randomBytes(6).toString('hex')}`
  try {
    await fs.rename(path, aside)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return // someone else broke it
    throw err
  }
  const moved = parseLock(await fs.readFile(aside, 'utf8').catch(() => ''))
  if (judged !== undefined && moved?.nonce !== judged.nonce) {
    // Between judging and renaming, the stale lock was replaced by a live one: put it back.
    await fs.link(aside, path).catch(() => {})
  }
  await fs.unlink(aside).catch(() => {})
}

/**
 * Takes the lock, waiting (polling with growing pauses) while another live process holds it.
 *
 * @param path - the lock file.
 * @param options - staleness bound, timeout, signal.
 * @returns the held lock.
 * @throws EdgeTokenError `ERR_CANCELLED` when the signal fires; StoreError `ERR_IO` on timeout.
 */
export async function acquireFileLock(path: string, options: AcquireFileLockOptions = {}): Promise<FileLock> {
  const staleMs = options.staleMs ?? 60_000
  const deadline = Date.now() + (options.timeoutMs ?? 90_000)
  const content: LockContent = { pid: process.pid, at: Date.now(), nonce: randomBytes(12).toString('hex') }
  let pauseMs = 10
  for (;;) {
    if (options.signal?.aborted)
      throw new EdgeTokenError('ERR_CANCELLED', 'cancelled while waiting for the store lock')
    content.at = Date.now()
    if (await tryCreate(path, content)) return held(path, content)
    const current = await readLock(path)
    if (current === undefined) continue
    const age = Date.now() - current.mtimeMs
    const stale = age > staleMs || (current.content !== undefined && !pidAlive(current.content.pid))
    // A lock without readable content was not written by this code; only age can free it.
    if (stale) {
      await breakStale(path, current.content)
      continue
    }
    if (Date.now() > deadline) {
      throw new StoreError(
        `token store is locked by process ${current.content?.pid ?? '?'}; gave up waiting`,
        {
          code: 'ERR_IO',
        },
      )
    }
    await sleep(pauseMs + Math.floor(Math.random() * pauseMs), undefined, { signal: options.signal }).catch(
      () => {},
    )
    pauseMs = Math.min(pauseMs * 2, 200)
  }
}

function held(path: string, content: LockContent): FileLock {
  // Touch the lock while working, so a long refresh is not mistaken for a dead holder.
  const heartbeat = setInterval(() => {
    const now = new Date()
    fs.utimes(path, now, now).catch(() => {})
  }, HEARTBEAT_MS)
  heartbeat.unref()
  let released = false
  return {
    async release() {
      if (released) return
      released = true
      clearInterval(heartbeat)
      const current = await readLock(path).catch(() => undefined)
      if (current?.content?.nonce === content.nonce) await fs.unlink(path).catch(() => {})
    },
  }
}
