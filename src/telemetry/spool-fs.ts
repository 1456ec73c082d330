/**
 * File plumbing of the spool directory: durable atomic writes of small state files, directory
 * fsync, I/O error mapping, and the short-lived lock that serialises spool operations between
 * processes (`send` may run while `upload` or `run` reads the same spool).
 *
 * @internal
 */
import { randomBytes } from 'node:crypto'
import { open, readFile, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { EdgeTokenError } from '../errors.js'

/**
 * Turns a Node.js file-system error into an `ERR_IO` error with a one-line message naming the
 * operation and the errno code (disk full is spelled out).
 *
 * @param err - what was thrown.
 * @param what - the operation, e.g. `appending to the spool`.
 * @returns the error to throw.
 */
export function ioError(err: unknown, what: string): EdgeTokenError {
  if (err instanceof EdgeTokenError) return err
  const code = (err as NodeJS.ErrnoException | null)?.code
  const why = code === 'ENOSPC' ? 'disk full (ENOSPC)' : (code ?? (err as Error | null)?.message ?? 'error')
  return new EdgeTokenError('ERR_IO', `spool: ${what} failed: ${why}`, { cause: err })
}

/**
 * Makes a directory entry durable (a created, renamed or deleted file survives power loss).
 *
 * @param dir - the directory.
 */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Replaces a small file atomically and durably: write a temporary file, fsync it, rename it over
 * the target, fsync the directory. A crash leaves either the old or the new content.
 *
 * @param path - the target file.
 * @param data - the new content.
 * @param durable - fsync file and directory (default true); false still gives atomicity.
 */
export async function writeFileAtomic(path: string, data: string, durable = true): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const handle = await open(tmp, 'w', 0o600)
  try {
    await handle.writeFile(data)
    if (durable) await handle.sync()
  } finally {
    await handle.close()
  }
  try {
    await rename(tmp, path)
  } catch (err) {
    await unlink(tmp).catch(() => {})
    throw err
  }
  if (durable) await fsyncDir(dirname(path))
}

/**
 * Reads a small JSON file.
 *
 * @param path - the file.
 * @returns the parsed value, or undefined when the file is missing or not JSON.
 */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

function isAlive(pid: number): boolean {
  if (pid === process.pid) return true
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Options of {@link acquireLock}. */
export interface LockOptions {
  /** Give up after this long. Default 10000. */
  timeoutMs?: number
  /** Fail at once when held by a live process instead of waiting. */
  noWait?: boolean
  /** What is locked, for the error message. */
  what: string
}

/** A held lock. */
export interface HeldLock {
  /** Releases the lock (idempotent). */
  release(): Promise<void>
}

/**
 * Takes an exclusive lock file (`O_EXCL` create, owner pid inside). A lock left by a process that
 * died (kill -9, power loss) is broken: its pid is not alive, or it is our own pid (reused after a
 * reboot) without our holding it.
 *
 * @param path - the lock file.
 * @param options - timeout and naming.
 * @returns the held lock.
 * @throws EdgeTokenError `ERR_IO` when another live process keeps it past the timeout.
 */
export async function acquireLock(path: string, options: LockOptions): Promise<HeldLock> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000)
  let waitMs = 1
  for (;;) {
    try {
      const handle = await open(path, 'wx', 0o600)
      try {
        await handle.writeFile(`${process.pid}\n`)
      } finally {
        await handle.close()
      }
      let released = false
      return {
        async release() {
          if (released) return
          released = true
          await unlink(path).catch(() => {})
        },
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(err, `locking ${options.what}`)
    }
    const owner = await readFile(path, 'utf8').catch(() => undefined)
    const pid = owner === undefined ? Number.NaN : Number.parseInt(owner, 10)
    // An empty file is a lock being written right now; only a parsed, dead (or recycled) pid is stale.
    const stale = owner?.endsWith('\n') === true && Number.isSafeInteger(pid) && pid > 0 && !isAlive(pid)
    const recycled = pid === process.pid && !heldHere.has(path)
    if (stale || recycled) {
      await unlink(path).catch(() => {})
      continue
    }
    if (options.noWait || Date.now() >= deadline) {
      throw new EdgeTokenError(
        'ERR_IO',
        `spool: ${options.what} is locked by another process${Number.isSafeInteger(pid) ? ` (pid ${pid})` : ''}`,
      )
    }
    await new Promise((resolve) => setTimeout(resolve, waitMs))
    waitMs = Math.min(waitMs * 2, 25)
  }
}

/** Lock paths this process holds through {@link withLock}, so a recycled pid is told apart. */
const heldHere = new Set<string>()

/**
 * Runs `fn` while holding the lock at `path` (in-process callers queue, so the lock file is taken
 * once per call, not contended by our own promises).
 *
 * @param path - the lock file.
 * @param what - what is locked, for messages.
 * @param fn - the critical section.
 * @returns what `fn` returns.
 */
export async function withLock<T>(path: string, what: string, fn: () => Promise<T>): Promise<T> {
  const previous = queues.get(path) ?? Promise.resolve()
  let done: () => void = () => {}
  const mine = new Promise<void>((resolve) => {
    done = resolve
  })
  const tail = previous.then(() => mine)
  queues.set(path, tail)
  await previous
  try {
    const lock = await acquireLock(path, { what })
    heldHere.add(path)
    try {
      return await fn()
    } finally {
      heldHere.delete(path)
      await lock.release()
    }
  } finally {
    done()
    if (queues.get(path) === tail) queues.delete(path)
  }
}

const queues = new Map<string, Promise<void>>()

/**
 * Marks a long-held lock (the uploader's) as ours, so the recycled-pid check does not break it.
 *
 * @param path - the lock file.
 * @param held - whether we hold it now.
 */
export function markHeld(path: string, held: boolean): void {
  if (held) heldHere.add(path)
  else heldHere.delete(path)
}
