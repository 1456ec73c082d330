/**
 * The atomic (and by default durable) whole-file replace shared by the token store and the
 * telemetry spool, with the directory fsync and the sweep of temporaries a killed writer left.
 *
 * A durable replace is: write a temporary file, fsync it, rename it over the target, then fsync the
 * directory so the rename itself survives a power cut. A reader sees the old file or the new one,
 * never a mix, whenever the writer is killed.
 *
 * @internal
 */
import { randomBytes } from 'node:crypto'
import { closeSync, fsyncSync, openSync, readdirSync, statSync, unlinkSync } from 'node:fs'
import { open, rename, unlink } from 'node:fs/promises'
import { dirname, join } from 'node:path'

/**
 * Fsyncs a directory, so a created, renamed or deleted entry in it survives power loss.
 *
 * @param dir - the directory.
 * @returns when the directory is on disk.
 */
export async function fsyncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * {@link fsyncDirectory} for synchronous callers (the key file is created synchronously).
 *
 * @param dir - the directory.
 */
export function fsyncDirectorySync(dir: string): void {
  const fd = openSync(dir, 'r')
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** Options of {@link writeFileAtomic}. */
export interface WriteFileAtomicOptions {
  /**
   * Fsync the file and the directory (default true). `false` keeps the atomicity but not the
   * durability, for a file whose loss on a power cut costs nothing (a cache, an informational
   * field): each fsync is costly on SD cards.
   */
  durable?: boolean
}

/**
 * Replaces a file atomically, and durably unless told otherwise: temporary file (`<path>.tmp-…`,
 * mode 0600, created exclusively), fsync, rename over the target, fsync of the directory.
 *
 * @param path - the file to replace.
 * @param data - its new content.
 * @param options - whether to fsync.
 * @returns when the file is replaced (and on disk).
 * @throws the file-system error, unmapped (callers name the file); the temporary file is removed
 *   whenever the rename did not happen.
 * @example
 * ```ts
 * await writeFileAtomic(join(dir, 'state.json'), `${JSON.stringify(state)}\n`)
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteFileAtomicOptions = {},
): Promise<void> {
  const durable = options.durable ?? true
  const temp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
  let renamed = false
  try {
    const handle = await open(temp, 'wx', 0o600)
    try {
      await handle.writeFile(data)
      if (durable) await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, path)
    renamed = true
    if (durable) await fsyncDirectory(dirname(path))
  } finally {
    if (!renamed) await unlink(temp).catch(() => {})
  }
}

/** Options of {@link sweepTempFiles}. */
export interface SweepTempFilesOptions {
  /**
   * Remove only temporaries last modified longer ago than this (default 0: all). For a sweep
   * without the writers' lock: a live writer's temporary is seconds old at most.
   */
  olderThanMs?: number
}

/**
 * Removes temporary files of interrupted writes (`<name>.tmp-…`). Without `olderThanMs`, call it
 * only while holding the lock that serialises the writers of these files, when no other writer
 * can be mid-write.
 *
 * @param dir - the directory.
 * @param names - the base names whose temporaries to remove.
 * @param options - the least age of a temporary to remove.
 * @returns how many files were removed.
 */
export function sweepTempFiles(
  dir: string,
  names: readonly string[],
  options: SweepTempFilesOptions = {},
): number {
  const olderThanMs = options.olderThanMs ?? 0
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
      const file = join(dir, entry)
      if (olderThanMs > 0 && Date.now() - statSync(file).mtimeMs <= olderThanMs) continue
      unlinkSync(file)
      removed += 1
    } catch {
      // Already gone (another sweeper) or not ours to remove: neither blocks a write.
    }
  }
  return removed
}
