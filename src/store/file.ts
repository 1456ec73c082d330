/**
 * File-system helpers of the store: the private state directory, the durable atomic replace, and
 * the sweep of temporary files a killed writer left behind.
 *
 * A durable replace is: write a temporary file, fsync it, rename it over the target, then fsync the
 * directory so the rename itself survives a power cut. A reader sees the old file or the new one,
 * never a mix, whenever the writer is killed.
 */

import { randomBytes } from 'node:crypto'
import {
  chmodSync,
  closeSync,
  promises as fs,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  statSync,
  unlinkSync,
} from 'node:fs'
import { dirname, join } from 'node:path'
import { StoreError } from '../errors.js'

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
 * Fsyncs a directory, so a rename or a new file in it is durable.
 *
 * @param dir - the directory.
 */
export function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * Durably replaces a file: temporary file (mode 0600, created exclusively), fsync, rename over the
 * target, fsync of the directory.
 *
 * @param path - the file to replace.
 * @param data - its new content.
 * @throws the file-system error; the temporary file is removed when the rename did not happen.
 */
export async function writeFileDurable(path: string, data: string | Uint8Array): Promise<void> {
  const temp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
  let renamed = false
  try {
    const handle = await fs.open(temp, 'wx', 0o600)
    try {
      await handle.writeFile(data)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(temp, path)
    renamed = true
    fsyncDirectory(dirname(path))
  } finally {
    if (!renamed) await fs.unlink(temp).catch(() => {})
  }
}

/**
 * Removes temporary files of interrupted writes (`<name>.tmp-…`). Call it only while holding the
 * store lock, when no other writer can be mid-write.
 *
 * @param dir - the state directory.
 * @param names - the base names whose temporaries to remove.
 * @returns how many files were removed.
 */
export function sweepTempFiles(dir: string, names: readonly string[]): number {
  let removed = 0
  let entries: string[]
  try {
    entries = readdirSync(dir)
  } catch {
    return 0
  }
  for (const entry of entries) {
    if (!names.some((name) => entry.startsWith(`${name}.tmp-`))) continue
    try {
      unlinkSync(join(dir, entry))
      removed += 1
    } catch {
      // Already gone (another sweeper) or not ours to remove: neither blocks a write.
    }
  }
  return removed
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
