/**
 * A cross-process lock with stale-lock recovery, shared by the token store (only one process at a
 * time refreshes, and so rotates, a refresh token) and the telemetry spool (`send` may run while
 * `upload` or `run` reads the same spool; one uploader at a time).
 *
 * The lock is a directory at the lock path holding exactly one file, `owner-<nonce>`, whose content
 * is the holder's pid, time and nonce. Every step is one atomic system call on a name only one
 * holder ever uses, which is what makes breaking a stale lock safe:
 * - take: build `<path>.tmp-<pid>-<nonce>/owner-<nonce>` privately, then `rename()` it to the lock
 *   path. rename(2) replaces a missing or *empty* directory and fails (ENOTEMPTY/EEXIST) on a held
 *   one, so exactly one contender wins, and a process killed at any instant never leaves a lock of
 *   unknown owner;
 * - release, or break a lock judged stale: `unlink(<path>/owner-<nonce>)`. The nonce is unique, so
 *   this removes that holder's lock or nothing: it can never remove a newer holder's lock, which
 *   is what the former rename-aside-and-put-back scheme could do (a third process took the lock
 *   while a live one was moved aside, and both then held it). The then-empty directory is free.
 *
 * A lock is stale when
 * - it was written during another boot (`/proc/sys/kernel/random/boot_id` is stored in the lock):
 *   after a reboot its pid may belong to any unrelated live process;
 * - its owner pid is gone (same boot, same pid namespace);
 * - its owner pid is ours but this process does not hold it (a pid recycled after a reboot: the
 *   lock was left by an earlier boot's process that happened to have our pid);
 * - it has no readable content (written by something else, or a disk that lost the data) and is
 *   older than a few seconds;
 * - it was not touched for `staleMs` (every holder touches its owner file while it holds it,
 *   however long), unless its holder is proven alive by pid, boot and start time. So a clock step
 *   (NTP at boot on a Pi without a real-time clock) never breaks a live holder's lock; a live
 *   holder that hangs makes the others give up waiting instead (busy).
 *
 * A pid is never judged dead on one reading that may be wrong; its heartbeat decides instead:
 * - a live pid whose start time differs from the recorded one may have been recycled, or may be
 *   the holder seen one tick off (under qemu-user a process reads its own start time one tick
 *   apart from what others read): stale only once its owner file is older than `staleMs` (issue 19);
 * - a lock taken in another pid namespace (containers sharing a volume, systemd's `PrivatePIDs=`;
 *   `/proc/self/ns/pid` is stored in the lock) names a pid that means nothing here: judged by the
 *   age of its owner file alone, as is one stamped with a namespace when ours cannot be read
 *   (issue 11 #5). A lock without a namespace (earlier versions) is judged by its pid as before.
 *
 * A lock *file* at the path (left by an earlier edgetoken version) is judged the same way and
 * removed with unlink(), which cannot remove a directory lock taken meanwhile.
 *
 * Unlike MSAL's lock files, a lock left by a killed process is recovered (msal-js #7148).
 *
 * @internal
 */
import { randomBytes } from 'node:crypto'
import {
  mkdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs'
import { lstat, readdir, readFile, rename, rm, rmdir, stat, unlink, utimes } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { EdgeTokenError } from '../../errors.js'
import { isFiniteNumber, isObject, parseJson } from '../validate.js'

/** Options of {@link acquireFileLock}. */
export interface AcquireFileLockOptions {
  /** What is locked, for messages (`token store`, `spool`): "token store is locked by process 42". */
  what: string
  /**
   * A lock not touched for this long is stale, unless its holder is proven alive (pid and start
   * time, in this pid namespace). Default 60 000. Holders touch theirs every 10 s, or every sixth
   * of this bound when that is shorter.
   */
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
  /**
   * Makes the error thrown when a live holder keeps the lock past the timeout (or at once with
   * `noWait`). Default: `ioError`.
   */
  busyError?: ((message: string) => EdgeTokenError) | undefined
}

/** A held lock. */
export interface FileLock {
  /** Releases the lock (idempotent; removes only this holder's lock, never a newer one). */
  release(): Promise<void>
}

interface LockContent {
  pid: number
  at: number
  nonce: string
  /** The kernel's boot id when the lock was taken (Linux); absent elsewhere. */
  boot?: string | undefined
  /** The holder's start time (`/proc/<pid>/stat`, clock ticks since boot; Linux): tells it apart from a process that got its pid later. */
  start?: string | undefined
  /** The holder's pid namespace (`readlink /proc/self/ns/pid`, e.g. `pid:[4026531836]`; Linux): its pid means something only there. */
  pidns?: string | undefined
}

/** What is at the lock path. */
type Observed =
  /** A held lock: its owner file (undefined for a legacy lock file), content and last touch. */
  | { kind: 'held'; owner: string | undefined; content: LockContent | undefined; mtimeMs: number }
  /** Nothing, or an empty directory: free. */
  | { kind: 'free' }
  /** A directory that is not a lock. */
  | { kind: 'foreign' }

/** How often a holder touches its owner file; at most a sixth of `staleMs`, so a short bound still sees it. */
const HEARTBEAT_MS = 10_000
const MAX_PAUSE_MS = 50
const OWNER_PREFIX = 'owner-'
/** A leftover regular file (earlier versions' temporaries) this old is removed. */
const LEFTOVER_ASIDE_MS = 60_000

/** A lock without readable content this old is stale (its writer had seconds to put content in). */
const UNREADABLE_STALE_MS = 5_000

let bootIdCache: string | null | undefined
/**
 * This boot's id (Linux `/proc/sys/kernel/random/boot_id`), or undefined where there is none. A
 * lock stamped with another boot's id was left before a reboot, whatever process now has its pid.
 *
 * @internal exported for tests
 */
export function currentBootId(): string | undefined {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null
    } catch {
      bootIdCache = null
    }
  }
  return bootIdCache ?? undefined
}

let pidNamespaceCache: string | null | undefined
/**
 * This process's pid namespace (Linux `readlink /proc/self/ns/pid`, e.g. `pid:[4026531836]`), or
 * undefined where it cannot be read. A pid recorded in another namespace names an unrelated
 * process here, or none.
 *
 * @internal exported for tests
 */
export function currentPidNamespace(): string | undefined {
  if (pidNamespaceCache === undefined) {
    try {
      pidNamespaceCache = readlinkSync('/proc/self/ns/pid') || null
    } catch {
      pidNamespaceCache = null
    }
  }
  return pidNamespaceCache ?? undefined
}

/** The nonce of each lock this process holds, to tell a recycled pid apart from ourselves. */
const heldHere = new Map<string, string>()
/** Lock files whose leftovers this process has swept. */
const swept = new Set<string>()

function parseLock(text: string): LockContent | undefined {
  const value = parseJson(text)
  if (
    isObject(value) &&
    isFiniteNumber(value.pid) &&
    isFiniteNumber(value.at) &&
    typeof value.nonce === 'string'
  ) {
    return {
      pid: value.pid,
      at: value.at,
      nonce: value.nonce,
      boot: typeof value.boot === 'string' ? value.boot : undefined,
      start: typeof value.start === 'string' ? value.start : undefined,
      pidns: typeof value.pidns === 'string' ? value.pidns : undefined,
    }
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

/**
 * A process's start time: field 22 of `/proc/<pid>/stat`, in clock ticks since boot. Read after the
 * last `)`, since the command name in parentheses may itself hold spaces and parentheses.
 *
 * @returns the digits, or undefined without /proc or when the process is gone.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // fields[0] is field 3 (state): field 22 is fields[19].
    const start = fields[19]
    return start !== undefined && /^\d+$/.test(start) ? start : undefined
  } catch {
    return undefined
  }
}

/**
 * What a lock's record says of its owner: `dead` (another boot; or this boot and pid namespace, and
 * the pid is gone, or is ours but not held by us), `proven` (this boot and namespace, and the very
 * process that took it: pid and start time match, or it is this process), or `unproven` (left to
 * the age of its owner file: a live pid that may be recycled, or one from another namespace).
 */
let ownStartCache: string | null | undefined
/** This process's start time, read once (it does not change): one /proc read less per lock. */
function ownStartTime(): string | undefined {
  if (ownStartCache === undefined) ownStartCache = processStartTime(process.pid) ?? null
  return ownStartCache ?? undefined
}

function ownerLiveness(path: string, owner: LockContent): 'dead' | 'unproven' | 'proven' {
  const boot = currentBootId()
  if (owner.boot !== undefined && boot !== undefined && owner.boot !== boot) return 'dead'
  // Another namespace's pid (or one we cannot compare) says nothing about the holder here: only its
  // heartbeat can. The boot id is the kernel's, the same in every namespace.
  if (owner.pidns !== undefined && owner.pidns !== currentPidNamespace()) return 'unproven'
  if (owner.pid === process.pid) return heldHere.get(path) === owner.nonce ? 'proven' : 'dead'
  if (!pidAlive(owner.pid)) return 'dead'
  if (owner.start === undefined || owner.boot === undefined || boot === undefined) return 'unproven'
  const start = processStartTime(owner.pid)
  // A different start time is "maybe recycled", not dead: under qemu-user the holder itself reads
  // its start time one tick off what others read, so a live holder would be broken on sight.
  return start !== undefined && start === owner.start ? 'proven' : 'unproven'
}

function isCode(err: unknown, ...codes: string[]): boolean {
  return codes.includes((err as NodeJS.ErrnoException).code ?? '')
}

async function readContent(file: string): Promise<{ content: LockContent | undefined; mtimeMs: number }> {
  const [text, stats] = await Promise.all([readFile(file, 'utf8'), stat(file)])
  return { content: parseLock(text), mtimeMs: stats.mtimeMs }
}

/** Looks at the lock path; undefined when it changed while looking (look again). */
async function observe(path: string): Promise<Observed | undefined> {
  try {
    const stats = await lstat(path)
    if (!stats.isDirectory()) return { kind: 'held', owner: undefined, ...(await readContent(path)) }
    const entries = await readdir(path)
    const owner = entries.find((e) => e.startsWith(OWNER_PREFIX))
    if (owner === undefined) return entries.length === 0 ? { kind: 'free' } : { kind: 'foreign' }
    return { kind: 'held', owner, ...(await readContent(join(path, owner))) }
  } catch (err) {
    // Gone, or replaced by the other kind (a legacy lock file broken and a lock directory renamed
    // into place between our lstat and our read, or the reverse): it changed while looking.
    if (isCode(err, 'ENOENT', 'EISDIR', 'ENOTDIR')) return undefined
    throw err
  }
}

// Taking and releasing an uncontended lock is a handful of metadata system calls that touch only
// the page cache (mkdir, a 150-byte write, rename, unlink, rmdir: microseconds each, no fsync): they
// are made synchronously. Through node:fs/promises each was a thread-pool round trip, and the seven
// of them were 1.6 ms of a forced refresh's cost on a loaded machine (issue 17). Waiting, reading a
// holder's content and the sweep stay asynchronous.

/** A private directory holding the owner file, ready to be renamed to the lock path. */
function prepare(temp: string, content: LockContent): void {
  mkdirSync(temp, { mode: 0o700 })
  writeFileSync(join(temp, `${OWNER_PREFIX}${content.nonce}`), JSON.stringify(content), {
    mode: 0o600,
    flag: 'wx',
  })
}

/**
 * One attempt to take the lock; false when it is held (or our temporary was swept: retry).
 * `fresh`: the owner file was written just now, so its mtime already is the instant of taking.
 */
function tryTake(path: string, temp: string, content: LockContent, fresh: boolean): boolean {
  const ownerFile = join(temp, `${OWNER_PREFIX}${content.nonce}`)
  try {
    // Fresh mtime at the instant the lock appears, however long we waited.
    if (!fresh) {
      const now = new Date()
      utimesSync(ownerFile, now, now)
    }
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err
    // Swept by another process as abandoned: build it again.
    rmSync(temp, { recursive: true, force: true })
    prepare(temp, content)
  }
  try {
    renameSync(temp, path)
    return true
  } catch (err) {
    // EEXIST/ENOTEMPTY: held. ENOTDIR: a legacy lock file. ENOENT: our temporary was swept.
    if (isCode(err, 'EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'ENOENT')) return false
    throw err
  }
}

/** Removes a lock judged stale; removes nothing if it is no longer that lock. */
async function breakStale(path: string, lock: Extract<Observed, { kind: 'held' }>): Promise<void> {
  if (lock.owner === undefined) {
    // A legacy lock file: unlink() cannot remove a directory lock that replaced it meanwhile.
    await unlink(path).catch((err: unknown) => {
      if (!isCode(err, 'ENOENT', 'EISDIR', 'EPERM')) throw err
    })
    return
  }
  await unlink(join(path, lock.owner)).catch((err: unknown) => {
    if (!isCode(err, 'ENOENT')) throw err
  })
  await removeIfEmpty(path)
}

async function removeIfEmpty(path: string): Promise<void> {
  // Fails harmlessly when a new holder's lock has already replaced the empty directory.
  await rmdir(path).catch(() => {})
}

/**
 * Removes what processes killed while taking this lock left (once per process): temporary
 * directories whose creator is gone or that were not touched for `staleMs` (a waiting creator
 * touches its owner file on every attempt). Each is first renamed to a name of ours, so its
 * creator, if alive after all, finds it gone and builds another; never half-removed under it.
 */
async function sweepLeftovers(path: string, staleMs: number, mine: string): Promise<void> {
  if (swept.has(path)) return
  swept.add(path)
  const dir = dirname(path)
  const prefix = `${basename(path)}.tmp-`
  let entries: string[]
  try {
    entries = await readdir(dir)
  } catch {
    return
  }
  for (const entry of entries) {
    if (!entry.startsWith(prefix) || join(dir, entry) === mine) continue
    const file = join(dir, entry)
    try {
      const stats = await lstat(file)
      const age = Date.now() - stats.mtimeMs
      if (!stats.isDirectory()) {
        // Earlier versions' temporaries; their break-asides only when old.
        if (!entry.startsWith(`${prefix}break-`) || Date.now() - stats.ctimeMs > LEFTOVER_ASIDE_MS)
          await unlink(file)
        continue
      }
      if (entry.startsWith(`${prefix}gone-`)) {
        await rm(file, { recursive: true, force: true })
        continue
      }
      const pid = Number(entry.slice(prefix.length).split('-')[0])
      const inner = await readdir(file)
      const owner = inner[0] === undefined ? undefined : await readContent(join(file, inner[0]))
      const touched = owner === undefined ? age : Date.now() - owner.mtimeMs
      // A taker in another pid namespace has a pid that means nothing here: its touches decide.
      const pidns = owner?.content?.pidns
      const judgeByPid = pidns === undefined || pidns === currentPidNamespace()
      const abandoned = (judgeByPid && pid !== process.pid && !pidAlive(pid)) || touched > staleMs
      if (!abandoned) continue
      const gone = `${path}.tmp-gone-${randomBytes(6).toString('hex')}`
      await rename(file, gone)
      await rm(gone, { recursive: true, force: true })
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
 * @returns the held lock; it is touched every 10 s (every sixth of `staleMs` when that is shorter)
 *   until released.
 * @throws EdgeTokenError `ERR_CANCELLED` when the signal fires; from `options.busyError` (default
 *   `options.ioError`) when a live holder keeps it past the timeout (at once with `noWait`), naming
 *   the holder's pid; `ERR_IO` (from `options.ioError`) when the lock cannot be created or read.
 * @example
 * ```ts
 * const lock = await acquireFileLock(join(stateDir, 'tokens.lock'), { what: 'token store' })
 * try { await work() } finally { await lock.release() }
 * ```
 */
export async function acquireFileLock(path: string, options: AcquireFileLockOptions): Promise<FileLock> {
  const makeIoError = options.ioError ?? defaultIoError
  const makeBusyError = options.busyError ?? ((message: string) => makeIoError(message))
  const staleMs = options.staleMs ?? 60_000
  const deadline = Date.now() + (options.timeoutMs ?? 90_000)
  const content: LockContent = {
    pid: process.pid,
    at: Date.now(),
    nonce: randomBytes(12).toString('hex'),
    boot: currentBootId(),
    start: ownStartTime(),
    pidns: currentPidNamespace(),
  }
  const temp = `${path}.tmp-${process.pid}-${content.nonce}`
  let prepared = false
  let taken = false
  let pauseMs = 1
  try {
    for (;;) {
      if (options.signal?.aborted)
        throw new EdgeTokenError('ERR_CANCELLED', `cancelled while waiting for the ${options.what} lock`)
      let current: Observed | undefined
      try {
        const fresh = !prepared
        if (!prepared) {
          prepare(temp, content)
          prepared = true
        }
        if (tryTake(path, temp, content, fresh)) {
          taken = true
          await sweepLeftovers(path, staleMs, temp)
          return held(path, content, Math.min(HEARTBEAT_MS, staleMs / 6))
        }
        current = await observe(path)
        if (current === undefined || current.kind === 'free') continue
        if (current.kind === 'foreign') {
          throw makeIoError(`${options.what} cannot be locked: ${path} is a directory that is not a lock`)
        }
        const age = Date.now() - current.mtimeMs
        // A lock without readable content was not written whole by this code (it renames complete
        // owner files into place): a few seconds of age free it, so a partial write never locks forever.
        // The age bound frees a lock whose pid an unrelated process recycled, or that was taken in
        // another pid namespace; it does not apply to an owner proven to be the process that took
        // the lock (pid and start time), so a clock step (NTP at boot on a Pi without a real-time
        // clock) never breaks a live holder's lock.
        const liveness = current.content === undefined ? undefined : ownerLiveness(path, current.content)
        const stale =
          liveness === undefined
            ? age > Math.min(staleMs, UNREADABLE_STALE_MS)
            : liveness === 'dead' || (age > staleMs && liveness === 'unproven')
        if (stale) {
          await breakStale(path, current)
          continue
        }
      } catch (err) {
        if (err instanceof EdgeTokenError) throw err
        const code = (err as NodeJS.ErrnoException).code ?? 'error'
        throw makeIoError(`${options.what} cannot be locked (${code})`, err)
      }
      if (options.noWait || Date.now() > deadline) {
        const by = `${options.what} is locked by process ${current.content?.pid ?? '?'}`
        throw makeBusyError(options.noWait ? by : `${by}; gave up waiting`)
      }
      await sleep(pauseMs + Math.floor(Math.random() * pauseMs), undefined, { signal: options.signal }).catch(
        () => {},
      )
      pauseMs = Math.min(pauseMs * 2, MAX_PAUSE_MS)
    }
  } finally {
    // Also when preparing failed halfway (the directory made, its owner file not: a full disk).
    if (!taken) await rm(temp, { recursive: true, force: true }).catch(() => {})
  }
}

function held(path: string, content: LockContent, heartbeatMs: number): FileLock {
  heldHere.set(path, content.nonce)
  const ownerFile = join(path, `${OWNER_PREFIX}${content.nonce}`)
  // Touch the lock while holding it, so long work is not mistaken for a dead holder.
  const heartbeat = setInterval(() => {
    const now = new Date()
    utimes(ownerFile, now, now).catch(() => {})
  }, heartbeatMs)
  heartbeat.unref()
  let released = false
  return {
    async release() {
      if (released) return
      released = true
      clearInterval(heartbeat)
      if (heldHere.get(path) === content.nonce) heldHere.delete(path)
      // Our owner file or nothing: a lock broken as stale and taken by another stays theirs.
      try {
        unlinkSync(ownerFile)
      } catch {
        return
      }
      // Fails harmlessly when a new holder's lock has already replaced the empty directory.
      try {
        rmdirSync(path)
      } catch {}
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
