/**
 * File-system helpers of the store: the private state directory, reading the store file, and the
 * mapping of file-system failures to store errors. The durable replace and the directory fsync
 * live in `src/lib/fs/durable-file.ts`.
 */

import { chmodSync, lstatSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { ConfigError, StoreError } from '../errors.js'

/** Fsyncs a directory synchronously (the key file is created synchronously). */
export { fsyncDirectorySync as fsyncDirectory } from '../lib/fs/durable-file.js'

/** Errors of a write that a disk in trouble causes; the store itself is fine. */
const WRITE_FAILURES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG'])

/**
 * Maps a file-system failure of the store to its error: a failed write for want of space
 * (ENOSPC, EDQUOT, EFBIG) is `ERR_IO` (exit 1; the store is intact and a retry may work); anything
 * else (EACCES, EPERM, EIO, EROFS, ENOTDIR...) means the store cannot be used where it is:
 * `ERR_STORE_UNREADABLE` (exit 6).
 *
 * @param what - one line naming the file and the operation, e.g. "token store /x cannot be read".
 * @param err - the file-system error.
 * @returns the error, whose message ends with the errno code.
 */
export function storeFsError(what: string, err: unknown): StoreError {
  const code = (err as NodeJS.ErrnoException).code ?? 'error'
  return new StoreError(`${what} (${code})`, {
    code: WRITE_FAILURES.has(code) ? 'ERR_IO' : 'ERR_STORE_UNREADABLE',
    cause: err,
  })
}

function refuse(dir: string, why: string): ConfigError {
  return new ConfigError(
    `state directory ${dir} ${why}; use a private subdirectory (e.g. ${dir.replace(/\/+$/, '')}/edgetoken)`,
    { key: 'stateDir' },
  )
}

/**
 * Creates the state directory with mode 0700 when missing. An existing directory is never
 * changed: it is refused when it is a symbolic link not owned by root (a root-owned one, as
 * systemd's `StateDirectory=` with `DynamicUser=yes` makes, is followed and its target checked),
 * not owned by this user, or writable by group or others (another user could replace the store), since tightening a shared directory (`/tmp`,
 * a home directory) would break it for everyone else.
 *
 * @param dir - the state directory.
 * @throws ConfigError (exit 2) for a symbolic link, a foreign or shared directory, or a non-directory;
 *   StoreError (`ERR_STORE_UNREADABLE`, exit 6; `ERR_IO` for ENOSPC) when it cannot be created or examined.
 */
export function ensureStateDir(dir: string): void {
  let created: string | undefined
  try {
    created = mkdirSync(dir, { recursive: true, mode: 0o700 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR' || (err as NodeJS.ErrnoException).code === 'EEXIST')
      throw refuse(dir, 'is not a directory')
    throw storeFsError(`state directory ${dir} cannot be created`, err)
  }
  let stats: ReturnType<typeof lstatSync>
  try {
    stats = lstatSync(dir)
    if (stats.isSymbolicLink()) {
      // Only root can have made a root-owned link: systemd's StateDirectory= with DynamicUser=yes
      // is /var/lib/<name> -> private/<name>. A link anyone else made may lead anywhere.
      if (stats.uid !== 0) throw refuse(dir, 'is a symbolic link')
      stats = statSync(dir)
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw storeFsError(`state directory ${dir} cannot be used`, err)
  }
  if (created !== undefined) {
    // Ours, just made: make it exactly 0700 whatever the umask did.
    try {
      chmodSync(dir, 0o700)
    } catch (err) {
      throw storeFsError(`state directory ${dir} cannot be used`, err)
    }
    return
  }
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined
  if (uid !== undefined && stats.uid !== uid) throw refuse(dir, `belongs to another user (uid ${stats.uid})`)
  if ((stats.mode & 0o022) !== 0)
    throw refuse(dir, `is writable by others (mode ${(stats.mode & 0o7777).toString(8)})`)
}

/**
 * Reads a file as UTF-8 text.
 *
 * @param path - the file.
 * @returns its text, or undefined when it does not exist.
 * @throws StoreError (`ERR_STORE_UNREADABLE`) on any other failure, naming the file and errno.
 */
export function readTextIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new StoreError(`token store ${path} cannot be read (${code})`, { cause: err })
  }
}
