/**
 * The atomic (and by default durable) whole-file replace shared by the token store and the
 * telemetry spool, with the directory fsync. The sweep of temporaries a killed writer left is in
 * ./temp-files.ts (the cached `token` path sweeps but never writes, and skips this module).
 *
 * A durable replace is: write a temporary file, fsync it, rename it over the target, then fsync the
 * directory so the rename itself survives a power cut. A reader sees the old file or the new one,
 * never a mix, whenever the writer is killed.
 *
 * @internal
 */
import { closeSync, fsyncSync, openSync } from 'node:fs'
import { open, rename, unlink } from 'node:fs/promises'
import { dirname } from 'node:path'
import { tempFileName } from './temp-files.js'

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
  const temp = tempFileName(path)
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
