/**
 * File plumbing of the spool directory: the directory's checks, I/O error mapping and reading small
 * JSON state files. The durable replace lives in `src/lib/fs/durable-file.ts`, the lock files in
 * `src/lib/fs/file-lock.ts`, opening without following links in `src/lib/fs/no-follow.ts`.
 *
 * @internal
 */
import { chmod, lstat, mkdir, stat } from 'node:fs/promises'
import { ConfigError, EdgeTokenError, StoreError } from '../../errors.js'
import type { AcquireFileLockOptions } from '../../lib/fs/file-lock.js'
import { readTextNoFollow } from '../../lib/fs/no-follow.js'

/**
 * Turns a Node.js file-system error into an `ERR_IO` error with a one-line message naming the
 * operation and the errno code (disk full is spelled out). A symbolic link or a non-regular file
 * where a spool file should be (ELOOP, EFTYPE: see `openNoFollow`) is `ERR_STORE_UNREADABLE`
 * (exit 6), as for the token store: someone put it there, and the spool will not write through it.
 *
 * @param err - what was thrown.
 * @param what - the operation, e.g. `appending to the spool`.
 * @returns the error to throw.
 */
export function ioError(err: unknown, what: string): EdgeTokenError {
  if (err instanceof EdgeTokenError) return err
  const code = (err as NodeJS.ErrnoException | null)?.code
  if (code === 'ELOOP' || code === 'EFTYPE') {
    const path = (err as NodeJS.ErrnoException).path ?? 'a spool file'
    const kind = code === 'ELOOP' ? 'a symbolic link' : 'not a regular file'
    // Ends with the errno in parentheses, like the store's file-system errors (no recovery hint).
    const message = `spool: ${what} failed: ${path} is ${kind}, which the spool never uses: remove it (${code})`
    return new StoreError(message, { cause: err })
  }
  const why = code === 'ENOSPC' ? 'disk full (ENOSPC)' : (code ?? (err as Error | null)?.message ?? 'error')
  return new EdgeTokenError('ERR_IO', `spool: ${what} failed: ${why}`, { cause: err })
}

/**
 * Reads a small JSON file.
 *
 * @param path - the file.
 * @returns the parsed value, or undefined when the file is missing or not JSON.
 * @throws the file-system error (ELOOP for a symbolic link) when it is there but cannot be read.
 */
export async function readJsonFile(path: string): Promise<unknown> {
  const text = await readTextNoFollow(path)
  if (text === undefined) return undefined
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

/**
 * How the spool takes its lock files: give up after 10 s (spool operations are short, except the
 * uploader's, which is taken with `noWait`), and name the spool in the `ERR_IO` errors.
 *
 * @param what - what is locked: `spool`, `spool uploader`.
 * @returns the options for `acquireFileLock` / `withFileLock`.
 */
export function spoolLockOptions(what: string): AcquireFileLockOptions {
  return {
    what,
    timeoutMs: 10_000,
    ioError: (message, cause) =>
      cause === undefined ? new EdgeTokenError('ERR_IO', message) : ioError(cause, `locking the ${what}`),
  }
}

function refuseSpoolDir(dir: string, why: string): ConfigError {
  return new ConfigError(`spool directory ${dir} ${why}; remove it (edgetoken creates it again, mode 0700)`, {
    key: 'stateDir',
  })
}

/**
 * Creates the spool directory (mode 0700) when missing, and checks an existing one like the token
 * store checks the state directory (`ensureStateDir`): refused when it is a symbolic link not owned
 * by root, not a directory, owned by another user, or writable by group or others. Call it after
 * the state directory's own check.
 *
 * @param dir - the spool directory.
 * @param create - create it when missing (false for read-only callers such as `status`).
 * @returns false when it does not exist and `create` is false; true otherwise.
 * @throws ConfigError (exit 2) for a link, a foreign, shared or non-directory; EdgeTokenError
 *   `ERR_IO` when it cannot be created or examined.
 */
export async function ensureSpoolDir(dir: string, create = true): Promise<boolean> {
  try {
    let stats = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
      return undefined
    })
    if (stats === undefined) {
      if (!create) return false
      // Not recursive: the state directory above was created and checked already.
      try {
        await mkdir(dir, { mode: 0o700 })
      } catch (err) {
        // Another process made it meanwhile: check theirs.
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return await ensureSpoolDir(dir, create)
        throw err
      }
      // Ours, just made: exactly 0700 whatever the umask did.
      await chmod(dir, 0o700)
      return true
    }
    if (stats.isSymbolicLink()) {
      // Only root can have made a root-owned link (the same rule as the state directory's).
      if (stats.uid !== 0) throw refuseSpoolDir(dir, 'is a symbolic link')
      stats = await stat(dir)
    }
    if (!stats.isDirectory()) throw refuseSpoolDir(dir, 'is not a directory')
    const uid = typeof process.getuid === 'function' ? process.getuid() : undefined
    if (uid !== undefined && stats.uid !== uid) {
      throw refuseSpoolDir(dir, `belongs to another user (uid ${stats.uid})`)
    }
    if ((stats.mode & 0o022) !== 0) {
      throw refuseSpoolDir(dir, `is writable by others (mode ${(stats.mode & 0o7777).toString(8)})`)
    }
    return true
  } catch (err) {
    throw ioError(err, `using ${dir}`)
  }
}
