/**
 * File-system helpers of the store: the private state directory and reading the store file. The
 * durable replace and the directory fsync live in `src/lib/durable-file.ts`.
 */

import { chmodSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { StoreError } from '../errors.js'

/** Fsyncs a directory synchronously (the key file is created synchronously). */
export { fsyncDirectorySync as fsyncDirectory } from '../lib/durable-file.js'

function ioError(what: string, err: unknown): StoreError {
  const code = (err as NodeJS.ErrnoException).code ?? 'error'
  return new StoreError(`${what} (${code})`, { code: 'ERR_IO', cause: err })
}

/**
 * Creates the state directory with mode 0700 when missing, and tightens it to 0700 when it is ours
 * and looser (another user must not list or replace the store).
 *
 * @param dir - the state directory.
 * @throws StoreError (`ERR_IO`) when it cannot be created.
 */
export function ensureStateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const stats = statSync(dir)
    if (!stats.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' })
    if (
      (stats.mode & 0o077) !== 0 &&
      typeof process.getuid === 'function' &&
      stats.uid === process.getuid()
    ) {
      chmodSync(dir, 0o700)
    }
  } catch (err) {
    throw ioError(`state directory ${dir} cannot be used`, err)
  }
}

/**
 * Reads a file as UTF-8 text.
 *
 * @param path - the file.
 * @returns its text, or undefined when it does not exist.
 * @throws StoreError (`ERR_IO`) on any other failure.
 */
export function readTextIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw ioError(`token store ${path} cannot be read`, err)
  }
}
